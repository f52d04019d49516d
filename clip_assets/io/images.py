"""Image bytes: format by content (magic bytes), a header-first check with a pixel cap, and the resize used by
training and embedding.

:func:`check_image` reads the header (size, frames) before decoding anything, refuses what costs too much, then
decodes once to prove the bytes are whole. :func:`decode_resize` is open_clip's eval geometry (shortest side to
``size`` with bicubic, centre crop) on uint8 RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

ACCEPTED_FORMATS = ("jpg", "png", "webp")  # what a drop's image may be (img2dataset's encode formats)
MAX_PIXELS = 50_000_000  # default cap on width x height of one image

_MAGIC = (  # (offset, bytes, format)
    (0, b"\xff\xd8\xff", "jpg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (8, b"WEBP", "webp"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes start with (``jpg``, ``png``, ``webp``, ``gif``, ``bmp``, ``tiff``), or None."""
    for offset, magic, fmt in _MAGIC:
        if data[offset:offset + len(magic)] == magic and (fmt != "webp" or data[:4] == b"RIFF"):
            return fmt
    return None


@dataclass(frozen=True)
class ImageCheck:
    """Result of :func:`check_image`: the detected format and size, or the reason (and detail) it is refused."""

    format: str | None
    width: int = 0
    height: int = 0
    reason: str | None = None
    detail: str | None = None


def check_image(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageCheck:
    """Decide the format by content, read the header, refuse over ``max_pixels`` before decoding, decode once.

    Reasons: ``undecodable_image`` (unknown content, or the bytes do not decode), ``unsupported_image_format``
    (a known format other than jpg/png/webp, or an animated image), ``image_too_large`` (over the pixel cap).
    """
    fmt = sniff_format(data)
    if fmt is None:
        return ImageCheck(None, reason="undecodable_image", detail=f"not an image: starts with {data[:8]!r}")
    if fmt not in ACCEPTED_FORMATS:
        return ImageCheck(fmt, reason="unsupported_image_format", detail=f"content is {fmt}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    return ImageCheck(fmt, w, h, "image_too_large", f"{w}x{h} = {w * h} pixels > {max_pixels}")
                if getattr(im, "n_frames", 1) > 1:
                    return ImageCheck(fmt, w, h, "unsupported_image_format", f"animated {fmt}, {im.n_frames} frames")
                im.load()
    except Image.DecompressionBombError as e:
        return ImageCheck(fmt, reason="image_too_large", detail=str(e))
    except Exception as e:  # noqa: BLE001 - any decoder failure is a data problem, not a crash
        return ImageCheck(fmt, reason="undecodable_image", detail=f"{type(e).__name__}: {e}")
    return ImageCheck(fmt, w, h)


def to_rgb8(im: Image.Image) -> Image.Image:
    """8-bit RGB of ``im``; 16-bit grey is scaled from its full range (Pillow's convert would clip it to white)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    return im.convert("RGB")


def decode_rgb(data: bytes) -> Image.Image:
    """Encoded image bytes (any format Pillow reads; the first frame of an animation) -> 8-bit RGB image."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        return to_rgb8(im)


def decode_resize(data: bytes, size: int) -> np.ndarray:
    """Image bytes -> (S, S, 3) uint8: RGB, shortest side resized to ``size`` (bicubic), centre crop.

    The same geometry as open_clip's eval transform (``resize_mode='shortest'``, bicubic)."""
    with Image.open(io.BytesIO(data)) as im:
        im = to_rgb8(im)
        w, h = im.size
        if (w, h) != (size, size):
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
        return np.array(im, dtype=np.uint8)  # a writable copy
