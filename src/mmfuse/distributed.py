"""Dask plumbing: connect to a cluster, run many small tasks with a bounded client, and move
joblib work (cross-validation folds) onto the cluster.

Needs the optional extra ``mmfuse[dask]`` (``dask[distributed]``); imported only where a
``scheduler`` is asked for.

``scheduler`` is ``"local"`` (a :class:`distributed.LocalCluster` of single-threaded
worker processes, one per core, on 127.0.0.1) or the address of a running scheduler
(``tcp://host:8786``; ``host:8786`` means the same). ``$MMFUSE_SCHEDULER`` is used when no
scheduler is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ._errors import InputError, MmfuseError, require

__all__ = ["dask_client", "fold_backend", "resolve_scheduler", "run_bounded"]


def resolve_scheduler(scheduler: str | None) -> str | None:
    """``scheduler``, else ``$MMFUSE_SCHEDULER``, else None (run in this process)."""
    value = scheduler or os.environ.get("MMFUSE_SCHEDULER") or None
    if value is None or value == "local":
        return value
    if "://" not in value:
        value = f"tcp://{value}"
    return value


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(scheduler: str, n_workers: int | None = None,
                timeout: str | float = "30s") -> Iterator[Any]:
    """A :class:`distributed.Client` for ``scheduler`` ("local" or an address), closed (and
    the local cluster shut down) on exit.

    Parameters
    ----------
    scheduler : str
        ``"local"`` or a scheduler address.
    n_workers : int, optional
        Worker processes of the local cluster (default: one per core); ignored for an
        address.
    timeout : str or float, default="30s"
        How long to keep trying to reach a scheduler at an address.
    """
    require("dask", "dask")
    distributed = require("distributed", "dask")
    address = resolve_scheduler(scheduler)
    cluster = None
    if address == "local":
        n = _cores() if n_workers is None else n_workers
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f"n_workers must be a positive int; got {n_workers!r}")
        import logging

        # silence_logs: no "worker still alive, killing" warnings on a busy machine's shutdown
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {address!r}: {exc}. Start one with "
                f"`dask scheduler` (and `dask worker {address}` on each host), or use "
                f"--scheduler local") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_bounded(client: Any, fn: Callable[..., Mapping[str, Any]], job: Any,
                tasks: Iterator[tuple[int, Any]], record: Callable[[Mapping[str, Any]], None],
                *, key_prefix: str, window: int | None = None) -> None:
    """Submit ``fn(job, index, data)`` for every ``(index, data)`` of ``tasks``, keeping at
    most ``window`` tasks in flight (default: twice the cluster's threads, at least 8), and
    call ``record(result)`` on the client as each finishes.

    The client holds only the tasks in flight and their small results, so its memory does
    not grow with the number of tasks. Task keys are ``f"{key_prefix}-{index}"``: a task
    resubmitted under the same key is never run twice at once. Workers that die are the
    scheduler's to replace; their tasks are rerun elsewhere.
    """
    from distributed import as_completed

    try:
        from distributed import KilledWorker
    except ImportError:  # pragma: no cover
        KilledWorker = RuntimeError  # noqa: N806

    def width() -> int:
        if window is not None:
            return window
        try:
            threads = sum(client.nthreads().values())
        except Exception:  # noqa: BLE001 - scheduler busy: keep a safe default
            threads = 0
        return max(8, 2 * threads)

    pending = as_completed()
    in_flight = 0
    exhausted = False

    def top_up() -> None:
        nonlocal in_flight, exhausted
        while not exhausted and in_flight < width():
            item = next(tasks, None)
            if item is None:
                exhausted = True
                return
            index, data = item
            pending.add(client.submit(fn, job, index, data, key=f"{key_prefix}-{index}",
                                      pure=False))
            in_flight += 1

    try:
        top_up()
        while in_flight:
            future = next(pending)
            in_flight -= 1
            try:
                result = future.result()
            except KilledWorker:
                raise MmfuseError(
                    f"task {future.key!r} was running each time a worker died, too often to "
                    f"try again (out of memory?); finished work is kept: rerun the same "
                    f"command to go on") from None
            finally:
                future.release()
            record(result)
            top_up()
    except BaseException:
        # Interrupted or failed: stop the rest. Finished shards stay on disk for the rerun.
        for future in list(pending.futures):
            future.cancel()
        raise


@contextmanager
def fold_backend(scheduler: str | None, n_workers: int | None = None) -> Iterator[Any]:
    """Run joblib work (the folds of :func:`mmfuse.evaluate.evaluate`) on Dask.

    Inside the block, ``joblib.Parallel`` uses joblib's ``"dask"`` backend on a client for
    ``scheduler``; with ``scheduler=None`` (and no ``$MMFUSE_SCHEDULER``) nothing changes.
    Fold results are the same as in a local run with the same seed.
    """
    address = resolve_scheduler(scheduler)
    if address is None:
        yield None
        return
    from joblib import parallel_config

    with dask_client(address, n_workers=n_workers) as client:
        with parallel_config(backend="dask"):
            yield client
