"""Canaries: identifiers planted in training captions must not reach any artefact.

Twenty identifiers (opaque tokens, e-mail addresses, phone and card numbers) are planted in
the captions of a small Tux Paint manifest. ``mmfuse train`` (with and without
``--scrub-pii``) and ``mmfuse run`` (JSON, HTML report, feature cache) must not write any
of them, nor the data folder's path, in any file, log record or console output. A positive
control (the vocabulary ``tfidf`` saved with ``--allow-training-text``) shows that the
search finds a canary when one is there.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmfuse.cli import app
from mmfuse.persist import load
from mmfuse.privacy.scrub import scrub_text

runner = CliRunner()


def _canaries() -> list[str]:
    rng = np.random.default_rng(14)
    letters = np.array(list("bcdfghjkmnpqrstvwxz"))
    tokens = ["".join(rng.choice(letters, 8)) + f"{i:02d}" for i in range(8)]
    emails = [f"canary.{t[:6]}@example.org" for t in tokens[:4]]
    phones = ["+44 20 7946 0958", "+1 415 555 0199", "(555) 867-5309", "+33 1 84 88 02 17"]
    cards = ["4111 1111 1111 1111", "5500 0000 0000 0004", "3782 822463 10005",
             "6011 1111 1111 1117"]
    return tokens + emails + phones + cards  # 20 identifiers


def _unzip_all(data: bytes) -> list[bytes]:
    """The bytes of a file and, recursively, of every zip member inside it."""
    out = [data]
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                out += _unzip_all(archive.read(name))
    return out


def _leaks(blobs: list[bytes], secrets: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        needles = {secret.encode(), secret.lower().encode(), secret.replace(" ", "").encode()}
        if any(n in blob for blob in blobs for n in needles):
            found.append(secret)
    return found


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, data_root):
    from mmfuse.data.datasets import load_dataset

    X, y, _ = load_dataset("tuxpaint", root=data_root)
    rows = np.flatnonzero(np.isin(y, ["animals", "food", "vehicles"]))[::6][:30]
    df = X.iloc[rows][["image", "text"]].reset_index(drop=True)
    df["label"] = y[rows]
    canaries = _canaries()
    for i, secret in enumerate(canaries):
        df.loc[i, "text"] = f"{df.loc[i, 'text']} contact {secret}"
    folder = tmp_path_factory.mktemp("canary")
    path = folder / "train.csv"
    df.to_csv(path, index=False)
    return path, df, canaries


def _artefacts(folder: Path) -> list[bytes]:
    blobs = []
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix != ".csv":
            blobs += _unzip_all(file.read_bytes())
    return blobs


def _invoke(args: list[str], caplog) -> tuple[int, str]:
    with caplog.at_level(logging.DEBUG):
        result = runner.invoke(app, args)
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    return result.exit_code, result.output + "\n" + logs


@pytest.mark.parametrize("scrub", [False, True])
def test_train_and_run_leak_no_canary(manifest, data_root, tmp_path, monkeypatch, caplog, scrub):
    path, df, canaries = manifest
    secrets = canaries + [str(data_root), str(path.parent)]
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    scrub_flag = ["--scrub-pii"] if scrub else []
    source = ["--manifest", str(path), "--image", "image", "--text", "text", "--label", "label"]
    model = tmp_path / "out" / "model.mmfuse"
    code, console = _invoke(["train", *source, "--fusion", "late", "--weights", "equal",
                             "--save-model", str(model), *scrub_flag], caplog)
    assert code == 0, console
    code, run_console = _invoke(["run", *source, "--encoders", "text=hashing", "--fusion", "late",
                                 "--cv", "2", "--no-progress", "--json",
                                 str(tmp_path / "out" / "r.json"), "--report",
                                 str(tmp_path / "out" / "r.html"), *scrub_flag], caplog)
    assert code == 0, run_console
    blobs = _artefacts(tmp_path / "out") + _artefacts(tmp_path / "cache")
    assert (tmp_path / "cache" / "features.sqlite").exists()  # the text features were cached
    assert _leaks(blobs + [(console + run_console).encode()], secrets) == []

    loaded = load(model)
    text = loaded.encoders_["text"]
    assert text.name == "tfidf-hashed"
    assert loaded.model_file_["privacy"] == {"scrub_pii": scrub, "epsilon": None,
                                             "epsilon_spent": None, "delta_spent": None,
                                             "training_text": False}
    captions = df["text"].tolist()[8:20]  # the e-mail, phone and card canaries
    raw = text.transform(captions)
    scrubbed = text.transform([scrub_text(c) for c in captions])
    assert np.array_equal(raw, scrubbed) == scrub  # with --scrub-pii, scrubbed text is encoded


def test_vocabulary_model_is_refused_unless_asked(manifest, tmp_path, monkeypatch, caplog):
    path, _, canaries = manifest
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    source = ["--manifest", str(path), "--image", "image", "--text", "text", "--label", "label",
              "--encoders", "text=tfidf", "--fusion", "late", "--weights", "equal"]
    model = tmp_path / "vocab.mmfuse"
    code, console = _invoke(["train", *source, "--save-model", str(model)], caplog)
    assert code == 2 and "stores a vocabulary" in console and not model.exists()
    code, console = _invoke(["train", *source, "--save-model", str(model),
                             "--allow-training-text"], caplog)
    assert code == 0, console
    # positive control: the search does find the tokens in a vocabulary model
    assert len(_leaks(_unzip_all(model.read_bytes()), canaries[:8])) == 8
