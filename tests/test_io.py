"""Only regular files are read, never past their stat size (issue 19): devices, pipes,
sockets, directories, symlinks to them, loops, over-size and changing files are item errors
that name the row, column and path, under ``skip`` and ``raise`` alike, in bounded time."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmfuse._io as mio
from mmfuse import InputError
from mmfuse._io import check_regular_file, read_and_hash, read_input_file
from mmfuse.cache import FeatureCache, content_key, hash_file
from mmfuse.encoders import create_encoder
from mmfuse.extract import extract_features


@pytest.fixture
def short_dir():
    # AF_UNIX socket paths are limited to ~100 bytes: pytest's tmp_path can be longer.
    folder = tempfile.mkdtemp(prefix="mmf-", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _png(path: Path, seed: int, size: int = 32) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return str(path)


class _SlowWriter(threading.Thread):
    """Waits (bounded) to write into a FIFO: a writer that would feed it slowly."""

    def __init__(self, fifo: Path, seconds: float = 1.0):
        super().__init__(daemon=True)
        self.fifo, self.deadline = fifo, time.monotonic() + seconds

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader (mmfuse never opens it)
                time.sleep(0.05)
                continue
            try:
                os.write(fd, b"\x89PNG")
                time.sleep(0.2)
            finally:
                os.close(fd)


def bad_paths(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (path, words the error must contain)."""
    fifo = folder / "pipe.png"
    os.mkfifo(fifo)
    slow = folder / "slow.png"
    os.mkfifo(slow)
    (folder / "dir.png").mkdir()
    sock_path = folder / "s.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    (folder / "dangling.png").symlink_to(folder / "nothing-here.png")
    return {
        "dev-zero": ("/dev/zero", "not a regular file: it is a character device"),
        "dev-urandom": ("/dev/urandom", "not a regular file: it is a character device"),
        "fifo": (str(fifo), "not a regular file: it is a named pipe (FIFO)"),
        "fifo-slow-writer": (str(slow), "not a regular file: it is a named pipe (FIFO)"),
        "directory": (str(folder / "dir.png"), "not a regular file: it is a directory"),
        "socket": (str(sock_path), "not a regular file: it is a socket"),
        "symlink-to-dev-zero": (str(folder / "zero.png"), "resolves to '/dev/zero'"),
        "symlink-loop": (str(folder / "loop-a.png"), "symbolic link loop"),
        "dangling-symlink": (str(folder / "dangling.png"), "broken symbolic link"),
        "proc-file-larger-than-its-stat-size": ("/proc/self/status",
                                                "changed while being read"),
    }, sock


@pytest.mark.parametrize("case", ["dev-zero", "dev-urandom", "fifo", "fifo-slow-writer",
                                  "directory", "socket", "symlink-to-dev-zero", "symlink-loop",
                                  "dangling-symlink", "proc-file-larger-than-its-stat-size"])
@pytest.mark.parametrize("cached", [True, False])
def test_bad_paths_are_named_item_errors_under_skip_and_raise(short_dir, case, cached):
    cases, sock = bad_paths(short_dir)
    path, words = cases[case]
    writer = _SlowWriter(Path(path)) if case == "fifo-slow-writer" else None
    if writer:
        writer.start()
    good = [_png(short_dir / f"g{i}.png", i) for i in range(3)]
    enc = create_encoder("color-hist")
    cache = FeatureCache(short_dir / "cache") if cached else None
    try:
        X, present, errors = extract_features(enc, [good[0], path, good[1], good[2]],
                                              on_error="skip", column="picture", cache=cache,
                                              workers=1)
        assert present.tolist() == [True, False, True, True]
        assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2, 3]]).all()
        assert len(errors) == 1 and errors[0].row == 1 and errors[0].column == "picture"
        message = str(errors[0])
        assert message.startswith("row 1, column 'picture': ")
        assert repr(path) in message and words in message, message
        with pytest.raises(InputError) as info:
            extract_features(enc, [good[0], path], on_error="raise", column="picture",
                             cache=cache, workers=0)
        assert "row 1, column 'picture'" in str(info.value) and words in str(info.value)
    finally:
        sock.close()
        if writer:
            writer.join()


def test_over_size_file_is_refused_before_reading(tmp_path, monkeypatch):
    path = _png(tmp_path / "big.png", 0, size=64)
    size = os.path.getsize(path)
    monkeypatch.setitem(mio.MAX_FILE_BYTES, "image", size - 1)
    reads = []
    monkeypatch.setattr(mio, "_read_chunk", lambda fd, n: reads.append(n) or os.read(fd, n))
    with pytest.raises(InputError, match=rf"image file '.*big.png' is {size:,} bytes, above "
                                         rf"the limit of {size - 1:,} bytes"):
        read_input_file(path, "image")
    assert reads == []  # refused from stat alone
    _, _, errors = extract_features(create_encoder("color-hist"), [path], on_error="skip",
                                    cache=FeatureCache(tmp_path / "c"))
    assert "above the limit" in errors[0].message
    monkeypatch.setitem(mio.MAX_FILE_BYTES, "image", size)
    assert read_input_file(path, "image") == Path(path).read_bytes()


def test_file_truncated_while_being_read_is_an_error_not_a_wrong_hash(tmp_path, monkeypatch):
    path = tmp_path / "shrinking.png"
    path.write_bytes(os.urandom(3 * 2**20 + 5))
    original = mio._read_chunk
    calls = []

    def truncating_read(fd: int, n: int) -> bytes:
        calls.append(n)
        if len(calls) == 2:  # after the first chunk, another process cuts the file
            os.truncate(path, 2**20 + 10)
        return original(fd, n)

    monkeypatch.setattr(mio, "_read_chunk", truncating_read)
    with pytest.raises(InputError, match="changed while being read"):
        hash_file(path)
    path.write_bytes(os.urandom(3 * 2**20 + 5))
    calls.clear()
    with pytest.raises(InputError, match="changed while being read"):
        read_and_hash(path, "image")
    assert content_key(str(path), "image") is None or calls  # unreadable: no key, no hit


def test_file_grown_while_being_read_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "growing.wav"
    path.write_bytes(b"x" * 1000)
    original = mio._read_chunk

    def growing_read(fd: int, n: int) -> bytes:
        with open(path, "ab") as fh:
            fh.write(b"more")
        return original(fd, n)

    monkeypatch.setattr(mio, "_read_chunk", growing_read)
    with pytest.raises(InputError, match=r"changed while being read .*read 1,000\+"):
        read_input_file(path, "audio")


def test_hash_and_decode_see_the_same_bytes(tmp_path):
    """The key stored with a feature is the hash of the bytes that were decoded."""
    path = _png(tmp_path / "a.png", 1)
    data, digest = read_and_hash(path, "image")
    assert data == path and data.data == Path(path).read_bytes()
    assert digest == hash_file(path) and content_key(path, "image") == "file:" + digest
    assert read_input_file(data, "image") is data.data  # no second read
    import pickle

    assert pickle.loads(pickle.dumps(data)) == path  # travels as the plain path


def test_check_regular_file_passes_symlinks_to_regular_files(tmp_path):
    target = tmp_path / "real.png"
    target.write_bytes(b"abc")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert check_regular_file(link, "image").st_size == 3
    assert hash_file(link) == hash_file(target)


def test_manifest_array_and_model_paths_are_checked_too(short_dir):
    from mmfuse.data.manifest import load_arrays, read_manifest
    from mmfuse.persist import ModelFileError, load

    os.mkfifo(short_dir / "m.csv")
    with pytest.raises(InputError, match="manifest file .* is not a regular file: it is a "
                                         r"named pipe \(FIFO\)"):
        read_manifest(short_dir / "m.csv", label="y")
    with pytest.raises(InputError, match="not a regular file: it is a character device"):
        load_arrays({"image": "/dev/zero"})
    with pytest.raises(ModelFileError, match="not a regular file: it is a named pipe"):
        load(short_dir / "m.csv")


def test_cli_run_with_a_device_and_a_pipe_in_the_manifest(short_dir):
    """The reported hang: `mmfuse run --on-error skip` with /dev/zero and a FIFO in the image
    column finishes and names both rows; the default (raise) is a message, no traceback."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from mmfuse.cli import app

    os.mkfifo(short_dir / "pipe.png")
    rows = []
    for i in range(24):
        img = np.full((16, 16, 3), 40 if i % 2 else 215, np.uint8)
        img[: 4 + i % 5] = 128
        Image.fromarray(img).save(short_dir / f"{i}.png")
        rows.append({"img": f"{i}.png", "y": i % 2})
    rows.insert(5, {"img": "/dev/zero", "y": 0})
    rows.insert(9, {"img": "pipe.png", "y": 1})
    pd.DataFrame(rows).to_csv(short_dir / "m.csv", index=False)
    base = ["run", "--manifest", str(short_dir / "m.csv"), "--image", "img", "--label", "y",
            "--encoders", "image=color-hist", "--fusion", "early", "--cv", "2", "--no-progress",
            "--jobs", "1"]
    runner = CliRunner()
    out = short_dir / "r.json"
    result = runner.invoke(app, base + ["--on-error", "skip", "--json", str(out)])
    assert result.exit_code == 0, result.output
    skipped = json.loads(out.read_text())["skipped"]
    assert len(skipped) == 4  # two unreadable cells, then their rows left with nothing
    assert skipped[2:] == ["row 5: no modality left: excluded from evaluation",
                           "row 9: no modality left: excluded from evaluation"]
    assert skipped[0].startswith("row 5, column 'image'") and "'/dev/zero'" in skipped[0]
    assert skipped[1].startswith("row 9, column 'image'") and "named pipe" in skipped[1]
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "row 5" in result.output and "not a regular file" in result.output
