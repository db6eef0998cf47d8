"""What every pretrained encoder shares: optional-dependency probing, ONNX Runtime sessions,
the torch -> ONNX export with its disk cache, and the :class:`PretrainedEncoder` base
(lazy loading, device/threads, pickling without the session)."""

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

from ..._errors import MissingDependencyError
from ..base import Encoder

log = logging.getLogger("mmfuse.encoders.pretrained")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEVICES = ("cpu", "cuda")
#: Default batch of the PyTorch CUDA path (``batch_size=None`` on CUDA).
CUDA_BATCH = 256
#: Bump when the export recipe changes: exported files of the old recipe are then ignored.
EXPORT_VERSION = 2

#: Packages installed apart, with --no-deps: their declared dependencies cannot be installed
#: beside numpy 2 (aisfx pins numpy 1.23 and librosa). A missing one is named with this line.
NO_DEPS_LINES: dict[str, str] = {"aisfx": "pip install --no-deps aisfx==0.1.2"}
#: blake2b-128 of aisfx 0.1.2's models/checkpoint.pth, which the sound-effects network is
#: exported from: the sound-effects weights hash (fingerprints, caches and saved models key
#: on it).
AISFX_CHECKPOINT_HASH = "7cebc4d3e7d8f7ab73f5e8150f4c2bff"
SESSION_LOCK = threading.Lock()


# -- dependency helpers ----------------------------------------------------------------------


def missing_dependency(module: str, extra: str) -> MissingDependencyError:
    line = f'pip install "mmfuse[{extra}]"'
    if module in NO_DEPS_LINES:
        line += f" && {NO_DEPS_LINES[module]}"
    return MissingDependencyError(
        f"{module!r} is needed for this encoder but is not installed; install it with: {line}")


def import_optional(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(module, extra) from exc


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def package_file(module: str, extra: str, *parts: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise missing_dependency(module, extra)
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise MissingDependencyError(
            f"the package {module!r} is installed but its file {path} is missing; reinstall "
            f"it with: {NO_DEPS_LINES.get(module, f'pip install --force-reinstall {module}')}")
    return path


def asset(*parts: str) -> Path:
    """A file shipped inside mmfuse (``mmfuse/encoders/assets/``)."""
    path = Path(__file__).resolve().parents[1].joinpath("assets", *parts)
    if not path.is_file():
        raise MissingDependencyError(
            f"mmfuse's own file {path} is missing: the installation is incomplete; "
            'reinstall it with: pip install --force-reinstall "mmfuse[pretrained]"')
    return path


def onnx_providers(device: str, extra: str = "pretrained") -> list[Any]:
    """ONNX Runtime execution providers for ``device`` ("cpu", "cuda" or "cuda:N")."""
    from ...devices import check_device

    ort = import_optional("onnxruntime", extra)
    kind, _, index = check_device(device, DEVICES).partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ValueError(
            f"device={device!r} needs onnxruntime with the CUDA execution provider (pip "
            f"install onnxruntime-gpu) and a CUDA GPU; available providers: {available}")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def make_session(path: Path, device: str, threads: int | None, extra: str) -> Any:
    ort = import_optional("onnxruntime", extra)
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
    from ...cache import models_dir

    return models_dir() / f"{name}-{weights_hash[:16]}-x{EXPORT_VERSION}.onnx"


def exported_model(name: str, weights_hash: str, export: Callable[[Path], None],
                    extra: str) -> Path:
    """Return the cached ONNX export, exporting it first if it is missing or unreadable.

    The export is written to a temporary file and renamed into place, under a file lock,
    so a killed export or two processes exporting at once never leave a half-written model.
    """
    from ...cache import FileLock

    target = exported_model_path(name, weights_hash)
    if loads(target, extra):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_suffix(".lock")):
        if loads(target, extra):  # another process finished it while we waited
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


def loads(path: Path, extra: str) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    ort = import_optional("onnxruntime", extra)
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ORT raises its own zoo on a damaged protobuf
        return False
    return True


def torch_export(module: Any, example: Any, path: Path, input_name: str, output_name: str,
                  dynamic: dict[int, str], extra: str) -> None:
    """torch -> ONNX, then check that ONNX Runtime reproduces torch on the example."""
    torch = import_optional("torch", extra)
    import_optional("onnx", extra)  # the TorchScript exporter needs it
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
    ort = import_optional("onnxruntime", extra)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {input_name: example.numpy()})[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"ONNX export at {path} does not reproduce the torch model "
                           f"(max difference {np.abs(got - expected).max():.3g})")


def check_torch_device(device: Any, precision: Any) -> None:
    """Device and precision of an encoder with a PyTorch path: one of DEVICES (or
    "cuda:N"), present on this machine (else :class:`~mmfuse.devices.DeviceError`)."""
    from ...devices import check_device, check_precision, resolve_device

    check_precision(precision, resolve_device(check_device(device, DEVICES)))


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
    def device_for(cls, device: str) -> str:
        """On CUDA, an encoder with a PyTorch path gets the GPU; an ONNX-only one gets it
        when onnxruntime-gpu provides the CUDA execution provider, else the CPU."""
        from ... import devices

        if device == "cpu" or cls.cuda_backend == "torch":
            return device
        return device if devices.onnxruntime_has_cuda() else "cpu"

    def to(self, device: str) -> "PretrainedEncoder":
        """Run on ``device`` (resolved) from now on; the loaded model and its sessions are
        dropped and rebuilt there on the next use. Returns self."""
        self.device = self.device_for(device)
        for key in [k for k in vars(self) if k.startswith("_")]:
            delattr(self, key)  # runtime state (model sessions), see __getstate__
        return self

    @classmethod
    def available(cls) -> bool:
        """True when every package the encoder needs is installed (nothing is imported)."""
        return all(installed(module) for module in cls.requires)

    def load(self) -> "PretrainedEncoder":
        """Load the model now (otherwise it loads on first use); returns self."""
        self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> None:
        if getattr(self, "_loaded", False):
            return
        with SESSION_LOCK:
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


class TorchExportedEncoder(PretrainedEncoder):
    """A pretrained encoder whose network is a PyTorch model exported to ONNX on first use,
    cached under ``<cache dir>/models/`` by weights hash (:func:`exported_model`).

    On the CPU it runs the export in ONNX Runtime; on CUDA (or whenever :meth:`_uses_torch`
    says so) it runs the PyTorch model itself. It is available when the export can be made
    (``export_requires`` installed) or an export made earlier is in the cache. A subclass
    names its weights file in ``weights_file`` (the package, then the path inside it) and
    implements :meth:`torch_module` and :meth:`_export`.
    """

    #: ``(package, *path)`` of the PyTorch weights the network is built from.
    weights_file: ClassVar[tuple[str, ...]] = ()
    #: Whether the PyTorch path feeds NHWC images in channels-last memory format.
    channels_last: ClassVar[bool] = False

    @classmethod
    def available(cls) -> bool:
        if not super().available():
            return False
        if all(installed(m) for m in cls.export_requires):
            return True
        try:  # without torch, an export made earlier still serves
            return exported_model_path(cls.name, cls._weights_hash_static()).is_file()
        except Exception:  # noqa: BLE001
            return False

    @classmethod
    def _weights_path(cls) -> Path:
        package, *parts = cls.weights_file
        return package_file(package, cls.extra, *parts)

    @classmethod
    def _weights_hash_static(cls) -> str:
        from ...cache import hash_file

        return hash_file(cls._weights_path(), memo=True)

    def weights_hash(self) -> str:
        return self._weights_hash_static()

    def _uses_torch(self) -> bool:
        return str(self.device).startswith("cuda")

    def _load(self) -> None:
        self._runner = None
        if self._uses_torch():
            from ..gpu import TorchRunner

            self._runner = TorchRunner(self.torch_module(), self.device,
                                       getattr(self, "precision", "fp32"),
                                       channels_last=self.channels_last, threads=self.threads)
            return
        path = exported_model(self.name, self.weights_hash(), self._export, self.extra)
        self._session = make_session(path, self.device, self.threads, self.extra)
        self._input = self._session.get_inputs()[0].name

    def torch_module(self) -> Any:  # pragma: no cover - abstract
        """The PyTorch network on the CPU, in eval mode: the one exported to ONNX and the
        one the CUDA path runs."""
        raise NotImplementedError

    def _export(self, path: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def mean_over_parts(run: Callable[[np.ndarray], np.ndarray], parts: list[np.ndarray], dim: int,
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
