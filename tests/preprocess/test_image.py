"""Image decoding: every input kind and odd file, errors that name the file, resizing."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mmfuse import InputError
from mmfuse.preprocess.image import image_to_array, load_image, resize_image

RED_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
           b'<rect x="0" y="0" width="20" height="20" fill="#ff0000"/></svg>')


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _bilevel_png(width: int, height: int, with_pixels: bool = True) -> bytes:
    """A valid 1-bit PNG built without allocating the image (cheap even at 12000 x 12000)."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    rows = b"\x00" * (height * (1 + (width + 7) // 8)) if with_pixels else b""
    data = _png_chunk(b"IDAT", zlib.compress(rows, 1)) if with_pixels else b""
    return b"\x89PNG\r\n\x1a\n" + header + data + _png_chunk(b"IEND", b"")


def _save(img: Image.Image, path, **kwargs) -> str:
    img.save(path, **kwargs)
    return str(path)


# -- arrays and PIL images -------------------------------------------------------------------


@pytest.mark.parametrize("array, expected_pixel", [
    (np.full((5, 7), 200, np.uint8), (200, 200, 200)),
    (np.full((5, 7, 1), 200, np.uint8), (200, 200, 200)),
    (np.dstack([np.full((5, 7), v, np.uint8) for v in (10, 20, 30)]), (10, 20, 30)),
    (np.full((5, 7), 0.5, np.float32), (128, 128, 128)),
    (np.full((5, 7, 3), 1.0, np.float64), (255, 255, 255)),
    (np.full((5, 7), 65535, np.uint16), (255, 255, 255)),
    (np.full((5, 7), 255, np.int64), (255, 255, 255)),  # MNIST read as plain ints
])
def test_array_inputs_become_rgb(array, expected_pixel):
    img = load_image(array)
    assert img.mode == "RGB" and img.size == (7, 5)
    assert img.getpixel((3, 2)) == expected_pixel


def test_rgba_array_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    img = load_image(rgba)
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((0, 3)) == (255, 255, 255)


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 4, 2), np.uint8), r"shape \(H, W\), \(H, W, 3\) or \(H, W, 4\)"),
    (np.zeros(16, np.uint8), r"got array of shape \(16,\)"),
    (np.zeros((0, 4), np.uint8), "non-empty"),
    (np.full((4, 4), 255.0), r"in \[0, 1\].*cast 0-255 data to uint8"),
    (np.full((4, 4), np.nan), r"finite float pixel values.*NaN or infinity"),
    (np.full((4, 4), -1, np.int32), r"in \[0, 255\]"),
    (np.zeros((4, 4), np.complex64), "expected uint8, uint16 or float"),
])
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(InputError, match=message):
        load_image(array)


def test_pil_image_input_is_converted_not_mutated():
    source = Image.new("LA", (3, 3), (0, 0))  # black but fully transparent
    img = load_image(source)
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (255, 255, 255)
    assert source.mode == "LA"


def test_unsupported_type_is_refused():
    with pytest.raises(InputError, match="expected an image path.*got int"):
        load_image(42)


# -- odd files -------------------------------------------------------------------------------


def test_png_with_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 255, 0))
    img.paste((0, 0, 255, 255), (0, 0, 5, 10))
    out = load_image(_save(img, tmp_path / "alpha.png"))
    assert out.getpixel((1, 1)) == (0, 0, 255)
    assert out.getpixel((8, 1)) == (255, 255, 255)


@pytest.mark.parametrize("mode, colour, expected", [
    ("L", 100, (100, 100, 100)),
    ("1", 1, (255, 255, 255)),
    ("LA", (50, 255), (50, 50, 50)),
    ("P", 3, None),
])
def test_palette_and_grayscale_modes(tmp_path, mode, colour, expected):
    img = Image.new(mode, (6, 6), colour)
    if mode == "P":
        img.putpalette([0, 0, 0] * 3 + [0, 200, 0] + [0, 0, 0] * 252)
        expected = (0, 200, 0)
    out = load_image(_save(img, tmp_path / f"{mode}.png"))
    assert out.mode == "RGB" and out.getpixel((2, 2)) == expected


def test_palette_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (6, 6), 1)
    img.putpalette([255, 0, 0, 0, 0, 0] + [0, 0, 0] * 254)
    path = _save(img, tmp_path / "p_transparent.png", transparency=1)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg",
                 quality=95)
    assert Image.open(path).mode == "CMYK"
    red, green, blue = load_image(path).getpixel((8, 8))
    assert red > 200 and green < 50 and blue < 50


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # Stored 40 wide x 20 high, left half black; orientation 6 = rotate 90 degrees clockwise.
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(stored, tmp_path / "rotated.jpg", exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)
    assert img.getpixel((10, 5))[0] < 30  # the black half is now on top
    assert img.getpixel((10, 35))[0] > 220


def test_big_jpeg_is_draft_decoded_when_a_size_hint_is_given(tmp_path):
    path = _save(Image.new("RGB", (2000, 1600), (10, 120, 30)), tmp_path / "big.jpg")
    assert load_image(path).size == (2000, 1600)
    small = load_image(path, size_hint=64)
    assert small.size == (250, 200)  # 1/8 scale, still covers 64 x 64
    assert min(load_image(path, size_hint=300).size) >= 300


def test_image_bytes_are_decoded(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).getpixel((0, 0)) == (1, 2, 3)


def test_truncated_png_names_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.png"
    Image.fromarray(noise).save(whole)
    cut = tmp_path / "x.png"
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cannot decode image '.*x\.png': .*truncated"):
        load_image(cut)


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"this is not an image at all", "cannot identify image file"),
])
def test_corrupt_files_name_the_file(tmp_path, content, reason):
    path = tmp_path / "corrupt.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=rf"cannot decode image '.*corrupt\.png': {reason}"):
        load_image(path)


def test_missing_file():
    with pytest.raises(InputError, match="image file not found: '/no/such/dir/photo.jpg'"):
        load_image("/no/such/dir/photo.jpg")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(_bilevel_png(12000, 12000))
    decoded = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load",
                        lambda self, *a, **k: decoded.append(self.size) or original(self, *a, **k))
    with pytest.raises(InputError, match=r"12000x12000 = 144,000,000 pixels, above "
                                         r"max_pixels=50,000,000"):
        load_image(path)
    assert (12000, 12000) not in decoded  # refused from the header, before any decoding
    with pytest.raises(InputError, match="max_pixels=1,000"):
        load_image(_bilevel_png(100, 100), max_pixels=1000)


def test_pillow_decompression_bomb_becomes_input_error():
    # Above Pillow's own hard limit (2 x 89M pixels) even with our limit switched off.
    header_only = _bilevel_png(15000, 15000, with_pixels=False)
    with pytest.raises(InputError, match="too large to decode safely"):
        load_image(header_only, max_pixels=None)


# -- SVG -------------------------------------------------------------------------------------


def test_svg_file_is_rendered_on_white(tmp_path):
    pytest.importorskip("cairosvg")
    path = tmp_path / "shape.svg"
    path.write_bytes(RED_SVG)
    img = load_image(path)
    assert img.size == (40, 20) and img.mode == "RGB"
    assert img.getpixel((5, 10)) == (255, 0, 0)
    assert img.getpixel((35, 10)) == (255, 255, 255)
    # Rendered straight at the needed resolution, and recognised from bytes alone.
    assert load_image(RED_SVG, size_hint=100).size == (200, 100)


def test_svg_entities_need_allow_unsafe_svg():
    pytest.importorskip("cairosvg")
    with_entity = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY ns "http://www.w3.org/2000/svg">]>'
                   b'<svg xmlns="&ns;" width="4" height="4"><rect width="4" height="4"/></svg>')
    with pytest.raises(InputError, match="allow_unsafe_svg=True"):
        load_image(with_entity)
    assert load_image(with_entity, allow_unsafe_svg=True).size == (4, 4)


def test_broken_svg_names_the_file(tmp_path):
    pytest.importorskip("cairosvg")
    path = tmp_path / "broken.svg"
    path.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'><rect")
    with pytest.raises(InputError, match=r"cannot decode SVG image '.*broken\.svg'"):
        load_image(path)


# -- real files ------------------------------------------------------------------------------


def test_real_big_sign_digit_photos(data_root):
    folder = data_root / "sign-digits" / "Dataset" / "7"
    photos = [folder / f"IMG_{n}.JPG" for n in (5874, 5935, 5978)]
    if not all(p.is_file() for p in photos):
        pytest.skip(f"the 3024x3024 sign-digit photos are not in {folder}")
    for photo in photos:
        img = load_image(photo, size_hint=64)
        assert img.mode == "RGB" and img.size == (378, 378)  # decoded at 1/8 of 3024
    assert load_image(photos[0]).size == (3024, 3024)


def test_real_tuxpaint_svg_and_png(data_root):
    stamps = data_root / "tuxpaint" / "stamps"
    svg, png = stamps / "symbols" / "clock.svg", stamps / "symbols" / "money" / "us" / "coins" / "001penny.png"
    if not (svg.is_file() and png.is_file()):
        pytest.skip(f"tuxpaint stamps not found in {stamps}")
    pytest.importorskip("cairosvg")
    rendered = load_image(svg, size_hint=64)
    assert rendered.mode == "RGB" and min(rendered.size) == 64
    photo = load_image(png)
    assert photo.mode == "RGB" and photo.getpixel((0, 0)) == (255, 255, 255)  # transparent corner


# -- resize and arrays -----------------------------------------------------------------------


def _two_halves() -> Image.Image:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (20, 0, 40, 20))
    return img


@pytest.mark.parametrize("mode, size, expected", [
    ("crop", 10, (10, 10)),
    ("pad", 10, (10, 10)),
    ("stretch", 10, (10, 10)),
    ("crop", (30, 12), (30, 12)),
])
def test_resize_modes_reach_the_size(mode, size, expected):
    assert resize_image(_two_halves(), size, mode).size == expected


def test_resize_crop_keeps_the_centre_and_pad_adds_white_borders():
    crop = np.asarray(resize_image(_two_halves(), 10, "crop"))
    assert crop[5, 0].tolist() == [0, 0, 0] and crop[5, 9].tolist() == [255, 255, 255]
    pad = np.asarray(resize_image(Image.new("RGB", (40, 20), (0, 0, 0)), 10, "pad"))
    assert pad[0, 5].tolist() == [255, 255, 255] and pad[5, 5].tolist() == [0, 0, 0]
    gray = resize_image(Image.new("L", (40, 20), 0), 10, "pad")
    assert gray.mode == "L" and gray.getpixel((5, 0)) == 255


@pytest.mark.parametrize("size, mode, message", [
    (10, "zoom", "resize mode must be one of"),
    (0, "crop", "size must be positive"),
    ((1, 2, 3), "crop", "size must be an int or a"),
])
def test_resize_rejects_bad_arguments(size, mode, message):
    with pytest.raises(ValueError, match=message):
        resize_image(_two_halves(), size, mode)


def test_image_to_array_layout_and_normalisation():
    img = Image.new("RGB", (4, 2), (255, 0, 51))
    hwc = image_to_array(img)
    assert hwc.dtype == np.float32 and hwc.shape == (2, 4, 3)
    np.testing.assert_allclose(hwc[0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    chw = image_to_array(img, mean=[0.5, 0.5, 0.5], std=0.5, layout="CHW")
    assert chw.shape == (3, 2, 4)
    np.testing.assert_allclose(chw[:, 0, 0], [1.0, -1.0, -0.6], atol=1e-6)
    assert image_to_array(Image.new("L", (4, 2)), layout="CHW").shape == (1, 2, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "WHC"}, "layout must be one of"),
    ({"mean": [0.1, 0.2]}, "mean must have 1 or 3 values"),
    ({"std": 0.0}, "std must be positive"),
])
def test_image_to_array_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_to_array(Image.new("RGB", (2, 2)), **kwargs)


def test_crop_box_never_leaves_the_image():
    # 187x199 -> 224 crop: the centred box came out 1e-7 px negative before clamping
    from PIL import Image

    from mmfuse.preprocess.image import resize_image

    for w, h in [(187, 199), (199, 187), (3, 1000), (1000, 3), (224, 224)]:
        assert resize_image(Image.new("RGB", (w, h)), 224, "crop").size == (224, 224)
