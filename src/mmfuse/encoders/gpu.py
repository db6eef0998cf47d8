"""The PyTorch path of the pretrained encoders that ship PyTorch weights (CUDA, or bf16).

With ``device="cuda"`` (or a ``precision`` other than fp32), ``efficientnet-lite0`` and
``sound-effects`` run their PyTorch models here instead of the ONNX export:

* the model stays on the device, in eval mode, under ``torch.inference_mode``; the image
  model is converted to channels-last (the layout its uint8 NHWC input already has once
  permuted to NCHW, so no copy is made on the way in);
* a batch is stacked by the calling thread straight into a pinned host buffer, copied to the
  device with one non-blocking transfer, run, and copied back with one transfer: no
  per-item host-device round trip; decoding stays in the extraction's CPU worker threads
  (:mod:`mmfuse.extract`), which keep filling the next batches meanwhile;
* ``precision="fp16"`` / ``"bf16"`` run the model under ``torch.autocast`` (convolutions and
  matrix products in half precision, reductions and normalisation in fp32); the output is
  returned as float32. Half-precision features differ from fp32 ones, so the precision is
  part of the encoder's fingerprint (an fp16 feature is never served from the cache as an
  fp32 one); the device is not, since fp32 features agree across devices within the
  tolerance measured by ``benchmarks/bench_gpu.py``.

torch is imported only when a model is built here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TorchRunner", "efficientnet_features"]


def efficientnet_features(torch: Any, weights_path: Path, mean: tuple[float, ...],
                          std: tuple[float, ...]) -> Any:
    """EfficientNet-Lite0 as a module mapping uint8 NHWC pixels (B, 224, 224, 3) to the
    pooled 1280-d features: normalisation by the per-channel ``mean``/``std`` (ImageNet's,
    on a [0, 1] scale), NCHW, ``extract_features``, spatial mean.

    The same module is exported to ONNX for the CPU path, so both paths compute one model.
    """
    from efficientnet_lite_pytorch import EfficientNet

    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    model.load_state_dict(state)
    # Never model.set_swish(): it swaps ReLU6 for Swish and silently breaks Lite models.

    class Features(torch.nn.Module):
        """uint8 NHWC pixels -> ImageNet-normalised NCHW -> pooled last feature map."""

        def __init__(self, net: Any):
            super().__init__()
            self.net = net
            self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1) * 255)
            self.register_buffer("scale", 1.0 / (torch.tensor(std).view(1, 3, 1, 1)
                                                 * 255))

        def forward(self, pixels: Any) -> Any:
            x = (pixels.permute(0, 3, 1, 2).float() - self.shift) * self.scale
            return self.net.extract_features(x).mean((2, 3))

    return Features(model).eval()


class TorchRunner:
    """Run a torch module on whole batches on one device, at one precision.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a batch tensor (first axis: items) to a (batch, dim) tensor.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (already checked against the machine).
    precision : {"fp32", "fp16", "bf16"}
        fp16/bf16 run under ``torch.autocast``; the output is always float32.
    channels_last : bool, default=False
        Convert the module's 4-D weights to channels-last (convolutional image models).
    threads : int or None
        torch intra-op threads while running on the CPU (None: leave torch's setting).
    """

    def __init__(self, module: Any, device: str, precision: str = "fp32", *,
                 channels_last: bool = False, threads: int | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.precision = precision
        self.threads = threads
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            # one input shape per batch size: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        module = module.eval().to(self.device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self._staging: Any = None  # pinned host buffer, grown on demand

    def _pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A pinned host array of ``shape``/``dtype`` (a view of a reused buffer)."""
        torch = self.torch
        need = int(np.prod(shape))
        tdtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        if (self._staging is None or self._staging.dtype != tdtype
                or self._staging.numel() < need):
            self._staging = torch.empty(need, dtype=tdtype, pin_memory=True)
        return self._staging[:need].numpy().reshape(shape)

    def run_items(self, items: list[np.ndarray]) -> np.ndarray:
        """Stack equally shaped items (straight into pinned memory on CUDA) and run them."""
        first = np.asarray(items[0])
        shape = (len(items), *first.shape)
        if self.cuda:
            batch = self._pinned(shape, first.dtype)
            np.stack(items, out=batch)
        else:
            batch = np.stack(items)
        return self(batch)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(batch, ...) numpy array -> (batch, dim) float32 numpy array."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.cuda:
            if not x.is_pinned():
                staging = self._pinned(tuple(batch.shape), batch.dtype)
                staging[...] = batch
                x = torch.from_numpy(staging)
            x = x.to(self.device, non_blocking=True)
        before = torch.get_num_threads()
        if self.threads is not None and not self.cuda:
            torch.set_num_threads(max(1, int(self.threads)))
        try:
            with torch.inference_mode():
                if self.dtype is None:
                    out = self.module(x)
                else:
                    with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                        out = self.module(x)
                # one device-to-host copy per batch; it waits for the batch to finish
                return out.float().cpu().numpy()
        finally:
            torch.set_num_threads(before)
