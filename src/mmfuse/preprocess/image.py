"""Image decoding and preprocessing: any supported input becomes an RGB :class:`PIL.Image.Image`.

Everything here is a pure function of its arguments; errors are :class:`~mmfuse.InputError`
naming the file (or describing the array) and what was expected.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .._errors import InputError, require
from .._io import read_input_file

Size = int | tuple[int, int]

RESIZE_MODES = ("crop", "pad", "stretch")
LAYOUTS = ("HWC", "CHW")
WHITE = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112

# What Pillow raises on damaged or unsupported files (it has no common base class).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
                  struct.error, zlib.error)


def load_image(
    item: Any,
    *,
    max_pixels: int | None = 50_000_000,
    allow_unsafe_svg: bool = False,
    size_hint: Size | None = None,
) -> Image.Image:
    """Decode an image from a path, encoded bytes, a PIL image or an array, as RGB.

    Transparency is composited on white, palette / grayscale / 16-bit / CMYK images are
    converted to 8-bit RGB and the EXIF orientation tag is applied. The result carries
    pixels only: EXIF (GPS...), XMP, ICC profiles and comments are left behind.

    Parameters
    ----------
    item : str, os.PathLike, bytes, PIL.Image.Image or numpy.ndarray
        A file path (PNG, JPEG, ... or SVG), the encoded bytes of such a file, a PIL image,
        or an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) holding uint8,
        uint16 or floats in [0, 1].
    max_pixels : int or None, default=50_000_000
        Refuse images with more pixels than this (after JPEG draft reduction, see
        ``size_hint``) instead of exhausting memory. ``None`` disables the limit, but
        Pillow's own decompression-bomb guard still applies.
    allow_unsafe_svg : bool, default=False
        Let SVG files use XML entities and fetch external files. Only for trusted files.
    size_hint : int or (int, int), optional
        The smallest size the caller will resize to. Large JPEGs are then decoded at a
        reduced scale (1/2, 1/4 or 1/8) that still covers it, and SVGs are rendered at
        that resolution, which is much faster than decoding at full size.

    Returns
    -------
    PIL.Image.Image
        A loaded image in mode ``"RGB"``.

    Raises
    ------
    InputError
        If the file is missing, cannot be decoded, is too large, or the array has an
        unsupported shape, dtype or value range.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((28, 28), dtype=np.uint8)).size
    (28, 28)
    """
    if isinstance(item, Image.Image):
        # No draft for images handed in: it would change the caller's object.
        return _pixels_only(_finish(item, "PIL image", max_pixels, None))
    if isinstance(item, np.ndarray):
        return _array_to_image(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _pixels_only(_decode(bytes(item), "(given as bytes)", None, max_pixels,
                                    allow_unsafe_svg, size_hint))
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        data = read_input_file(path, "image")
        return _pixels_only(_decode(data, repr(path), path, max_pixels, allow_unsafe_svg,
                                    size_hint))
    raise InputError(
        "expected an image path, encoded bytes, a PIL image or a numpy array; "
        f"got {type(item).__name__}"
    )


def resize_image(
    img: Image.Image,
    size: Size,
    mode: str = "crop",
    *,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
    fill: tuple[int, int, int] | int = WHITE,
) -> Image.Image:
    """Resize to exactly ``size``.

    Parameters
    ----------
    img : PIL.Image.Image
        The image to resize.
    size : int or (int, int)
        Target size; an int means a square ``(size, size)``; a pair is ``(width, height)``.
    mode : {"crop", "pad", "stretch"}, default="crop"
        ``"crop"`` scales the image to cover the target and cuts the centre; ``"pad"``
        scales it to fit inside and fills the borders with ``fill``; ``"stretch"`` ignores
        the aspect ratio.
    resample : PIL.Image.Resampling, default=BILINEAR
        Resampling filter.
    fill : tuple or int, default=(255, 255, 255)
        Border colour for ``"pad"`` (white, like composited transparency).

    Returns
    -------
    PIL.Image.Image
        The resized image, same mode as ``img``.
    """
    width, height = _as_size(size)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}; got {mode!r}")
    src_w, src_h = img.size
    # reducing_gap makes big downscales (photos -> 64 px) fast at almost no quality cost.
    if mode == "stretch":
        return img.resize((width, height), resample, reducing_gap=3.0)
    if mode == "crop":
        scale = max(width / src_w, height / src_h)
        box_w, box_h = width / scale, height / scale
        # clamp: float rounding can put the box a hair outside the image, which PIL refuses
        left, top = max(0.0, (src_w - box_w) / 2), max(0.0, (src_h - box_h) / 2)
        box = (left, top, min(float(src_w), left + box_w), min(float(src_h), top + box_h))
        return img.resize((width, height), resample, box=box, reducing_gap=3.0)
    scale = min(width / src_w, height / src_h)
    inner = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
    resized = img.resize(inner, resample, reducing_gap=3.0)
    if isinstance(fill, int) or img.mode in ("L", "1", "I", "F"):
        fill = fill if isinstance(fill, int) else round(sum(fill) / len(fill))
    canvas = Image.new(img.mode, (width, height), fill)
    canvas.paste(resized, ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def image_to_array(
    img: Image.Image,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    layout: str = "HWC",
) -> np.ndarray:
    """Convert to float32 in [0, 1], then optionally normalise ``(x - mean) / std``.

    Parameters
    ----------
    img : PIL.Image.Image
        An 8-bit image (``"RGB"``, ``"L"``, ...).
    mean, std : float or sequence of float, optional
        Per-channel (or scalar) statistics on the [0, 1] scale, e.g. the ImageNet ones.
    layout : {"HWC", "CHW"}, default="HWC"
        Axis order of the result; grayscale images get a channel axis of length 1.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (H, W, C) or (C, H, W).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    array = np.asarray(img, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if mean is not None:
        array -= _channel_stat(mean, channels, "mean")
    if std is not None:
        scale = _channel_stat(std, channels, "std")
        if np.any(scale <= 0):
            raise ValueError(f"std must be positive; got {std!r}")
        array /= scale
    if layout == "CHW":
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    return array


# -- helpers ---------------------------------------------------------------------------------


def _decode(data: bytes, label: str, path: str | None, max_pixels: int | None,
            allow_unsafe_svg: bool, size_hint: Size | None) -> Image.Image:
    if not data:
        raise InputError(f"cannot decode image {label}: the file is empty")
    if _looks_like_svg(data, path):
        return _render_svg(data, label, path, max_pixels, allow_unsafe_svg, size_hint)
    # Pillow may warn (DecompressionBombWarning) before max_pixels refuses the image; the
    # warning is not silenced here because warnings.catch_warnings is not thread-safe and
    # images are decoded in worker threads.
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {label} is too large to decode safely: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"cannot decode image {label}: {exc}") from None
    return _finish(img, label, max_pixels, size_hint)


def _finish(img: Image.Image, label: str, max_pixels: int | None,
            size_hint: Size | None) -> Image.Image:
    """Draft-reduce, size-check, decode and orient an opened (maybe lazy) image."""
    try:
        if size_hint is not None and img.format == "JPEG":
            side = max(_as_size(size_hint))
            img.draft(img.mode, (side, side))
        _check_pixels(img.size, max_pixels, label)
        img.load()
        if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as exc:
        raise InputError(f"cannot decode image {label}: {exc}") from None
    return _to_rgb(img, label)


def _pixels_only(img: Image.Image) -> Image.Image:
    """A new image built from the pixels alone: EXIF (GPS position, camera, time), XMP, ICC
    profiles and comments never leave the decoder (the orientation was applied before)."""
    return Image.frombytes(img.mode, img.size, img.tobytes())


def _check_pixels(size: tuple[int, int], max_pixels: int | None, label: str) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise InputError(
            f"image {label} is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, above "
            f"max_pixels={max_pixels:,}; resize it or raise max_pixels"
        )


def _looks_like_svg(data: bytes, path: str | None) -> bool:
    if path is not None and path.lower().endswith((".svg", ".svgz")):
        return True
    if data.startswith(b"\x1f\x8b"):  # gzip: only svgz among the formats we read
        return path is None
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)


def _render_svg(data: bytes, label: str, path: str | None, max_pixels: int | None,
                allow_unsafe_svg: bool, size_hint: Size | None) -> Image.Image:
    cairosvg = require("cairosvg", "svg")
    from cairosvg.helpers import node_format
    from cairosvg.parser import Tree

    # cairosvg raises a zoo of exceptions (XML, CSS, cairo, ValueError...) on bad files.
    try:
        tree = Tree(bytestring=data, url=path, unsafe=allow_unsafe_svg)
        width, height, _ = node_format(None, tree)
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__.endswith("Forbidden"):  # defusedxml's refusals
            raise InputError(
                f"SVG image {label} uses XML entities or external references ({exc!r}), "
                "which are refused for safety; pass allow_unsafe_svg=True for trusted files"
            ) from None
        raise InputError(f"cannot decode SVG image {label}: {exc}") from None
    if width > 0 and height > 0:
        # Render directly at the resolution the caller needs; vectors scale for free.
        scale = max(_as_size(size_hint)) / min(width, height) if size_hint is not None else 1.0
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
        _check_pixels((out_w, out_h), max_pixels, label)
        sizes = {"output_width": out_w, "output_height": out_h}
    else:
        sizes = {}
    try:
        png = cairosvg.svg2png(bytestring=data, url=path, unsafe=allow_unsafe_svg, **sizes)
        img = Image.open(io.BytesIO(png))
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot decode SVG image {label}: {exc}") from None
    _check_pixels(img.size, max_pixels, label)
    return _to_rgb(img, label)


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, transparency composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img, label)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, WHITE)
        background.paste(img, mask=img.getchannel("A"))
        return background
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise InputError(f"cannot convert image {label} from mode {mode!r} to RGB: {exc}") from None


def _high_depth_to_rgb(img: Image.Image, label: str = "image") -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
    values = np.asarray(img).astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"image {label} contains NaN or infinite pixel values; expected "
                         "finite values")
    if img.mode == "F":
        top = 1.0 if np.nanmax(values, initial=0.0) <= 1.0 else 255.0
    elif img.mode.startswith("I;16") or values.max(initial=0) > 255:
        top = 65535.0
    else:
        top = 255.0
    gray = np.clip(np.rint(np.nan_to_num(values) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _array_to_image(array: np.ndarray) -> Image.Image:
    label = f"array of shape {array.shape} and dtype {array.dtype}"
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InputError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4); "
                         f"got {label}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"expected a non-empty image array; got {label}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = np.rint(array / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(f"expected finite float pixel values in [0, 1]; got {label} "
                             "containing NaN or infinity")
        if array.min() < 0 or array.max() > 1:
            raise InputError(f"expected float pixel values in [0, 1]; got {label} with "
                             f"range [{array.min():g}, {array.max():g}] (cast "
                             "0-255 data to uint8)")
        pixels = np.rint(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        # Plain int arrays (e.g. MNIST read as int64) are fine when they hold 8-bit values.
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"expected integer pixel values in [0, 255]; got {label} with "
                             f"range [{array.min()}, {array.max()}]")
        pixels = array.astype(np.uint8) * (255 if array.dtype == np.bool_ else 1)
    else:
        raise InputError(f"expected uint8, uint16 or float pixels; got {label}")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2] if pixels.ndim == 3 else 2]
    return _to_rgb(Image.fromarray(np.ascontiguousarray(pixels), mode), label)


def _as_size(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or a (width, height) pair; got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"size must be positive; got {size!r}")
    return pair


def _channel_stat(value: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    stat = np.asarray(value, dtype=np.float32).reshape(-1)
    if stat.size not in (1, channels):
        raise ValueError(f"{name} must have 1 or {channels} values for this image; "
                         f"got {stat.size}")
    return stat
