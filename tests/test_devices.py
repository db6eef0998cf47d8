"""Devices: resolving cpu/cuda/auto, a fitted model moving itself, the CLI's --device.

CUDA itself is tested in the tests marked ``cuda`` (skipped without a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_views
from mmfuse import InputError, MmfuseError
from mmfuse.cli import app
from mmfuse.devices import DeviceError, check_device, check_precision, cuda_available, resolve_device

runner = CliRunner()
no_cuda = pytest.mark.skipif(cuda_available(), reason="a CUDA device is present")


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if cuda_available() else "cpu")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", "", 3, None])
def test_not_a_device(device):
    with pytest.raises(DeviceError, match="device must be one of"):
        resolve_device(device)


@no_cuda
def test_cuda_without_cuda_is_a_device_error_not_an_input_error():
    with pytest.raises(DeviceError, match="no CUDA device is available") as info:
        resolve_device("cuda")
    # on_error="skip" skips bad items (InputError), never a missing device
    assert isinstance(info.value, MmfuseError) and not isinstance(info.value, InputError)


def test_precision_rules():
    assert check_precision("bf16", "cpu") == "bf16"
    assert check_precision("fp16", "cuda") == "fp16"
    with pytest.raises(DeviceError, match="needs device='cuda'"):
        check_precision("fp16", "cpu")
    with pytest.raises(DeviceError, match="precision must be one of"):
        check_precision("fp64", "cpu")


def test_check_device_names_the_kinds_without_asking_the_machine():
    assert check_device("cuda:3") == "cuda:3"  # whether there is a 4th GPU is resolve's job
    with pytest.raises(DeviceError, match=r"device must be one of \['cpu', 'cuda'\]"):
        check_device("auto", ("cpu", "cuda"))


def test_the_device_helpers_import_nothing_above_them():
    import ast
    from pathlib import Path

    import mmfuse.devices as devices

    tree = ast.parse(Path(devices.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert imported == {"_errors"}


def test_model_to_moves_heads_and_keeps_predictions():
    pytest.importorskip("torch")
    from mmfuse import MultimodalClassifier

    views, y = make_views(n=160)
    model = MultimodalClassifier(fusion="gmu", random_state=0,
                                 fusion_params={"max_epochs": 3, "n_members": 1,
                                                "device": "cpu"}).fit(views, y)
    before = model.predict_proba(views)
    model.fusion_.device_ = "elsewhere"  # as if trained on another device
    model.fusion_.module()  # built on the old device
    assert model.to("cpu") is model
    assert model.fusion_.device_ == "cpu" and "_module" not in vars(model.fusion_)
    np.testing.assert_allclose(model.predict_proba(views), before, atol=1e-6)


@no_cuda
@pytest.mark.parametrize("command", [
    ["run", "--dataset", "sign-av", "--fusion", "late"],
    ["train", "--dataset", "sign-av", "--save-model", "never.mmfuse"],
    ["serve", "never.mmfuse"],
    ["predict", "never.mmfuse", "--manifest", "never.csv"],
])
def test_cli_device_cuda_without_cuda_exits_2_without_a_traceback(command, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "--device", "cuda", "--no-progress"]
                           if command[0] == "run" else [*command, "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "no CUDA device is available" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "never.mmfuse").exists()


def test_cli_rejects_an_unknown_device():
    result = runner.invoke(app, ["run", "--dataset", "sign-av", "--device", "tpu"])
    assert result.exit_code == 2 and "'tpu' is not one of 'auto', 'cpu', 'cuda'" in result.output


def test_cli_device_cpu_runs(tmp_path):
    views, y = make_views(n=120)
    np.save(tmp_path / "a.npy", views["a"])
    np.save(tmp_path / "b.npy", views["b"])
    np.save(tmp_path / "y.npy", y)
    result = runner.invoke(app, ["run", "--views", f"image={tmp_path / 'a.npy'},"
                                 f"text={tmp_path / 'b.npy'}", "--labels",
                                 str(tmp_path / "y.npy"), "--cv", "3", "--fusion", "late",
                                 "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "best:" in result.output
