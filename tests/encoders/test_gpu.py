"""The PyTorch path of the pretrained encoders (mmfuse.encoders.gpu).

On a machine without CUDA the PyTorch path runs on the CPU (the same module the CUDA path
runs) and is compared with the ONNX export; the tests marked ``cuda`` run it on the GPU and
are skipped without one."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.devices import DeviceError, cuda_available
from mmfuse.encoders import create_encoder
from mmfuse.extract import extract_features

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("efficientnet_lite_pytorch")
from mmfuse.encoders.gpu import TorchRunner  # noqa: E402

cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def shared_model_cache(tmp_path_factory, monkeypatch):
    # the same models folder as tests/encoders/test_pretrained.py: export once per session
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "mmfuse-cache"))


@pytest.fixture(scope="module")
def photos(data_root):
    return [str(p) for p in sorted((data_root / "sign-digits" / "Dataset").glob("*/*.JPG"))[::700]]


@pytest.fixture(scope="module")
def image_encoder():
    return create_encoder("efficientnet-lite0", threads=1).load()


@pytest.fixture(scope="module")
def pixels(image_encoder, photos):
    return [image_encoder.prepare(p) for p in photos]


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x.float().flatten(1) * 2


def test_runner_stacks_items_and_returns_float32():
    items = [np.full((2, 3), i, dtype=np.uint8) for i in range(4)]
    out = TorchRunner(Doubler(), "cpu").run_items(items)
    assert out.dtype == np.float32 and out.shape == (4, 6)
    np.testing.assert_array_equal(out[:, 0], [0, 2, 4, 6])
    half = TorchRunner(torch.nn.Linear(6, 2), "cpu", "bf16")(np.ones((3, 6), np.float32))
    assert half.dtype == np.float32 and half.shape == (3, 2)


def test_torch_fp32_path_matches_the_onnx_export(image_encoder, pixels):
    runner = TorchRunner(image_encoder.torch_module(), "cpu", channels_last=True, threads=1)
    got = runner.run_items(pixels)
    expected = image_encoder.embed(pixels)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_precision_is_in_the_fingerprint_and_device_is_not():
    fp32 = create_encoder("efficientnet-lite0").fingerprint
    assert create_encoder("efficientnet-lite0", device="cuda").fingerprint == fp32
    assert create_encoder("efficientnet-lite0", device="cuda", batch_size=512).fingerprint == fp32
    fp16 = create_encoder("efficientnet-lite0", device="cuda", precision="fp16").fingerprint
    bf16 = create_encoder("efficientnet-lite0", precision="bf16").fingerprint
    assert len({fp32, fp16, bf16}) == 3
    assert "precision" not in create_encoder("efficientnet-lite0").config()


def test_bf16_on_the_cpu_stays_close_to_fp32(image_encoder, pixels, photos):
    enc = create_encoder("efficientnet-lite0", precision="bf16", threads=1)
    got = enc.transform(photos)
    expected = image_encoder.embed(pixels)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() > 0.98, cos


def test_batch_and_workers_follow_the_device():
    cpu = create_encoder("efficientnet-lite0")
    gpu = create_encoder("efficientnet-lite0", device="cuda")
    assert (cpu.effective_batch_size, cpu.decode_workers) == (32, 2)
    assert gpu.effective_batch_size == 256 and gpu.decode_workers >= 2
    assert create_encoder("efficientnet-lite0", batch_size=8, device="cuda").effective_batch_size == 8
    assert create_encoder("sound-effects", device="cuda").effective_batch_size == 256


@pytest.mark.skipif(cuda_available(), reason="a CUDA device is present")
def test_cuda_encoder_without_cuda_fails_whole_not_per_item(photos):
    enc = create_encoder("efficientnet-lite0", device="cuda")
    with pytest.raises(DeviceError, match="no CUDA device is available") as info:
        extract_features(enc, photos[:2], cache=None, on_error="skip")
    assert not isinstance(info.value, InputError)
    with pytest.raises(DeviceError, match="needs device='cuda'"):
        create_encoder("efficientnet-lite0", precision="fp16").load()
    with pytest.raises(ValueError, match="device must be one of"):
        create_encoder("sound-effects", device="auto").load()


def test_sound_effects_torch_module_matches_the_onnx_export():
    pytest.importorskip("aisfx")
    enc = create_encoder("sound-effects", threads=1).load()
    blocks = np.random.default_rng(0).random((5, enc.block, enc.n_mels)).astype(np.float32)
    got = TorchRunner(enc.torch_module(), "cpu", threads=1)(blocks)
    expected = enc._session.run(None, {enc._input: blocks})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


# -- on a CUDA device --------------------------------------------------------------------------


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 0.1)])
def test_cuda_image_features_match_the_cpu_path(image_encoder, pixels, photos, precision, atol):
    enc = create_encoder("efficientnet-lite0", device="cuda", precision=precision)
    got, present, _ = extract_features(enc, photos, cache=None)
    assert present.all()
    np.testing.assert_allclose(got, image_encoder.embed(pixels), atol=atol)


@cuda
@pytest.mark.cuda
def test_cuda_sound_effects_match_the_cpu_path(data_root):
    pytest.importorskip("aisfx")
    clips = [str(p) for p in sorted((data_root / "fsdd" / "recordings").glob("*.wav"))[::700]]
    cpu = create_encoder("sound-effects").transform(clips)
    gpu = create_encoder("sound-effects", device="cuda").transform(clips)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)


@cuda
@pytest.mark.cuda
def test_cuda_heads_train_and_predict():
    from conftest import make_views
    from mmfuse.fusion import create_fusion

    views, y = make_views(n=400)
    head = create_fusion("gmu", device="cuda", max_epochs=20, random_state=0).fit(views, y)
    assert head.device_ == "cuda"
    assert (head.predict(views) == y).mean() > 0.8
