"""The on-disk feature cache: keys by content, crash safety, two processes, damage, versions."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mmfuse.cache import (
    DB_NAME,
    SCHEMA_VERSION,
    FeatureCache,
    cache_dir,
    cache_info,
    clear_cache,
    content_key,
    hash_file,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


# -- content keys ----------------------------------------------------------------------------


def test_content_key_follows_bytes_not_path(tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"RIFF....some audio")
    key = content_key(str(a), "audio")
    renamed = tmp_path / "renamed.bin"
    a.rename(renamed)
    assert content_key(renamed, "audio") == key  # renamed file: same key
    renamed.write_bytes(b"RIFF....edited audio")
    assert content_key(renamed, "audio") != key  # edited file: new key


def test_content_key_kinds():
    wave = np.zeros(100, dtype=np.float32)
    assert content_key("a cat", "text") != content_key("a dog", "text")
    assert content_key("a cat", "text") == content_key("a cat", "text")
    # A string is a path for images and audio: a missing file has no key (no caching).
    assert content_key("/no/such/file.png", "image") is None
    assert content_key(wave, "audio") != content_key(wave.astype(np.float64), "audio")
    assert content_key(wave, "audio") != content_key(wave.reshape(10, 10), "audio")
    assert content_key((wave, 8000), "audio") != content_key((wave, 16000), "audio")
    assert content_key(b"\x89PNG", "image") == content_key(bytearray(b"\x89PNG"), "image")
    assert content_key(object(), "image") is None


def test_hash_file_memo_sees_edits(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights-1")
    first = hash_file(path, memo=True)
    assert hash_file(path, memo=True) == first
    path.write_bytes(b"weights-2 longer")  # new size (and mtime): memo entry no longer matches
    assert hash_file(path, memo=True) != first


# -- store -----------------------------------------------------------------------------------


def test_roundtrip_and_persistence(tmp_path):
    cache = FeatureCache(tmp_path)
    data = vectors(5)
    assert cache.put_many("enc-a", [f"k{i}" for i in range(5)], data) == 5
    got = cache.get_many("enc-a", ["k0", "k3", "nope"], dim=8)
    assert set(got) == {"k0", "k3"}
    np.testing.assert_array_equal(got["k3"], data[3])
    assert got["k3"].dtype == np.float32
    assert cache.get_many("enc-b", ["k0"], dim=8) == {}  # other encoder fingerprint
    assert cache.get_many("enc-a", ["k0"], dim=9) == {}  # wrong dim is a miss
    cache.close()
    again = pickle.loads(pickle.dumps(FeatureCache(tmp_path)))  # pickles as its location
    np.testing.assert_array_equal(again.get("enc-a", "k1", 8), data[1])


def test_nan_rows_and_missing_keys_are_not_stored(tmp_path):
    cache = FeatureCache(tmp_path)
    data = vectors(3)
    data[1, 2] = np.nan
    assert cache.put_many("enc", ["a", "b", None], data) == 1
    assert set(cache.get_many("enc", ["a", "b"], 8)) == {"a"}


def test_damaged_row_is_a_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("enc", ["a", "b"], vectors(2))
    cache.close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:  # flip bytes of one stored vector
        conn.execute("UPDATE features SET vector = zeroblob(32) WHERE content = 'a'")
    assert set(FeatureCache(tmp_path).get_many("enc", ["a", "b"], 8)) == {"b"}


def fill(root: Path, n: int = 400) -> None:
    cache = FeatureCache(root)
    for start in range(0, n, 50):
        cache.put_many("enc", [f"k{i}" for i in range(start, start + 50)],
                       vectors(50, dim=256, seed=start))
    cache.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty-header"])
def test_damaged_file_is_rebuilt_never_read(tmp_path, damage):
    fill(tmp_path)
    path = tmp_path / DB_NAME
    if damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(b"this is not a database" * 1000)
    else:
        with open(path, "r+b") as handle:
            handle.write(b"\0" * 100)
    cache = FeatureCache(tmp_path)
    keys = [f"k{i}" for i in range(400)]
    assert cache.get_many("enc", keys, 256) == {}  # nothing from the damaged file
    assert cache.put_many("enc", ["new"], vectors(1, dim=256)) == 1  # usable again
    assert set(cache.get_many("enc", ["new", "k1"], 256)) == {"new"}
    assert cache.disabled_reason is None
    assert list(tmp_path.glob(DB_NAME + ".bad-*"))  # set aside, for inspection


def test_other_schema_version_is_rebuilt(tmp_path):
    fill(tmp_path, 50)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    cache = FeatureCache(tmp_path)
    assert cache.get_many("enc", ["k1"], 256) == {}
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_foreign_sqlite_file_is_rebuilt(tmp_path):
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("CREATE TABLE features (x)")
        conn.execute("INSERT INTO features VALUES (1)")
    cache = FeatureCache(tmp_path)
    cache.put_many("enc", ["a"], vectors(1))
    assert set(cache.get_many("enc", ["a"], 8)) == {"a"}


def test_unusable_location_degrades_to_no_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    cache = FeatureCache(blocker)
    assert cache.put_many("enc", ["a"], vectors(1)) == 0
    assert cache.get_many("enc", ["a"], 8) == {}
    assert cache.disabled_reason


# -- crash safety and concurrency ------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {src!r})
    from mmfuse.cache import FeatureCache
    cache = FeatureCache({root!r})
    rng = np.random.default_rng(0)
    i = 0
    while True:
        keys = [f"{{i}}-{{j}}" for j in range(64)]
        cache.put_many("enc", keys, rng.normal(size=(64, 512)).astype(np.float32))
        i += 1
        if i == 3:
            print("writing", flush=True)
""")


def test_killed_writer_leaves_no_corrupt_entry(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER.format(src=SRC, root=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [row[0] for row in conn.execute("SELECT content FROM features")]
    assert len(keys) >= 3 * 64 and len(keys) % 64 == 0  # whole batches only
    got = FeatureCache(tmp_path).get_many("enc", keys, 512)
    assert len(got) == len(keys)  # every committed row reads back valid


def _write_many(root: str, tag: str) -> None:
    cache = FeatureCache(root, timeout=60)
    for batch in range(40):
        keys = [f"{tag}-{batch}-{j}" for j in range(16)]
        cache.put_many("enc", keys, vectors(16, dim=64, seed=batch))
        cache.get_many("enc", keys[:4], 64)


def test_two_processes_write_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), tag)) for tag in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    keys = [f"{tag}-{b}-{j}" for tag in "ab" for b in range(40) for j in range(16)]
    assert len(FeatureCache(tmp_path).get_many("enc", keys, 64)) == len(keys)


# -- info / clear ----------------------------------------------------------------------------


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv("MMFUSE_CACHE")
    assert "mmfuse" in str(cache_dir())


def test_cache_info_and_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path))
    empty = cache_info()
    assert empty["entries"] == 0 and empty["models"] == []
    cache = FeatureCache()
    cache.put_many("minilm-0123456789abcdef", ["a", "b"], vectors(2))
    cache.put_many("hog-0123456789abcdef", ["a"], vectors(1))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x-1234-x1.onnx").write_bytes(b"\0" * 10)
    info = cache_info()
    assert info["entries"] == 3
    assert info["encoders"]["minilm-0123456789abcdef"]["entries"] == 2
    assert info["models"] == [{"name": "x-1234-x1.onnx", "bytes": 10}]
    assert info["total_bytes"] >= info["bytes"] > 0
    assert clear_cache(encoder="minilm") == {"entries": 2, "models": 0}  # by name
    assert cache_info()["entries"] == 1
    assert clear_cache(models=True) == {"entries": 1, "models": 1}
    assert cache_info()["entries"] == 0 and cache_info()["models"] == []


# -- many processes on a new cache (issue 11: writes lost to "database is locked") ------------

STRESS_ROUNDS = int(os.environ.get("MMFUSE_STRESS_ROUNDS", "40"))
STRESS_BATCHES = 5


def _stress_worker(root: str, tag: int, rounds: int, barrier, failures,
                   batches: int = 20) -> None:
    rng = np.random.default_rng(tag)
    for r in range(rounds):
        cache = FeatureCache(Path(root) / f"round-{r}", timeout=60)
        barrier.wait(60)  # every process opens the same empty cache at the same moment
        for batch in range(batches):
            keys = [f"{tag}-{batch}-{j}" for j in range(25)]
            vecs = vectors(25, dim=16, seed=1000 * tag + batch)
            if cache.put_many("enc", keys, vecs) != 25:
                failures.put(f"round {r} process {tag}: write of batch {batch} failed "
                             f"({cache.disabled_reason})")
                return
            # readers between writes: own rows exactly back, anyone's rows never wrong
            got = cache.get_many("enc", keys, 16)
            if len(got) != 25 or any(not np.array_equal(got[k], v) for k, v in zip(keys, vecs)):
                failures.put(f"round {r} process {tag}: read-back of batch {batch} wrong")
                return
            other = int(rng.integers(0, 4))
            peek = cache.get_many("enc", [f"{other}-{batch}-{j}" for j in range(25)], 16)
            expected = vectors(25, dim=16, seed=1000 * other + batch)
            for k, v in peek.items():
                if not np.array_equal(v, expected[int(k.rsplit("-", 1)[1])]):
                    failures.put(f"round {r} process {tag}: wrong row {k}")
                    return
        cache.close()


def test_four_processes_on_a_new_cache_lose_nothing(tmp_path):
    """4 processes x 125 entries x STRESS_ROUNDS (40) new caches: 5,000 entries per process,
    each round starting on an empty cache at once (the creation race, which the code before
    the fix lost writes to within ~10-30 rounds). Every entry is written, read back exactly,
    and a fresh reader finds all 500 of each round. 100 rounds of 2,000:
    benchmarks/bench_cache_stress.py."""
    ctx = multiprocessing.get_context("spawn")
    barrier, failures = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_stress_worker,
                         args=(str(tmp_path), tag, STRESS_ROUNDS, barrier, failures,
                               STRESS_BATCHES))
             for tag in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    assert problems == []
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    for r in range(STRESS_ROUNDS):
        keys = [f"{t}-{b}-{j}" for t in range(4) for b in range(STRESS_BATCHES)
                for j in range(25)]
        got = FeatureCache(tmp_path / f"round-{r}").get_many("enc", keys, 16)
        assert len(got) == len(keys), f"round {r}: {len(got)} of {len(keys)} entries readable"


def test_a_failed_write_is_counted_and_said_once(tmp_path, caplog):
    """A writer waits (timeout) for another process's lock; if the lock is never released
    the write fails, the run goes on, it is said once, and every row not stored is counted."""
    FeatureCache(tmp_path).put_many("enc", ["a"], vectors(1))
    holder = sqlite3.connect(tmp_path / "features.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process that never lets go
    try:
        cache = FeatureCache(tmp_path, timeout=0.3)
        written = [cache.put_many("enc", [f"k{i}", f"j{i}"], vectors(2)) for i in range(3)]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert written == [0, 0, 0]
    assert cache.not_cached == 6 and "locked" in cache.disabled_reason
    assert sum("disabled for this run" in r.message for r in caplog.records) == 1


def test_weight_hash_memo_is_bounded(tmp_path):
    from mmfuse.cache import keys as cache  # the memo lives with the hashing

    for i in range(cache._FILE_HASH_MEMO_SIZE + 20):
        path = tmp_path / f"w{i}.bin"
        path.write_bytes(str(i).encode())
        assert hash_file(path, memo=True) == hash_file(path)
    assert len(cache._file_hash_memo) <= cache._FILE_HASH_MEMO_SIZE
