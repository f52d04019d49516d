"""Rendering of synthetic images (Pillow + numpy), deterministic given an ``np.random.Generator``.

A latent image is one filled shape of a given colour and size on a grey background. Everything else is nuisance
that carries no information about the caption given the latent:

* position: the shape's centre is uniform over the positions that keep it fully inside the image;
* background shade: a grey level uniform in ``BACKGROUND_RANGE``;
* colour shade: each RGB channel of the shape's colour moves by a uniform integer in +-``COLOUR_JITTER``;
* pixel noise: i.i.d. Gaussian noise of standard deviation ``PIXEL_NOISE`` on every channel.

The size is a radius that is a fixed fraction of the image side (9 vs 18 px at 64x64), so small and large shapes
differ by a factor ~4 in area. A placeholder ("image not found") is a fixed grey icon with only a small shade
jitter and pixel noise, so that every placeholder's bytes differ while its content does not.

Random draws happen in a fixed order (background, colour jitter, position, noise), so a given generator state
always yields the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 80, 215),
    "yellow": (225, 205, 40),
}
SIZE_RADIUS: dict[str, float] = {"small": 9 / 64, "large": 18 / 64}  # radius as a fraction of the image side
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

BACKGROUND_RANGE = (70, 150)  # grey level of the background, inclusive
COLOUR_JITTER = 20  # per-channel shade jitter of the shape colour
PIXEL_NOISE = 4.0  # std of the additive Gaussian pixel noise
PLACEHOLDER_SHADE = 205  # grey level of the placeholder background
PLACEHOLDER_JITTER = 4  # +- jitter of the placeholder shade
PLACEHOLDER_NOISE = 2.0

IMAGE_FORMATS: dict[str, str] = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
JPEG_QUALITY = 90


def radius_px(size: str, image_size: int) -> int:
    """Radius in pixels of a shape of the named size in an ``image_size`` square image."""
    return int(round(SIZE_RADIUS[size] * image_size))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, fill: tuple[int, int, int]) -> None:
    """Draw ``shape`` filled with ``fill``, contained in the box [cx-r, cx+r] x [cy-r, cy+r]."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = round(r * 0.886)  # same area as the circle: side sqrt(pi) r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        # equilateral, pointing up, inscribed in the circle of radius r
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.deg2rad([-90.0, 30.0, 150.0])]
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        w = max(1, round(r * 0.35))  # half thickness of each bar
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPE_NAMES}")


def _add_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> np.ndarray:
    pixels = np.asarray(img, dtype=np.float32)
    pixels += np.float32(sigma) * rng.standard_normal(size=pixels.shape, dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def render_shape(shape: str, colour: str, size: str, rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """Render one latent image as an (image_size, image_size, 3) uint8 array."""
    r = radius_px(size, image_size)
    if 2 * r + 3 > image_size:
        raise ValueError(f"image_size {image_size} too small for a {size} shape of radius {r}px")
    bg = int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1))
    base = np.asarray(COLOUR_RGB[colour])
    fill = tuple(int(v) for v in np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255))
    # centre so that [c-r, c+r] lies inside [1, image_size-2]
    cx, cy = (int(v) for v in rng.integers(r + 1, image_size - 1 - r, size=2))
    img = Image.new("RGB", (image_size, image_size), (bg, bg, bg))
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, fill)
    return _add_noise(img, PIXEL_NOISE, rng)


def render_placeholder(rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """Render an "image not found" placeholder: a fixed grey broken-picture icon plus small nuisance noise."""
    shade = PLACEHOLDER_SHADE + int(rng.integers(-PLACEHOLDER_JITTER, PLACEHOLDER_JITTER + 1))
    img = Image.new("RGB", (image_size, image_size), (shade, shade, shade))
    draw = ImageDraw.Draw(img)
    lo, hi = round(image_size * 0.25), round(image_size * 0.75)
    ink = (shade - 90,) * 3
    width = max(1, image_size // 32)
    draw.rectangle((lo, lo, hi, hi), outline=ink, width=width)
    draw.line((lo, lo, hi, hi), fill=ink, width=width)
    draw.line((lo, hi, hi, lo), fill=ink, width=width)
    return _add_noise(img, PLACEHOLDER_NOISE, rng)


def encode_image(pixels: np.ndarray, image_format: str = "jpg", quality: int = JPEG_QUALITY) -> bytes:
    """Encode an (H, W, 3) uint8 array as jpg (default, quality 90), png or webp bytes; deterministic."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image_format {image_format!r}; known: {sorted(IMAGE_FORMATS)}")
    buf = io.BytesIO()
    kwargs = {} if image_format == "png" else {"quality": quality}
    Image.fromarray(pixels).save(buf, format=IMAGE_FORMATS[image_format], **kwargs)
    return buf.getvalue()
