"""Classical image encoders: ``pixels``, ``hog``, ``color-hist``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...preprocess.image import RESIZE_MODES, load_image, resize_image
from ..base import Encoder
from ..registry import register_encoder
from ._checks import _check_positive_int, _is_positive_int


_IMAGES_PER_CHUNK = 256  # bounds the float64 temporaries of a HOG batch to a few MB


class _ImageEncoder(Encoder):
    """Shared decoding for the image encoders: RGB or grayscale uint8 at ``size`` x ``size``."""

    modality = "image"

    def _load(self, item: Any, size: int, resize: str, gray: bool) -> np.ndarray:
        _check_positive_int(size, "size")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}")
        img = load_image(item, max_pixels=self.max_pixels, size_hint=size)
        img = resize_image(img.convert("L") if gray else img, size, resize)
        return np.asarray(img, dtype=np.uint8)


@register_encoder("pixels", cost=1.0, modality="image", dim=32 * 32,
                  description="raw grayscale pixels of the image resized to 32x32")
class PixelsEncoder(_ImageEncoder):
    """Raw pixels of the resized image, scaled to [0, 1].

    Parameters
    ----------
    size : int, default=32
        Side of the square the image is resized to.
    resize : {"pad", "crop", "stretch"}, default="pad"
        How to reach a square (see :func:`mmfuse.preprocess.resize_image`).
    grayscale : bool, default=True
        One channel instead of three.
    max_pixels : int, default=50_000_000
        Larger images are refused.

    Examples
    --------
    >>> import numpy as np
    >>> PixelsEncoder(size=8).transform([np.zeros((28, 28), np.uint8)]).shape
    (1, 64)
    """

    name = "pixels"

    def __init__(self, *, size: int = 32, resize: str = "pad", grayscale: bool = True,
                 max_pixels: int = 50_000_000):
        self.size = size
        self.resize = resize
        self.grayscale = grayscale
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        _check_positive_int(self.size, "size")
        return self.size * self.size * (1 if self.grayscale else 3)

    def prepare(self, item: Any) -> np.ndarray:
        return self._load(item, self.size, self.resize, self.grayscale)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack(prepared).reshape(len(prepared), -1)
        return batch.astype(np.float32) / 255.0


@register_encoder("hog", cost=2.0, default=True, modality="image", dim=7 * 7 * 2 * 2 * 9,
                  description="histogram of oriented gradients of the 64x64 grayscale image")
class HogEncoder(_ImageEncoder):
    """Histogram of oriented gradients of the grayscale image (as :func:`skimage.feature.hog`).

    Parameters
    ----------
    size : int, default=64
        Side of the square the image is resized to.
    orientations : int, default=9
        Gradient orientation bins.
    pixels_per_cell : int, default=8
        Side of a cell, in pixels.
    cells_per_block : int, default=2
        Side of a normalisation block, in cells.
    resize : {"pad", "crop", "stretch"}, default="pad"
        How to reach a square.
    max_pixels : int, default=50_000_000
        Larger images are refused.

    Notes
    -----
    ``dim = blocks**2 * cells_per_block**2 * orientations`` with
    ``blocks = size // pixels_per_cell - cells_per_block + 1``.
    """

    name = "hog"

    def __init__(self, *, size: int = 64, orientations: int = 9, pixels_per_cell: int = 8,
                 cells_per_block: int = 2, resize: str = "pad", max_pixels: int = 50_000_000):
        self.size = size
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.resize = resize
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        for param in ("size", "orientations", "pixels_per_cell", "cells_per_block"):
            _check_positive_int(getattr(self, param), param)
        blocks = self.size // self.pixels_per_cell - self.cells_per_block + 1
        if blocks < 1:
            raise ValueError(
                f"size={self.size} holds {self.size // self.pixels_per_cell} cells of "
                f"{self.pixels_per_cell} px per side, fewer than cells_per_block="
                f"{self.cells_per_block}; use a larger size or smaller cells"
            )
        return blocks * blocks * self.cells_per_block**2 * self.orientations

    def prepare(self, item: Any) -> np.ndarray:
        return self._load(item, self.size, self.resize, gray=True)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        dim = self.dim  # validates the parameters once per batch
        images = np.stack(prepared)
        out = np.empty((len(images), dim), dtype=np.float32)
        for start in range(0, len(images), _IMAGES_PER_CHUNK):
            chunk = images[start:start + _IMAGES_PER_CHUNK]
            out[start:start + len(chunk)] = hog_batch(
                chunk, self.orientations, self.pixels_per_cell, self.cells_per_block)
        return out


def hog_batch(images: np.ndarray, orientations: int = 9, pixels_per_cell: int = 8,
              cells_per_block: int = 2) -> np.ndarray:
    """HOG descriptors of a batch of grayscale images, shape (n, H, W) -> (n, dim).

    The same numbers as ``skimage.feature.hog(image, orientations, (p, p), (c, c),
    block_norm="L2-Hys")`` for each image, computed for the whole batch at once: skimage
    loops over blocks in Python and takes milliseconds per image, too slow for thousands.
    """
    images = images.astype(np.float64)
    g_row = np.zeros_like(images)
    g_col = np.zeros_like(images)
    g_row[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
    g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    # Hard binning: bin i holds [i, i + 1) * 180 / orientations, as skimage computes it.
    upper_edges = (180.0 / orientations) * np.arange(1, orientations)
    bins = np.searchsorted(upper_edges, orientation, side="right")

    n, height, width = images.shape
    cells_r, cells_c = height // pixels_per_cell, width // pixels_per_cell
    crop = (slice(None), slice(0, cells_r * pixels_per_cell), slice(0, cells_c * pixels_per_cell))
    # One weighted bincount over (image, cell, orientation bin) builds every histogram.
    cell_of_pixel = (np.arange(cells_r * pixels_per_cell)[:, None] // pixels_per_cell * cells_c
                     + np.arange(cells_c * pixels_per_cell)[None, :] // pixels_per_cell)
    n_cells = cells_r * cells_c
    index = ((np.arange(n)[:, None, None] * n_cells + cell_of_pixel) * orientations
             + bins[crop])
    histogram = np.bincount(index.ravel(), weights=magnitude[crop].ravel(),
                            minlength=n * n_cells * orientations)
    histogram = histogram.reshape(n, cells_r, cells_c, orientations) / pixels_per_cell**2

    blocks_r, blocks_c = cells_r - cells_per_block + 1, cells_c - cells_per_block + 1
    blocks = np.stack([
        np.stack([histogram[:, i:i + blocks_r, j:j + blocks_c] for j in range(cells_per_block)],
                 axis=3)
        for i in range(cells_per_block)
    ], axis=3)  # (n, blocks_r, blocks_c, cells_per_block, cells_per_block, orientations)
    eps = 1e-5
    norm_axes = (3, 4, 5)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=norm_axes, keepdims=True) + eps**2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=norm_axes, keepdims=True) + eps**2)
    return blocks.reshape(n, -1).astype(np.float32)


@register_encoder("color-hist", cost=1.0, modality="image", dim=8 * 4 * 4,
                  description="joint HSV colour histogram (8x4x4 bins), L1-normalised")
class ColorHistogramEncoder(_ImageEncoder):
    """Joint hue-saturation-value histogram, normalised to sum to 1.

    Parameters
    ----------
    bins : (int, int, int), default=(8, 4, 4)
        Bins for hue, saturation and value; ``dim`` is their product.
    size : int, default=64
        The image is first resized (stretched) to ``size`` x ``size``: plenty for a
        histogram, and it makes the cost independent of the photo's resolution.
    max_pixels : int, default=50_000_000
        Larger images are refused.
    """

    name = "color-hist"

    def __init__(self, *, bins: tuple[int, int, int] = (8, 4, 4), size: int = 64,
                 max_pixels: int = 50_000_000):
        self.bins = bins
        self.size = size
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        return math.prod(self._bins())

    def _bins(self) -> tuple[int, int, int]:
        bins = tuple(self.bins)
        if len(bins) != 3 or not all(_is_positive_int(b) for b in bins):
            raise ValueError(f"bins must be three positive ints (hue, saturation, value); "
                             f"got {self.bins!r}")
        return bins

    def prepare(self, item: Any) -> np.ndarray:
        _check_positive_int(self.size, "size")
        img = load_image(item, max_pixels=self.max_pixels, size_hint=self.size)
        img = resize_image(img, self.size, "stretch").convert("HSV")
        return np.asarray(img, dtype=np.uint8)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        bins = np.array(self._bins())
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for row, hsv in enumerate(prepared):
            # 0..255 per channel -> bin index per channel -> one joint index per pixel.
            index = (hsv.reshape(-1, 3).astype(np.int64) * bins) >> 8
            joint = np.ravel_multi_index(index.T, bins)
            counts = np.bincount(joint, minlength=out.shape[1])
            out[row] = counts / counts.sum()
        return out
