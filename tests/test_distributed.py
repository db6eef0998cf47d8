"""Feature extraction and folds on real Dask clusters started here, on 127.0.0.1 only."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from conftest import STORE_COLUMNS, STORE_ENCODERS, make_views
from mmfuse import InputError
from mmfuse.features import HEADER, SHARD_NAME, extract_store, load

distributed = pytest.importorskip("distributed")

TIMEOUT = 180  # generous: the machine may be busy


@pytest.fixture(scope="session")
def cluster():
    """One LocalCluster for the whole session (starting several at once is flaky)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c:
        with distributed.Client(c) as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
        yield c


def wait_for(condition, what, timeout=TIMEOUT, every=0.02):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def n_shards(path):
    return len(list(path.glob("part-*.parquet")))


def assert_same_features(path, reference):
    store = load(path)
    ref = load(reference.out, modalities=list(store.views))
    cols = ["mmfuse_row", "id", "label"]
    assert store.frame[cols].equals(ref.frame[cols])  # every row exactly once, in order
    for m in store.views:
        np.testing.assert_array_equal(store.views[m], ref.views[m])
        np.testing.assert_array_equal(store.present[m], ref.present[m])
    assert store.failed == [f for f in ref.failed if f["modality"] in store.views]


# The interruption tests extract images only (hog): what they test is the engine.
IMAGE_ONLY = dict(encoders={"image": "hog"}, rows_per_shard=1, on_error="skip")
N_SHARDS = 24  # one per row


def test_local_cluster_store_is_bit_identical(cluster, reference_store, store_manifest, tmp_path):
    out = tmp_path / "store"
    result = extract_store(store_manifest, STORE_COLUMNS, out, encoders=STORE_ENCODERS,
                           rows_per_shard=8, on_error="skip", scheduler=cluster.scheduler_address)
    names = sorted(p.name for p in reference_store.out.glob("part-*.parquet"))
    assert sorted(p.name for p in out.glob("part-*.parquet")) == names
    for name in names:
        assert filecmp.cmp(out / name, reference_store.out / name, shallow=False), name
    assert result.header == reference_store.header
    assert result.failed == reference_store.failed
    # encoders are built once per worker process, never shipped
    assert sum(w["shards"] for w in result.workers.values()) == 3
    assert all(w["builds"] <= len(STORE_ENCODERS) for w in result.workers.values())
    with distributed.Client(cluster) as client:
        cached = client.run(lambda: sorted(__import__("mmfuse.features.write").features.write._ENCODERS))
    for keys in cached.values():
        assert len(keys) == len(set(keys)) <= len(STORE_ENCODERS) + 1  # + the audio check below


def test_pretrained_onnx_encoder_on_the_cluster(cluster, store_manifest, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openwakeword")
    small = tmp_path / "small.csv"
    pd.read_csv(store_manifest).head(12).to_csv(small, index=False)
    args = dict(encoders={"audio": "speech-embedding"}, rows_per_shard=4, on_error="skip")
    local = extract_store(small, {"audio": "audio"}, tmp_path / "one", **args)
    remote = extract_store(small, {"audio": "audio"}, tmp_path / "two",
                           scheduler=cluster.scheduler_address, **args)
    for i in range(local.n_shards):
        name = SHARD_NAME.format(i)
        assert filecmp.cmp(tmp_path / "one" / name, tmp_path / "two" / name, shallow=False)
    assert all(w["builds"] <= 1 for w in remote.workers.values())

    def threads():
        from mmfuse.features.write import _ENCODERS

        return [(e.threads, e._session.get_session_options().intra_op_num_threads)
                for e in _ENCODERS.values() if getattr(e, "_session", None) is not None]

    with distributed.Client(cluster) as client:
        seen = [t for ts in client.run(threads).values() for t in ts]
    assert seen and all(t == (1, 1) for t in seen)  # one single-threaded session per worker


def test_folds_on_dask_equal_the_local_run(cluster):
    from mmfuse.distributed import fold_backend
    from mmfuse.evaluate import evaluate

    views, y = make_views(n=160)
    kwargs = dict(strategies=("early", "late"), cv=3, random_state=0)
    local = evaluate(views, y, n_jobs=1, **kwargs)
    with fold_backend(cluster.scheduler_address) as client:
        with distributed.get_task_stream(client) as stream:
            remote = evaluate(views, y, n_jobs=-1, **kwargs)
    assert len(stream.data) >= 3  # the folds ran as tasks on the cluster
    for a, b in zip(local.rows, remote.rows):
        assert (a.name, a.accuracy, a.macro_f1, a.fold_accuracy) == \
            (b.name, b.accuracy, b.macro_f1, b.fold_accuracy)
    for name, pred in local.predictions.items():
        np.testing.assert_array_equal(pred, remote.predictions[name])


def test_killed_client_then_rerun_computes_only_missing_shards(cluster, reference_store,
                                                               store_manifest, tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "mmfuse", "extract", "--manifest", str(store_manifest),
           "--image", "image", "--encoders", "image=hog", "--out", str(out), "--shard-size", "1", "--on-error", "skip", "--no-progress",
           "--scheduler", cluster.scheduler_address]
    client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: n_shards(out) >= 2 or client.poll() is not None, "the first shards")
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    at_kill = n_shards(out)
    assert 2 <= at_kill < N_SHARDS, "the client must be killed mid-extraction"
    assert not json.loads((out / HEADER).read_text())["complete"]
    with pytest.raises(InputError, match="incomplete"):
        load(out)
    import pyarrow.parquet as pq

    for path in out.iterdir():  # only whole shards are visible; temp files start with "."
        assert path.name == HEADER or path.name.startswith(".") or \
            pq.read_metadata(path).num_rows == 1
    result = extract_store(store_manifest, {"image": "image"}, out, **IMAGE_ONLY)
    assert result.reused >= at_kill and result.reused + result.computed == N_SHARDS
    assert result.computed >= 1
    assert_same_features(out, reference_store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_sigkilled_mid_extraction(reference_store, store_manifest, tmp_path):
    """A scheduler and two `dask worker` processes; one worker is SIGKILLed while it works."""
    file = tmp_path / "scheduler.json"
    base = [sys.executable, "-m"]
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen(base + ["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                      "--port", str(free_port()), "--no-dashboard",
                                      "--scheduler-file", str(file)], **quiet)]
    client = None
    try:
        wait_for(lambda: file.exists() and file.stat().st_size > 0, "the scheduler")
        for _ in range(2):
            procs.append(subprocess.Popen(
                base + ["distributed.cli.dask_worker", "--scheduler-file", str(file),
                        "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                        "--no-dashboard", "--death-timeout", str(TIMEOUT)], **quiet))
        address = json.loads(file.read_text())["address"]
        client = distributed.Client(address, timeout=TIMEOUT)
        client.wait_for_workers(2, timeout=TIMEOUT)
        pids = client.run(os.getpid)
        out = tmp_path / "store"
        box: dict = {}

        def run():
            try:
                box["result"] = extract_store(store_manifest, {"image": "image"}, out,
                                              scheduler=address, **IMAGE_ONLY)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                box["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_for(lambda: n_shards(out) >= 1 or not thread.is_alive(), "the first shard")
        busy = [w for w, keys in client.processing().items() if keys and w in pids]
        victim = busy[0] if busy else next(iter(pids))
        os.kill(pids[victim], signal.SIGKILL)
        at_kill = n_shards(out)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "extraction did not finish after the worker died"
        if "error" in box:
            raise box["error"]
        assert at_kill < N_SHARDS, "the worker must be killed mid-extraction"
        result = box["result"]
        assert result.computed == N_SHARDS and n_shards(out) == N_SHARDS
        frame = pd.read_parquet(out)
        assert sorted(frame["mmfuse_row"]) == list(range(N_SHARDS))  # every row exactly once
        assert_same_features(out, reference_store)
    finally:
        if client is not None:
            client.close()
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=TIMEOUT)


def test_unreachable_scheduler_is_a_clear_error():
    from mmfuse.distributed import dask_client

    with pytest.raises(InputError, match="cannot reach the Dask scheduler.*dask scheduler"):
        with dask_client(f"127.0.0.1:{free_port()}", timeout="1s"):
            pass


def test_dask_and_pyarrow_are_imported_only_where_used():
    code = ("import sys, mmfuse, mmfuse.features, mmfuse.distributed, mmfuse.cli; "
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "[]"
