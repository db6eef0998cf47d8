"""EXIF (GPS) and other metadata never leave the image decoder."""

import io

import numpy as np
from PIL import Image

from mmfuse.encoders import create_encoder
from mmfuse.preprocess.image import load_image

GPS_IFD = 0x8825
LATITUDE = (48.0, 51.0, 29.0)


def _jpeg_with_gps(path=None) -> bytes:
    img = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1, 3)).reshape(48, 64, 3))
    exif = Image.Exif()
    exif[0x010F] = "CanaryCam"  # Make
    exif[0x0131] = "canary-software-7f3a"  # Software
    exif.get_ifd(GPS_IFD).update({1: "N", 2: LATITUDE, 3: "E", 4: (2.0, 17.0, 40.0)})
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif, comment=b"canary comment")
    data = buffer.getvalue()
    assert b"CanaryCam" in data  # the file really carries it
    return data


def test_decoded_image_carries_pixels_only(tmp_path):
    data = _jpeg_with_gps()
    path = tmp_path / "gps.jpg"
    path.write_bytes(data)
    for item in (str(path), data, Image.open(io.BytesIO(data))):
        img = load_image(item)
        assert img.info == {}
        exif = img.getexif()
        assert len(exif) == 0 and not exif.get_ifd(GPS_IFD)
        assert b"CanaryCam" not in img.tobytes()


def test_features_do_not_depend_on_metadata(tmp_path):
    with_gps = _jpeg_with_gps()
    plain = Image.open(io.BytesIO(with_gps))
    # the features of the file equal those of its bare pixels
    enc = create_encoder("pixels")
    a = enc.transform([with_gps])
    b = enc.transform([np.asarray(plain.convert("RGB"))])
    np.testing.assert_allclose(a, b, atol=1e-6)
