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
  :func:`mmfuse.placement.encoder_device` leaves them on the CPU when it is not installed.
* The learned fusion heads (``gmu``, ``attention``, ``lowrank``) keep the whole training
  set on the device and train there (see :mod:`mmfuse.fusion.neural`).

This is the bottom layer of device handling: it imports nothing of mmfuse but its errors,
and the encoders and the fusion heads alike check and resolve their ``device`` here. Placing
a whole run (which encoder and head goes where) is :mod:`mmfuse.placement`; a fitted model
moves itself with ``model.to(device)``.

Importing this module is cheap: torch is imported only to ask about CUDA.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ._errors import DeviceError, MmfuseError  # noqa: F401 (DeviceError lives here for users)

__all__ = ["DEVICES", "PRECISIONS", "DeviceError", "check_device", "check_precision",
           "cuda_available", "onnxruntime_has_cuda", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16")


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
    text = check_device(device)
    kind, _, index = text.partition(":")
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


def check_device(device: Any, kinds: tuple[str, ...] = DEVICES) -> str:
    """``device`` if it is one of ``kinds`` (or ``"cuda:N"``), without asking the machine.

    Raises
    ------
    DeviceError
        For anything else.
    """
    text = device if isinstance(device, str) else None
    kind, _, index = (text or "").partition(":")
    if text is None or kind not in kinds or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceError(f"device must be one of {list(kinds)} (or 'cuda:N'); got {device!r}")
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


def onnxruntime_has_cuda() -> bool:
    """True when onnxruntime is installed with the CUDA execution provider."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
