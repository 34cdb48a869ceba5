"""Strict image decoding: every pixel is decoded (Pillow's ``verify`` passes truncated JPEGs), the
decompression-bomb warning is an error, and every mode becomes 8-bit RGB or a clear error."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 89_478_485  # Pillow's own default limit, made an error instead of a warning


class BadImageError(ValueError):
    """An image that cannot be decoded completely; the message names the file and the problem."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, LA, P, RGBA, CMYK, I;16, I, F...) to 8-bit RGB.

    Alpha is composited on black; 16/32-bit and float greyscale are rescaled to 0-255 by their range.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi == lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Fully decode ``source`` (a path or encoded bytes) to RGB; raise :class:`BadImageError` on failure."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, (str, Path)) and Path(source).stat().st_size == 0:
        raise BadImageError(f"{label}: empty file (0 bytes)")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImageError(
                        f"{label}: {img.width}x{img.height} exceeds the pixel limit {MAX_PIXELS}"
                    )
                img.load()
                return to_rgb(img).copy()
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise BadImageError(f"{label}: cannot decode image: {err}") from None
