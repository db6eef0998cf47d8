"""Where models run: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) and ``"auto"``.

``"auto"`` means CUDA when PyTorch sees a CUDA device, else the CPU. Asking for ``"cuda"``
on a machine without one is a :class:`DeviceError` (an :class:`~mmfuse.MmfuseError`, so the
CLI turns it into a one-line message and exit code 2), never a silent CPU fallback.

What runs where with ``device="cuda"``:

* ``efficientnet-lite0`` and ``sound-effects`` run their PyTorch models on the GPU (eager,
  channels-last for the image model, ``precision`` fp32/fp16/bf16; see
  :mod:`mmfuse.encoders.gpu`), fed with whole batches decoded by CPU worker threads: one
  host-to-device copy (from pinned memory) and one device-to-host copy per batch.
* The ONNX-only encoders (``minilm``, ``speech-embedding``) need onnxruntime-gpu for CUDA;
  :func:`encoder_device` leaves them on the CPU when it is not installed.
* The learned fusion heads (``gmu``, ``attention``, ``lowrank``) keep the whole training
  set on the device and train there (see :mod:`mmfuse.fusion.neural`).

Importing this module is cheap: torch is imported only to ask about CUDA.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import DeviceError, MmfuseError  # noqa: F401 (DeviceError lives here for users)

__all__ = ["DEVICES", "PRECISIONS", "DeviceError", "check_precision", "cuda_available",
           "encoder_device", "head_params", "place_encoders", "resolve_device", "to_device"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16")
#: The learned heads: strategies that take ``device``.


def cuda_available() -> bool:
    """True when PyTorch is installed and sees at least one CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def resolve_device(device: Any) -> str:
    """``"auto"`` -> ``"cuda"`` or ``"cpu"``; ``"cuda"``/``"cuda:N"`` checked against the
    machine; ``"cpu"`` as is.

    Raises
    ------
    DeviceError
        For anything that is not one of ``DEVICES`` (or ``"cuda:N"``), and for CUDA on a
        machine without it.
    """
    text = str(device) if isinstance(device, str) else None
    kind, _, index = (text or "").partition(":")
    if text is None or kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceError(f"device must be one of {list(DEVICES)} (or 'cuda:N'); got {device!r}")
    if kind == "cpu":
        return "cpu"
    if kind == "auto":
        return "cuda" if cuda_available() else "cpu"
    if not cuda_available():
        torch_note = ("PyTorch is not installed" if importlib.util.find_spec("torch") is None
                      else _torch_build_note())
        raise DeviceError(f"device={device!r} was asked for but no CUDA device is available "
                          f"({torch_note}); use device='cpu' or 'auto'")
    if index and int(index) >= _cuda_count():
        raise DeviceError(f"device={device!r}: this machine has {_cuda_count()} CUDA "
                          f"device(s), numbered from 0")
    return text


def _torch_build_note() -> str:
    import torch

    if torch.version.cuda is None:
        return f"this PyTorch {torch.__version__} is a CPU-only build"
    return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"


def check_precision(precision: Any, device: str) -> str:
    """Validate ``precision`` for a resolved ``device``: fp16 needs CUDA; returns it."""
    if precision not in PRECISIONS:
        raise DeviceError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise DeviceError("precision='fp16' needs device='cuda' (half-precision kernels on "
                          "the CPU are slow and not what the tolerance was measured on); use "
                          "'fp32', or 'bf16' on the CPU")
    return precision


# -- placing a whole run ----------------------------------------------------------------------


def encoder_device(name: str, device: str) -> str | None:
    """The device an encoder registered as ``name`` gets when the run asks for ``device``
    (already resolved: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``).

    None when the encoder takes no ``device`` (the classical ones run on the CPU). On CUDA,
    encoders with a PyTorch path get the GPU; ONNX-only ones get it when onnxruntime-gpu
    provides the CUDA execution provider, else the CPU.
    """
    from .encoders.registry import ENCODERS, load_builtin as _load_builtin

    _load_builtin()
    builder = ENCODERS.entry(name).builder
    try:
        takes = "device" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        return None
    if device == "cpu":
        return "cpu"
    if getattr(builder, "cuda_backend", "onnxruntime") == "torch":
        return device
    return device if _onnxruntime_has_cuda() else "cpu"


def _onnxruntime_has_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def place_encoders(spec: Any, columns: Any, device: str) -> Any:
    """An encoder spec (``{column: name}`` or ``"auto"``) with every encoder that takes a
    device built for ``device`` (resolved). Columns of pre-extracted arrays (spec None)
    stay as they are."""
    from .encoders.base import Encoder
    from .encoders.registry import create_encoder
    from .encoders.featurizer import is_passthrough, resolve_encoders

    if spec is None:
        return None
    out: dict[str, Any] = {}
    for col, enc in resolve_encoders(spec, columns).items():
        if isinstance(enc, str) and "+" in enc:
            out[col] = enc  # a concatenation: its parts run where they run
        elif isinstance(enc, str) and not is_passthrough(enc):
            where = encoder_device(enc, device)
            out[col] = enc if where is None else create_encoder(enc, device=where)
        elif isinstance(enc, Encoder) and "device" in vars(enc):
            placed = create_encoder(enc)
            placed.device = encoder_device(enc.name, device) or placed.device
            out[col] = placed
        else:
            out[col] = enc
    return out


def head_params(strategies: Sequence[str], device: str,
                params: Mapping[str, Mapping[str, Any]] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Per-strategy parameters (as ``evaluate(fusion_params=...)`` takes them) putting the
    learned heads on ``device``, directly or as candidates of ``auto``."""
    from .fusion.base import FUSIONS, fusions_with

    heads = fusions_with(takes_device=True)
    out = {k: dict(v) for k, v in (params or {}).items()}
    for name in strategies:
        if name in heads:
            out.setdefault(name, {})["device"] = device
        elif name in FUSIONS.names() and _takes_candidate_params(FUSIONS.entry(name).builder):
            # a strategy choosing among others (``auto``): its head candidates on ``device``
            candidate = dict(out.setdefault(name, {}).get("candidate_params") or {})
            for head in heads:
                candidate[head] = {**dict(candidate.get(head, {})), "device": device}
            out[name]["candidate_params"] = candidate
    return out


def _takes_candidate_params(builder: Any) -> bool:
    """Whether a strategy class passes parameters on to candidate strategies (its own
    ``candidate_params`` parameter declares it)."""
    names = getattr(builder, "_get_param_names", None)
    return callable(names) and "candidate_params" in names()


def to_device(model: Any, device: str) -> Any:
    """Move a fitted (or loaded) :class:`~mmfuse.MultimodalClassifier` to ``device``
    (resolved): its encoders as :func:`encoder_device` places them, its learned heads
    (alone, or inside ``auto``) for prediction. Models reload lazily on their next use.
    Returns the model."""
    from .fusion.neural import NeuralFusion

    for enc in getattr(model, "encoders_", {}).values():
        if hasattr(enc, "device") and "device" in vars(enc):
            enc.device = encoder_device(enc.name, device) or enc.device
            for key in [k for k in vars(enc) if k.startswith("_")]:
                delattr(enc, key)  # runtime state (model sessions): rebuilt on the new device

    seen: set[int] = set()

    def walk(obj: Any, depth: int = 0) -> None:
        if id(obj) in seen or depth > 6:
            return
        seen.add(id(obj))
        if isinstance(obj, NeuralFusion):
            if hasattr(obj, "device_"):
                obj.device_ = "cuda" if device.startswith("cuda") else "cpu"
            obj.__dict__.pop("_module", None)
            return
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item, depth + 1)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("mmfuse"):
            for item in vars(obj).values():
                walk(item, depth + 1)

    walk(getattr(model, "fusion_", None))
    return model
