"""Strict image decoding (RELIABILITY 7): bad files fail loudly, every mode becomes 8-bit RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.data import images
from shared.data.images import BadImageError, decode_image


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), mode="RGB")


def test_truncated_jpeg_fails_although_verify_passes(tmp_path: Path) -> None:
    data = _encoded(_photo(), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as img:
        img.verify()  # Pillow's own check does not notice
    with pytest.raises(BadImageError, match="cut.jpg"):
        decode_image(path)


def test_zero_byte_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty.jpg: empty file \(0 bytes\)"):
        decode_image(path)


def test_text_renamed_jpg_fails(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(BadImageError, match="notes.jpg: cannot decode image"):
        decode_image(path)


def test_image_over_the_pixel_limit_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 300 * 300 - 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 - 1)  # Pillow's bomb check fires too
    with pytest.raises(BadImageError, match="big.png"):
        decode_image(path)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 128, (128, 128, 128)),
        ("LA", (128, 255), (128, 128, 128)),
        ("LA", (128, 0), (0, 0, 0)),  # fully transparent composites on black
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("P", None, (255, 0, 0)),
    ],
)
def test_modes_become_rgb(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    if mode == "P":
        img = Image.new("RGB", (4, 4), (255, 0, 0)).convert("P")
    else:
        img = Image.new(mode, (4, 4), value)  # type: ignore[arg-type]
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(_encoded(img, fmt))
    assert out.mode == "RGB"
    pixel = np.asarray(out)[0, 0]
    assert np.abs(pixel.astype(int) - np.asarray(expected)).max() <= 2, pixel


def test_sixteen_bit_grey_is_rescaled_to_its_range() -> None:
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    out = np.asarray(decode_image(_encoded(img, "PNG")))
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 1, 0] == round(1000 / 4000 * 255)
