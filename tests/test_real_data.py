"""End to end on real files from ../shared/data: manifest -> encoders -> fusion -> JSON."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmfuse import MultimodalClassifier
from mmfuse.cli import app


@pytest.fixture(scope="module")
def tux_subset(data_root):
    from mmfuse.datasets import load_dataset

    X, y, _ = load_dataset("tuxpaint", root=data_root)
    keep = np.isin(y, ["animals", "vehicles", "food"])
    df = X[keep].copy().reset_index(drop=True)
    rng = np.random.default_rng(0)
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(df["label"] == c), 30, replace=False)
                                   for c in ["animals", "vehicles", "food"]]))
    return df.iloc[rows].reset_index(drop=True)


def test_classifier_on_real_image_text_audio(tux_subset):
    df = tux_subset
    clf = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf", "audio": "mfcc"},
                               fusion="late", cv=3, random_state=0, on_error="skip")
    train, test = df.iloc[::2], df.iloc[1::2]
    clf.fit(train, train["label"])
    proba = clf.predict_proba(test)
    assert proba.shape == (len(test), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert clf.score(test, test["label"]) > 0.5  # three balanced classes: chance is 1/3
    assert set(clf.modality_weights_) == {"audio", "image", "text"}


def test_cli_run_on_a_real_manifest_with_relative_paths(tux_subset, data_root, tmp_path):
    # the data is read-only: link it beside a manifest whose paths are relative to it
    (tmp_path / "tux").symlink_to(data_root / "tuxpaint")
    df = tux_subset.rename(columns={"image": "picture", "text": "caption", "audio": "speech"})
    for col in ("picture", "speech"):
        df[col] = ["tux/" + str(Path(p).relative_to(data_root / "tuxpaint")) for p in df[col]]
    path = tmp_path / "stamps.jsonl"
    df.to_json(path, orient="records", lines=True)
    out = tmp_path / "res.json"
    result = CliRunner().invoke(app, [
        "run", "--manifest", str(path), "--image", "picture", "--text", "caption",
        "--audio", "speech", "--label", "label", "--cv", "3", "--fusion", "late,stacking",
        "--on-error", "skip", "--json", str(out), "--no-progress", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["n_samples"] == 90 and doc["n_classes"] == 3
    names = [r["name"] for r in doc["rows"]]
    assert names == ["audio", "image", "text", "late", "stacking", "seed-baseline"]
    assert all(0 <= r["accuracy"] <= 1 for r in doc["rows"])


def test_corrupt_real_files_are_named(tmp_path, data_root):
    wav = next((data_root / "fsdd" / "recordings").glob("*.wav"))
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(wav.read_bytes()[:30])
    df = pd.DataFrame({"audio": [str(wav), str(truncated)]})
    from mmfuse import InputError
    from mmfuse.encoders import create_encoder

    with pytest.raises(InputError, match="row 1.*cut.wav"):
        create_encoder("mfcc").prepare_all(df["audio"].tolist())
