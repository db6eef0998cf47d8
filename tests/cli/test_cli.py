import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_views, number_frame
from mmfuse.cli import app

runner = CliRunner()


def test_run_with_seed_arrays_writes_the_json_contract(tmp_path):
    views, y = make_views(n=200)
    np.save(tmp_path / "images.npy", views["a"])
    np.save(tmp_path / "texts.npy", views["b"])
    np.save(tmp_path / "labels.npy", y)
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["run", "--views", f"image={tmp_path/'images.npy'},text={tmp_path/'texts.npy'}",
                                 "--labels", str(tmp_path / "labels.npy"), "--cv", "3",
                                 "--fusion", "late,stacking", "--json-out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "seed-baseline" in result.output and "best:" in result.output
    doc = json.loads(out.read_text())
    assert doc["n_samples"] == 200 and doc["n_classes"] == 4
    assert doc["cv"] == {"kind": "stratified", "n_splits": 3}
    assert [r["name"] for r in doc["rows"]] == ["image", "text", "late", "stacking", "seed-baseline"]
    assert doc["rows"][0]["kind"] == "single" and doc["rows"][0]["fusion"] is None
    assert doc["best"] in {"late", "stacking"}


def test_run_with_a_manifest_and_groups(tmp_path):
    df, y = number_frame(n=150)
    df["label"] = y
    df["speaker"] = np.arange(150) % 5
    df.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "left",
                                 "--label", "label", "--group", "speaker",
                                 "--encoders", "text=test-number", "--json-out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["cv"] == {"kind": "leave-one-group-out", "n_splits": 5}
    assert [r["name"] for r in doc["rows"]] == ["text"]


@pytest.mark.parametrize("args, message", [
    (["run"], "exactly one of --manifest, --views or --dataset"),
    (["run", "--manifest", "nope.csv", "--text", "t", "--label", "l"], "does not exist"),
    (["run", "--views", "image=a.npy"], "--views needs --labels"),
    (["run", "--views", "image", "--labels", "l.npy"], "NAME=VALUE"),
    (["run", "--dataset", "nope"], "unknown dataset"),
])
def test_run_errors_are_messages_not_tracebacks(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_strategy_and_encoder(tmp_path):
    df, y = number_frame(n=60)
    df["label"] = y
    df.to_csv(tmp_path / "m.csv", index=False)
    base = ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "left", "--label", "label"]
    result = runner.invoke(app, base + ["--encoders", "text=magic"])
    assert result.exit_code == 2 and "unknown encoder 'magic'" in result.output
    result = runner.invoke(app, base + ["--encoders", "text=test-number", "--fusion", "nope"])
    assert result.exit_code == 2 and "unknown fusion strategy" in result.output


def test_listing_commands():
    for cmd, expected in [("encoders", "test-number"), ("strategies", "stacking"),
                          ("datasets", "av-digits")]:
        result = runner.invoke(app, [cmd])
        assert result.exit_code == 0, result.output
        assert expected in result.output
    assert "mmfuse" in runner.invoke(app, ["--version"]).output


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mmfuse", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("mmfuse ")


@pytest.fixture
def seed_arrays(tmp_path):
    views, y = make_views(n=160)
    for name, arr in (("a", views["a"]), ("b", views["b"]), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    return tmp_path, ["--views", f"a={tmp_path/'a.npy'},b={tmp_path/'b.npy'}",
                      "--labels", str(tmp_path / "y.npy")]


def test_evaluate_with_missing_adds_robustness(seed_arrays):
    tmp, source = seed_arrays
    out = tmp / "r.json"
    result = runner.invoke(app, ["evaluate", *source, "--cv", "3", "--fusion", "late",
                                 "--missing", "0,0.5", "--missing-modality", "a",
                                 "--json-out", str(out), "--quiet", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    rob = json.loads(out.read_text())["robustness"]
    assert rob["missing_modality"] == "a" and rob["levels"] == [0.0, 0.5]
    assert {r["name"] for r in rob["rows"]} >= {"a", "b", "late"}


def test_train_then_predict(seed_arrays):
    tmp, source = seed_arrays
    model = tmp / "m.mmfuse"
    result = runner.invoke(app, ["train", *source, "--fusion", "stacking", "--out", str(model)])
    assert result.exit_code == 0, result.output
    views, y = make_views(n=160)
    manifest = tmp / "new.jsonl"
    import pandas as pd

    pd.DataFrame({"a": [list(map(float, r)) for r in views["a"][:10]],
                  "b": [list(map(float, r)) for r in views["b"][:10]],
                  "id": range(10)}).to_json(manifest, orient="records", lines=True)
    out = tmp / "preds.csv"
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(manifest),
                                 "--keep", "id", "--out", str(out)])
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(out)
    assert len(preds) == 10 and "label" in preds and preds["id"].tolist() == list(range(10))
    assert any(c.startswith("proba_") for c in preds.columns)
    result = runner.invoke(app, ["predict", str(tmp / "nope.mmfuse"), "--manifest", str(manifest)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_train_auto_says_what_it_chose(seed_arrays):
    tmp, source = seed_arrays
    model = tmp / "auto.mmfuse"
    result = runner.invoke(app, ["train", *source, "--fusion", "auto", "--out", str(model)])
    assert result.exit_code == 0, result.output
    import mmfuse

    chosen = mmfuse.load(model).fusion_.chosen_name_
    assert f"trained auto (chose {chosen}) on 160 samples" in " ".join(result.output.split())


def test_error_text_with_brackets_is_printed_verbatim(seed_arrays):
    # rich would read "[cv]" as a style tag and drop it
    tmp, source = seed_arrays
    # ("late[cv]" is a valid row now: late fusion with cv weights)
    result = runner.invoke(app, ["run", *source, "--fusion", "late[best]", "--quiet"])
    assert result.exit_code == 2
    assert "late[best]" in result.output and "Traceback" not in result.output


def test_cache_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["cache", "info"])
    assert result.exit_code == 0 and "cache:" in result.output
    result = runner.invoke(app, ["cache", "clear", "--models"])
    assert result.exit_code == 0 and "removed 0 feature rows" in result.output


# -- listings survive a pipe; --json; rich markup escaped (issue 11) --------------------------


def test_listings_are_plain_tab_separated_rows_when_piped():
    result = runner.invoke(app, ["encoders"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "modality", "dim", "needs", "description"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert all(len(r) == 5 for r in rows.values())
    assert rows["efficientnet-lite0"][3] == 'pip install "mmfuse[image]"'  # not cut, not eaten
    assert rows["minilm"][3] == 'pip install "mmfuse[text]"'
    assert "…" not in result.stdout
    result = runner.invoke(app, ["datasets"])
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["name", "modalities", "samples", "classes", "cv", "licence"]
    assert any(r.startswith("sign-digits\t") for r in rows)
    assert all(len(r.split("\t")) == 6 for r in rows)
    result = runner.invoke(app, ["strategies"])
    assert result.stdout.splitlines()[0] == "name\tdescription\tneeds"
    assert any(r.startswith("late\t") for r in result.stdout.splitlines())


def test_listings_as_json_and_one_dataset_in_full():
    from mmfuse.data.datasets import dataset_info, list_datasets
    from mmfuse.encoders import list_encoders
    from mmfuse.fusion import list_fusions

    for command, expected in (("encoders", list_encoders()), ("strategies", list_fusions()),
                              ("datasets", list_datasets())):
        result = runner.invoke(app, [command, "--json"])
        assert result.exit_code == 0
        assert json.loads(result.stdout) == json.loads(json.dumps(expected, default=str))
    info = dataset_info("fsdd")
    result = runner.invoke(app, ["datasets", "fsdd"])
    assert result.exit_code == 0
    assert f"citation: {info['citation']}" in result.stdout.splitlines()  # one line, in full
    assert json.loads(runner.invoke(app, ["datasets", "fsdd", "--json"]).stdout)["name"] == "fsdd"
    result = runner.invoke(app, ["datasets", "nope"])
    assert result.exit_code == 2 and "unknown dataset" in result.output


def test_tables_on_a_terminal_escape_markup(monkeypatch):
    import io

    from rich.console import Console

    import mmfuse.cli.catalogue as cli  # the module that prints the listings

    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buffer, force_terminal=True, width=400,
                                                color_system=None))
    assert runner.invoke(app, ["encoders"]).exit_code == 0
    assert 'pip install "mmfuse[image]"' in buffer.getvalue()
    assert "efficientnet-lite0" in buffer.getvalue()


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch):
    import mmfuse.encoders

    def broken(modality=None):
        raise RuntimeError("the registry is broken")

    monkeypatch.setattr(mmfuse.encoders, "list_encoders", broken)
    result = runner.invoke(app, ["encoders"])
    assert result.exit_code == 2
    assert "RuntimeError: the registry is broken" in result.output
    assert "--debug" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["--debug", "encoders"])
    assert isinstance(result.exception, RuntimeError)  # the traceback is the user's to see
    result = runner.invoke(app, ["--debug", "run"])  # usage errors stay usage errors
    assert result.exit_code == 2 and "exactly one of" in result.output
