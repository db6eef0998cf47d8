"""Streamed folds on a real Dask cluster: each worker reads the store itself, so a fold's
task carries a few hundred bytes, not the feature table; results equal one process's."""

import numpy as np
import pytest

from conftest import write_small_store

distributed = pytest.importorskip("distributed")


def test_folds_on_a_local_cluster_read_the_store_and_equal_one_process(tmp_path, monkeypatch):
    from distributed.protocol import serialize_bytes

    from mmfuse.evaluate.streamed import evaluate_store
    from mmfuse.features.stream import StoreStream

    store = write_small_store(tmp_path / "store", n=480, rows_per_shard=160)
    # few passes: this checks where the work runs, not how well it learns
    kwargs = dict(strategies=["early", "late"], weights="equal", cv=2, random_state=0,
                  epochs=3)
    local = evaluate_store(store, "label", "group", **kwargs)

    sent = []  # Dask's own serialisation of every task the evaluation submits
    submit = distributed.Client.submit

    def recording_submit(self, func, *args, **kw):
        sent.append(len(serialize_bytes((func, args))))
        return submit(self, func, *args, **kw)

    monkeypatch.setattr(distributed.Client, "submit", recording_submit)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=180)

            def moved(dask_worker):
                # data a worker fetched from other workers (a scattered table would be
                # fetched so); its outgoing counter also counts the results the client
                # gathers, the test rows' predictions, which are not data sent to a fold
                return sum(t["total"] for t in dask_worker.transfer_incoming_log)

            before = sum(client.run(moved).values())
            remote = evaluate_store(store, "label", "group", scheduler=cluster.scheduler_address,
                                    **kwargs)
            after = sum(client.run(moved).values())
    assert len(sent) == 2 and after == before  # one task per fold; no data moved between workers
    per_fold = max(sent) + (after - before) / 2
    table = StoreStream(store).nbytes  # 61,440 bytes of float32 features
    assert per_fold <= 0.05 * table, (sent, after - before, table)
    for a, b in zip(local.rows, remote.rows):
        assert (a.name, a.accuracy, a.fold_accuracy) == (b.name, b.accuracy, b.fold_accuracy)
    for name, pred in local.predictions.items():
        np.testing.assert_array_equal(pred, remote.predictions[name])


def test_a_worker_killed_mid_fit_changes_no_result(tmp_path):
    """A real 2-worker cluster; one worker process is killed (SIGKILL) while it executes a
    fold: the scheduler reruns the fold elsewhere, which reads the store again, and every
    number equals the one-process run's."""
    import os
    import signal
    import threading
    import time

    from mmfuse.evaluate.streamed import evaluate_store

    store = write_small_store(tmp_path / "store", n=480, rows_per_shard=160)
    kwargs = dict(strategies=["early", "late", "stacking"], weights="cv", cv=2,
                  random_state=0, epochs=6)
    local = evaluate_store(store, "label", "group", **kwargs)

    def executing(dask_worker):
        return [str(k) for k, ts in dask_worker.state.tasks.items()
                if ts.state == "executing" and "streamed-fold" in str(k)]

    killed = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            pids = client.run(os.getpid)
            done = threading.Event()

            def killer():
                # poll the workers until one executes a fold, then kill its process
                while not done.is_set() and not killed:
                    try:
                        busy = client.run(executing, workers=list(pids))
                    except Exception:  # a worker going away mid-poll
                        continue
                    for address, keys in busy.items():
                        if keys:
                            os.kill(pids[address], signal.SIGKILL)
                            killed.append((address, keys))
                            break
                    time.sleep(0.02)

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            try:
                remote = evaluate_store(store, "label", "group",
                                        scheduler=cluster.scheduler_address, **kwargs)
            finally:
                done.set()
                thread.join(timeout=60)
    assert len(killed) == 1, killed  # a worker did die while executing a fold
    for a, b in zip(local.rows, remote.rows):
        assert (a.name, a.accuracy, a.fold_accuracy, a.fold_weights) == (
            b.name, b.accuracy, b.fold_accuracy, b.fold_weights)
    for name, pred in local.predictions.items():
        np.testing.assert_array_equal(pred, remote.predictions[name])
