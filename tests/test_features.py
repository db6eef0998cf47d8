"""The Parquet feature store in one process: layout, privacy, resume, fingerprints, reading."""

from __future__ import annotations

import filecmp
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import STORE_COLUMNS, STORE_ENCODERS
from mmfuse import InputError, MultimodalClassifier
from mmfuse.features import HEADER, SHARD_NAME, attach_encoders, extract_store, load, read_header

runner = CliRunner()


def shard_files(path):
    return sorted(p.name for p in path.glob("part-*.parquet"))


def test_store_layout_header_and_pandas(reference_store, store_manifest):
    out = reference_store.out
    manifest = pd.read_csv(store_manifest)
    assert shard_files(out) == [SHARD_NAME.format(i) for i in range(3)]
    assert reference_store.computed == 3 and reference_store.reused == 0
    frame = pd.read_parquet(out)  # plain pandas reads the store
    assert len(frame) == 24 and frame["mmfuse_row"].tolist() == list(range(24))
    assert frame["id"].tolist() == manifest["id"].tolist()
    assert frame["label"].tolist() == manifest["label"].tolist()
    assert {"image", "text", "audio", "image_present", "text_present", "audio_present"} <= set(frame)
    assert len(frame.loc[0, "image"]) == 1764
    header = read_header(out)
    assert header["complete"] and header["n_rows"] == 24 and header["n_shards"] == 3
    assert header["kept_columns"] == ["id", "label"]
    assert {m: e["name"] for m, e in header["encoders"].items()} == STORE_ENCODERS
    assert len(header["manifest_sha256"]) == 64
    assert header["failed"] == [{"row": 3, "modality": "image",
                                 "cause": "image file not found: <item> (it does not exist)"}]
    # privacy: the header names no file and quotes no text of the manifest
    raw = (out / HEADER).read_text()
    assert "secret-holiday-photo" not in raw and str(store_manifest.parent) not in raw
    for text in manifest["text"].dropna():
        assert text not in raw
    # the command-level result still says which file failed
    assert reference_store.failed[0]["file"].endswith("secret-holiday-photo.png")


def test_store_features_equal_the_in_memory_pipeline(reference_store, store_manifest):
    from mmfuse.data.manifest import read_manifest
    from mmfuse.encoders import create_encoder
    from mmfuse.extract import extract_features

    df = read_manifest(store_manifest, path_columns=["image", "audio"])
    store = load(reference_store.out)
    for m, name in STORE_ENCODERS.items():
        expected, present, _ = extract_features(create_encoder(name), df[m].tolist(),
                                                cache=False, on_error="skip")
        np.testing.assert_array_equal(store.views[m], expected)
        np.testing.assert_array_equal(store.present[m], present)
    assert not store.present["image"][3] and not store.present["text"][7]
    assert store.present["image"][0]  # the relative path was resolved


def test_record_paths_is_opt_in(store_manifest, tmp_path):
    result = extract_store(store_manifest, {"image": "image"}, tmp_path / "s",
                           rows_per_shard=8, on_error="skip", record_paths=True)
    assert result.header["failed"][0]["file"].endswith("secret-holiday-photo.png")


def test_on_error_raise_names_row_column_and_file(store_manifest, tmp_path):
    with pytest.raises(InputError, match=r"row 3, column 'image'.*secret-holiday-photo"):
        extract_store(store_manifest, {"image": "image"}, tmp_path / "s", rows_per_shard=8)


def test_rerun_computes_only_missing_shards_and_ignores_partial_files(reference_store,
                                                                      store_manifest, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(reference_store.out, out)
    (out / SHARD_NAME.format(0)).unlink()
    (out / SHARD_NAME.format(2)).unlink()
    (out / f".{SHARD_NAME.format(1)}.dead.tmp").write_bytes(b"PAR1 half a shard")
    header = json.loads((out / HEADER).read_text())
    header["complete"] = False
    (out / HEADER).write_text(json.dumps(header))
    with pytest.raises(InputError, match="incomplete"):
        load(out)
    assert len(pd.read_parquet(out)) == 8  # readers never see the temp file
    seen = []
    result = extract_store(store_manifest, STORE_COLUMNS, out, encoders=STORE_ENCODERS,
                           rows_per_shard=8, on_error="skip",
                           progress=lambda done, total: seen.append((done, total)))
    assert (result.computed, result.reused) == (2, 1)
    assert seen[0] == (1, 3) and seen[-1] == (3, 3)
    assert not list(out.glob(".*.tmp"))
    for name in shard_files(reference_store.out):
        assert filecmp.cmp(out / name, reference_store.out / name, shallow=False), name
    assert result.header == reference_store.header
    assert result.failed[0]["file"].endswith("secret-holiday-photo.png")  # reused shard too


def test_other_arguments_are_refused_unless_overwrite(reference_store, store_manifest, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(reference_store.out, out)
    with pytest.raises(InputError, match="other arguments.*encoders.*--overwrite"):
        extract_store(store_manifest, {"image": "image"}, out, encoders={"image": "pixels"},
                      rows_per_shard=8, on_error="skip")
    result = extract_store(store_manifest, {"image": "image"}, out, encoders={"image": "pixels"},
                           rows_per_shard=8, on_error="skip", overwrite=True)
    assert load(out).encoders == {"image": "pixels"} and result.computed == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="non-empty folder"):
        extract_store(store_manifest, {"image": "image"}, tmp_path / "other")


def test_fingerprint_mismatch_and_bad_arguments(reference_store, store_manifest, tmp_path):
    with pytest.raises(InputError, match=r"extracted with image=hog \(fingerprint hog-.*image=pixels"):
        load(reference_store.out, encoders={"image": "pixels"})
    with pytest.raises(InputError, match="learns from data"):
        extract_store(store_manifest, {"text": "text"}, tmp_path / "s", encoders={"text": "tfidf"})
    with pytest.raises(InputError, match="stateless encoder for text"):
        extract_store(store_manifest, {"text": "text"}, tmp_path / "s")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['photo'\]"):
        extract_store(store_manifest, {"image": "photo"}, tmp_path / "s")
    with pytest.raises(InputError, match="not a feature store"):
        load(tmp_path)
    store = load(reference_store.out, encoders={"image": "hog"})
    assert list(store.views) == ["image"]


def test_classifier_fits_on_a_store_and_predicts_raw_files(reference_store, store_manifest):
    from mmfuse.data.manifest import read_manifest

    store = load(reference_store.out)
    y = store.column("label")
    clf = MultimodalClassifier(fusion="late", weights="equal", random_state=0,
                               on_error="skip").fit(store.views, y)
    from_views = clf.predict(store.views)
    attach_encoders(clf, store)
    df = read_manifest(store_manifest, path_columns=["image", "audio"])
    np.testing.assert_array_equal(clf.predict(df[["audio", "image", "text"]]), from_views)
    assert (from_views == y).mean() > 0.5


def test_cli_extract_then_run_and_train_on_the_store(reference_store, store_manifest, tmp_path):
    out = tmp_path / "store"
    args = ["extract", "--manifest", str(store_manifest), "--image", "image", "--text", "text",
            "--audio", "audio", "--encoders", "text=wordllama", "--out", str(out),
            "--shard-size", "8", "--on-error", "skip", "--no-progress"]
    shutil.copytree(reference_store.out, out)
    (out / SHARD_NAME.format(1)).unlink()
    result = runner.invoke(app_(), args)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())  # rich wraps long lines
    assert "1 computed, 2 reused" in flat
    assert "row 3, image" in flat and "secret-holiday-photo.png" in flat
    report = tmp_path / "r.json"
    result = runner.invoke(app_(), ["run", "--features", str(out), "--label", "label",
                                     "--fusion", "late", "--weights", "equal", "--cv", "3", "--jobs", "1",
                                     "--json", str(report), "--no-progress"])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["n_samples"] == 24 and [r["name"] for r in doc["rows"]][:3] == ["audio", "image", "text"]
    result = runner.invoke(app_(), ["run", "--features", str(out), "--label", "label",
                                    "--encoders", "image=pixels", "--no-progress"])
    assert result.exit_code == 2 and "fingerprint" in result.output, result.output
    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app_(), ["train", "--features", str(out), "--label", "label",
                                    "--weights", "equal", "--save-model", str(model)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app_(), ["predict", str(model), "--manifest", str(store_manifest),
                                    "--on-error", "skip"])
    assert result.exit_code == 0, result.output


def app_():
    from mmfuse.cli import app

    return app


# The child runs the real ``mmfuse extract`` command with one extra encoder registered: HOG
# that takes 0.5 s per image, so the signal sent after the second shard always lands while
# rows are still left (with plain HOG and a warm cache a loaded machine could finish all 24
# rows before the signal arrived).
_SLOW_EXTRACT = """
import os, sys, time
from mmfuse.encoders.classical import HogEncoder
from mmfuse.encoders.registry import register_encoder

@register_encoder("slow-hog", modality="image", dim=HogEncoder().dim)
class SlowHog(HogEncoder):
    name = "slow-hog"

    def prepare(self, item):
        time.sleep(float(os.environ.get("SLOW_HOG_DELAY", "0")))
        return super().prepare(item)

from mmfuse.cli import main
sys.argv = ["mmfuse"] + sys.argv[1:]
main()
"""


def test_sigint_stops_cleanly_and_the_rerun_finishes(reference_store, store_manifest, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "store"
    cmd = [sys.executable, "-c", _SLOW_EXTRACT, "extract", "--manifest", str(store_manifest),
           "--image", "image", "--encoders", "image=slow-hog", "--out", str(out),
           "--shard-size", "1", "--on-error", "skip", "--no-progress"]
    env = {**os.environ, "MMFUSE_CACHE": str(tmp_path / "cache"), "SLOW_HOG_DELAY": "0.5"}

    def default_sigint():
        # as a user's Ctrl-C reaches it: a test suite started as a shell's background job
        # ignores SIGINT, and a child inherits that (Python then keeps it ignored)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=default_sigint)
    try:
        while len(list(out.glob("part-*.parquet"))) < 2 and proc.poll() is None:
            time.sleep(0.02)  # the child writes a shard every 0.5 s or exits
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = len(list(out.glob("part-*.parquet")))
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in " ".join(err.split())
    assert "Traceback" not in err
    assert 2 <= done < 24 and not list(out.glob(".*.tmp"))
    # The same command again, at full speed: it keeps the finished shards and does the rest.
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                           env={**env, "SLOW_HOG_DELAY": "0"})
    assert rerun.returncode == 0, rerun.stderr
    assert f"{24 - done} computed, {done} reused" in " ".join(rerun.stdout.split()), rerun.stdout
    np.testing.assert_array_equal(load(out).views["image"],
                                  load(reference_store.out).views["image"])
