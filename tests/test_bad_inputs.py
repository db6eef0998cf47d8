"""The bad-input table (issue 11): 50+ kinds of bad file, text and manifest. Each row says
what the user sees (a clear error naming the item, or that it is fine) and checks that
nothing else is lost: the good rows around a bad item get exactly the features they get
alone, under ``skip``; under ``raise`` the error names row, column and cause."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from PIL import Image

from mmfuse import InputError
from mmfuse.cache import FeatureCache
from mmfuse.encoders import create_encoder
from mmfuse.extract import extract_features


@pytest.fixture(scope="module")
def folder():
    path = Path(tempfile.mkdtemp(prefix="mmf-bad-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _png_bytes(seed: int = 0, size: int = 24, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode) \
        .save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _wav_bytes(wave: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, wave, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _tone(seconds: float = 0.5, rate: int = 16000, channels: int = 1, seed: int = 0):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.normal(size=t.size)
    return np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave


def _tiff_float(value: float) -> bytes:
    arr = np.full((16, 16), 0.5, np.float32)
    arr[3, 3] = value
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, "TIFF")
    return buf.getvalue()


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")  # 400 Mpx in ~50 kB
    return buf.getvalue()


XXE_SVG = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&xxe;</text></svg>"""
LAUGHS_SVG = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&c;</text></svg>"""


def _special(folder: Path, kind: str) -> str:
    if kind == "directory":
        (folder / "dir.png").mkdir(exist_ok=True)
        return str(folder / "dir.png")
    if kind == "fifo":
        if not (folder / "pipe.wav").exists():
            os.mkfifo(folder / "pipe.wav")
        return str(folder / "pipe.wav")
    if kind == "symlink-loop":
        if not (folder / "la.png").is_symlink():
            (folder / "la.png").symlink_to(folder / "lb.png")
            (folder / "lb.png").symlink_to(folder / "la.png")
        return str(folder / "la.png")
    raise KeyError(kind)


# kind -> (file name, bytes or special, None for "fine" or the words of the error)
IMAGE_CASES = {
    "corrupt-png": ("c.png", b"\x89PNG\r\n\x1a\n" + os.urandom(300), "cannot decode image"),
    "truncated-png": ("t.png", _png_bytes(1, 64)[:200], "cannot decode image"),
    "truncated-jpeg": ("t.jpg", _jpeg_bytes()[:300], "cannot decode image"),
    "empty-file": ("e.png", b"", "the file is empty"),
    "text-file-named-png": ("x.png", b"hello, I am text\n" * 5, "cannot decode image"),
    "html-named-jpg": ("h.jpg", b"<html><body>404</body></html>", "cannot decode image"),
    "wav-in-image-column": ("a.png", _wav_bytes(_tone()), "cannot decode image"),
    "decompression-bomb": ("bomb.png", _bomb_png(), "pixels"),
    "svg-external-entity": ("xxe.svg", XXE_SVG, "refused for safety"),
    "svg-billion-laughs": ("laughs.svg", LAUGHS_SVG, "refused for safety"),
    "malformed-svg": ("m.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><rect", "SVG"),
    "nan-float-tiff": ("nan.tif", _tiff_float(np.nan), "NaN or infinite"),
    "inf-float-tiff": ("inf.tif", _tiff_float(np.inf), "NaN or infinite"),
    "missing-file": ("never-written.png", None, "not found"),
    "nul-in-path": ("bad\x00name.png", None, "not a valid path"),
    "directory": ("", "directory", "not a regular file: it is a directory"),
    "fifo": ("", "fifo", "not a regular file: it is a named pipe"),
    "device": ("", "/dev/zero", "not a regular file: it is a character device"),
    "symlink-loop": ("", "symlink-loop", "symbolic link loop"),
    "grayscale-16-bit": ("g16.png", None, None),  # fine: converted
    "palette-with-transparency": ("p.png", None, None),  # fine: composited on white
}

AUDIO_CASES = {
    "nan-float-wav": ("nan.wav", _wav_bytes(np.full(8000, np.nan, np.float32), subtype="FLOAT"),
                      "NaN or infinite samples"),
    "inf-float-wav": ("inf.wav", _wav_bytes(np.r_[np.zeros(4000), np.inf, np.zeros(3999)]
                                            .astype(np.float32), subtype="FLOAT"),
                      "NaN or infinite samples"),
    "zero-frame-wav": ("z.wav", _wav_bytes(np.zeros(0, np.float32)), "empty"),
    "truncated-wav": ("t.wav", _wav_bytes(_tone())[:4000], "truncated"),
    "corrupt-wav": ("c.wav", b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(200),
                    "cannot decode audio"),
    "empty-audio-file": ("e.wav", b"", "the file is empty"),
    "png-in-audio-column": ("p.wav", _png_bytes(), "cannot decode audio"),
    "too-long-audio": ("long.wav", _wav_bytes(np.zeros(601 * 1000, np.int16), rate=1000),
                       "above max_seconds"),
    "fifo-audio": ("", "fifo", "not a regular file: it is a named pipe"),
    "directory-audio": ("", "directory", "not a regular file: it is a directory"),
    "eight-channels": ("8ch.wav", _wav_bytes(_tone(channels=8)), None),  # fine: averaged
    "192-khz": ("hi.wav", _wav_bytes(_tone(rate=192_000), rate=192_000), None),  # resampled
    "silent": ("silent.wav", _wav_bytes(np.zeros(8000, np.int16)), None),
}


def _materialise(folder: Path, name: str, payload) -> str:
    if isinstance(payload, str):
        return payload if payload.startswith("/dev/") else _special(folder, payload)
    if name == "g16.png":
        Image.fromarray((np.arange(256 * 16).reshape(64, 64) * 16).astype(np.uint16)) \
            .save(folder / name)
    elif name == "p.png":
        img = Image.fromarray(np.random.default_rng(0).integers(0, 4, (16, 16), np.uint8), "P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        img.info["transparency"] = 0
        img.save(folder / name, transparency=0)
    elif payload is not None:
        (folder / name).write_bytes(payload)
    return str(folder / name)


def _check_case(folder: Path, modality: str, encoder: str, case: tuple, good: list[str]):
    name, payload, words = case
    path = _materialise(folder, name, payload)
    enc = create_encoder(encoder)
    alone, _, _ = extract_features(enc, good, cache=False)
    samples = [good[0], path, good[1]]
    cache = FeatureCache(tempfile.mkdtemp(dir=folder))
    X, present, errors = extract_features(enc, samples, on_error="skip", column=modality,
                                          cache=cache)
    np.testing.assert_array_equal(X[[0, 2]], alone)  # nothing else lost or changed
    if words is None:
        assert errors == [] and present.all()
        return
    assert present.tolist() == [True, False, True]
    assert len(errors) == 1 and errors[0].row == 1 and errors[0].column == modality
    assert words in errors[0].message, errors[0].message
    assert name.replace("\x00", "\\x00") in errors[0].message or payload in errors[0].message
    with pytest.raises(InputError) as info:
        extract_features(enc, samples, on_error="raise", column=modality, cache=False)
    assert str(info.value).startswith(f"row 1, column {modality!r}: ")
    assert words in str(info.value)


@pytest.fixture(scope="module")
def good_images(folder):
    paths = []
    for i in range(2):
        (folder / f"good{i}.png").write_bytes(_png_bytes(10 + i))
        paths.append(str(folder / f"good{i}.png"))
    return paths


@pytest.fixture(scope="module")
def good_audio(folder):
    paths = []
    for i in range(2):
        (folder / f"good{i}.wav").write_bytes(_wav_bytes(_tone(seed=i)))
        paths.append(str(folder / f"good{i}.wav"))
    return paths


@pytest.mark.parametrize("kind", list(IMAGE_CASES))
def test_bad_image(folder, good_images, kind):
    pytest.importorskip("cairosvg") if kind.endswith("svg") else None
    _check_case(folder, "image", "color-hist", IMAGE_CASES[kind], good_images)


@pytest.mark.parametrize("kind", list(AUDIO_CASES))
def test_bad_audio(folder, good_audio, kind):
    _check_case(folder, "audio", "mfcc", AUDIO_CASES[kind], good_audio)


def test_nan_wav_no_longer_crashes_trim_silence():
    """The reported crash: IndexError in trim_silence on a NaN waveform."""
    from mmfuse.preprocess.audio import trim_silence

    wave = np.full(8000, np.nan, np.float32)
    assert trim_silence(wave, 16000) is wave


# -- text ------------------------------------------------------------------------------------

TEXT_CASES = {
    "control-characters": ("a\x00b\x07c\x1b[31m red \x7f", "fine"),
    "formula-injection": ("=HYPERLINK(\"http://evil\",\"x\")", "fine"),
    "only-punctuation": ("!!! ??? ...", "fine-or-missing"),
    "invalid-utf8-bytes": (b"\xff\xfe\xfa", "error"),
    "lone-surrogate": ("caf\udce9", "fine"),
    "very-long": ("word " * 200_000, "fine"),
    "number-not-text": (12345, "fine-or-error"),
}


@pytest.mark.parametrize("kind", list(TEXT_CASES))
def test_bad_text(kind):
    item, expected = TEXT_CASES[kind]
    enc = create_encoder("tfidf")
    good = ["a red apple", "a green pear", "red and green"]
    prepared, present, errors = enc.prepare_all([good[0], item, good[1], good[2]], "skip",
                                                column="text")
    assert present[[0, 2, 3]].all()  # nothing else lost
    if expected == "error":
        assert len(errors) == 1 and errors[0].row == 1 and errors[0].column == "text"
        with pytest.raises(InputError, match="row 1, column 'text'"):
            enc.prepare_all([good[0], item], "raise", column="text")
    elif expected == "fine":
        assert errors == [] and present[1]
    else:
        assert len(errors) <= 1


def test_formula_injection_is_defused_in_written_predictions(tmp_path):
    from mmfuse.predict import write_predictions

    table = pd.DataFrame({"id": ["=cmd|' /C calc'!A0", "@SUM(1)", "-2.5", "+1", "ok"],
                          "label": ["a", "b", "a", "b", "a"]})
    write_predictions(table, tmp_path / "p.csv")
    back = pd.read_csv(tmp_path / "p.csv", dtype=str)
    assert back["id"].tolist() == ["'=cmd|' /C calc'!A0", "'@SUM(1)", "-2.5", "+1", "ok"]
    write_predictions(table, tmp_path / "p.jsonl")  # JSON is data, not a spreadsheet
    assert pd.read_json(tmp_path / "p.jsonl", lines=True)["id"][0] == "=cmd|' /C calc'!A0"


# -- manifests --------------------------------------------------------------------------------

MANIFEST_CASES = {
    "binary": ("m.csv", bytes(range(256)) * 8, "is a binary file"),
    "binary-utf8-garbage": ("m.csv", b"path,label\n" + bytes(range(128, 256)) * 8,
                            "not valid UTF-8"),
    "duplicated-columns": ("m.csv", b"path,label,label\na.png,1,2\n", "appears twice"),
    "empty-column-name": ("m.csv", b"path,,label\na.png,x,1\n", "has no name"),
    "header-only": ("m.csv", b"path,label\n", "has no rows (only a header)"),
    "empty-file": ("m.csv", b"", "could not be parsed"),
    "missing-labels": ("m.csv", b"path,label\na.png,1\nb.png,\n", "is empty in row 1"),
    "label-column-entirely-empty": ("m.csv", b"path,label\na.png,\nb.png,\n",
                                    "entirely empty"),
    "latin-1": ("m.csv", "path,label\ncaf\u00e9.png,1\n".encode("latin-1"), "not valid UTF-8"),
    "broken-jsonl": ("m.jsonl", b'{"path": "a.png", "label": 1}\n{"path": "b.png", "lab\n',
                     "line 2: not valid JSON"),
    "jsonl-not-objects": ("m.jsonl", b'{"path": "a.png", "label": 1}\n[1, 2]\n',
                          "line 2: expected a JSON object"),
    "jsonl-duplicate-keys": ("m.jsonl", b'{"path": "a.png", "label": 1, "label": 2}\n',
                             "line 1: not valid JSON: key 'label' appears twice"),
    "ragged-rows": ("m.csv", b"path,label\na.png,1,extra,more\n",
                    "a row has more fields than the header"),
    "unknown-extension": ("m.xlsx", b"PK\x03\x04", "unknown extension"),
    "missing-column": ("m.csv", b"picture,label\na.png,1\n", "lacks column(s) ['path']"),
}


@pytest.mark.parametrize("kind", list(MANIFEST_CASES))
def test_broken_manifest_is_a_clear_error(tmp_path, kind):
    from mmfuse.data.manifest import read_manifest

    name, payload, words = MANIFEST_CASES[kind]
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(InputError) as info:
        read_manifest(tmp_path / name, label="label", columns=["path"], path_columns=["path"])
    assert words in str(info.value) and name in str(info.value)


def test_one_class_manifest_is_a_clear_cli_error(tmp_path):
    from typer.testing import CliRunner

    from mmfuse.cli import app

    (tmp_path / "m.csv").write_text("text,label\n" + "".join(f"word {i},same\n"
                                                             for i in range(20)))
    result = CliRunner().invoke(app, ["run", "--manifest", str(tmp_path / "m.csv"), "--text",
                                      "text", "--label", "label", "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "at least 2 classes" in result.output


def test_cli_run_with_every_bad_file_among_good_rows(folder, good_images, good_audio, tmp_path):
    """One manifest with every bad image and audio file of the tables above among good rows:
    `mmfuse run --on-error skip` exits 0 and names every bad cell; without skip: exit 2, a
    message, no traceback."""
    import json

    from typer.testing import CliRunner

    from mmfuse.cli import app

    rows = []
    for i in range(30):
        rows.append({"image": good_images[i % 2], "audio": good_audio[i % 2],
                     "label": i % 2})
    bad_cells = []
    for table, column in ((IMAGE_CASES, "image"), (AUDIO_CASES, "audio")):
        for name, payload, words in table.values():
            if words is None or "\x00" in name:
                continue
            path = _materialise(folder, name, payload)
            row = {"image": good_images[0], "audio": good_audio[0], "label": len(rows) % 2}
            row[column] = path
            bad_cells.append((len(rows), column))
            rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    base = ["run", "--manifest", str(tmp_path / "m.csv"), "--image", "image", "--audio",
            "audio", "--label", "label", "--encoders", "image=color-hist,audio=mfcc",
            "--fusion", "early", "--cv", "2", "--no-progress", "--jobs", "1"]
    runner = CliRunner()
    result = runner.invoke(app, base + ["--on-error", "skip", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "r.json").read_text())["skipped"]
    named = {(int(s.split(",")[0].split()[1]), s.split("'")[1]) for s in skipped
             if ", column '" in s}
    assert named == set(bad_cells)
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert any(f"row {row}, column '{col}'" in result.output for row, col in bad_cells)


# -- failures inside an encoder ---------------------------------------------------------------


class _Fragile:
    """An encoder whose model fails on some items (as a real model can: a shape it cannot
    take, a NaN it produces), or whose package is missing."""

    def __new__(cls, mode: str):
        from mmfuse.encoders.base import Encoder

        class Fragile(Encoder):
            name, modality = "fragile", "text"

            def __init__(self, mode: str = "embed"):
                self.mode = mode

            @property
            def dim(self) -> int:
                return 2

            def prepare(self, item):
                if self.mode == "missing-package":
                    from mmfuse import MissingDependencyError

                    raise MissingDependencyError("'onnxruntime' is needed; pip install ...")
                if self.mode == "prepare" and item == "boom":
                    return {}["no such key"]
                return item

            def embed(self, prepared):
                if self.mode == "embed" and "boom" in prepared:
                    raise RuntimeError("model failed on this batch")
                return np.array([[len(p), np.nan if p == "nan" else 1.0] for p in prepared],
                                np.float32)

        return Fragile(mode)


@pytest.mark.parametrize("mode, words", [
    ("embed", "encoder 'fragile' failed on this item: RuntimeError: model failed"),
    ("prepare", "could not be processed: KeyError"),
])
def test_a_failure_inside_the_encoder_is_one_item_error(mode, words):
    enc = _Fragile(mode)
    items = ["ok", "fine", "boom", "nan", "good"]
    X, present, errors = extract_features(enc, items, on_error="skip", column="t",
                                          batch_size=8, cache=False)
    assert present.tolist() == [True, True, False, False, True]
    np.testing.assert_array_equal(X[[0, 1, 4]], [[2, 1], [4, 1], [4, 1]])
    assert [(e.row, e.column) for e in errors] == [(2, "t"), (3, "t")]
    assert words in errors[0].message and errors[0].message.startswith("'boom'")
    assert "NaN or infinite features" in errors[1].message
    assert errors[1].message.startswith("'nan': ") and errors[1].item == "'nan'"
    with pytest.raises(InputError, match=r"row 2, column 't': .*" + words.split(":")[0]):
        extract_features(enc, items, on_error="raise", column="t", cache=False)


def test_a_missing_package_is_not_an_item_error():
    from mmfuse import MissingDependencyError

    with pytest.raises(MissingDependencyError):
        extract_features(_Fragile("missing-package"), ["a", "b"], on_error="skip",
                         cache=False)
    with pytest.raises(MissingDependencyError):
        _Fragile("missing-package").prepare_all(["a"], "skip")
