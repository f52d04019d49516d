"""The at-a-glance summary on an asset's page: a few Markdown lines with one tiny plot inline.

Dagster 1.13's UI renders a Markdown metadata value inline (on the asset's Overview, under its latest
materialization, and in the Events tab) only while it is shorter than 1,000 characters; a longer one is one click
deep behind "[Show Markdown]". A matplotlib PNG as a data URI is tens of kilobytes, so the glance plot is drawn
here with PIL as a small 4-colour palette PNG (a few hundred bytes): the histogram's bars, each threshold as a
red line. :func:`glance_markdown` drops table rows until the whole value fits :data:`INLINE_LIMIT`.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from clip_assets.report.format import markdown_rows
from clip_assets.report.plots import Histogram, data_uri

INLINE_LIMIT = 999  # the UI shows a Markdown value inline while len(mdStr) < 1000
WIDTH, HEIGHT = 300, 56
_PALETTE = [255, 255, 255, 76, 114, 176, 214, 39, 40, 120, 120, 120]  # white, bars, threshold, axis


def glance_png(hist: Histogram, thresholds: Sequence[float | None] = (), width: int = WIDTH,
               height: int = HEIGHT) -> bytes:
    """A ``width`` x ``height`` palette PNG of ``hist``: one bar per bin (height relative to the fullest bin),
    a baseline, and a red vertical line at each finite threshold inside the histogram's range."""
    img = Image.new("P", (width, height), 0)
    img.putpalette(_PALETTE)
    draw = ImageDraw.Draw(img)
    counts = np.asarray(hist.counts, dtype=np.float64)
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    lo, hi = float(hist.edges[0]), float(hist.edges[-1])
    bins = max(len(counts), 1)
    for i, c in enumerate(counts):
        x0, x1 = round(i * width / bins), round((i + 1) * width / bins) - 1
        if c > 0:
            draw.rectangle((x0, height - 2 - max(1, round((height - 3) * c / top)), max(x0, x1), height - 2), fill=1)
    draw.line((0, height - 1, width - 1, height - 1), fill=3)
    for t in thresholds:
        if t is not None and math.isfinite(t) and hi > lo and lo <= t <= hi:
            x = min(width - 1, round((t - lo) / (hi - lo) * (width - 1)))
            draw.line((x, 0, x, height - 1), fill=2, width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, bits=2)
    return buf.getvalue()


def glance_markdown(title: str, lines: Sequence[str], png: bytes | None = None, caption: str = "",
                    rows: Sequence[dict] | None = None, columns: Sequence[str] | None = None,
                    limit: int = INLINE_LIMIT) -> str:
    """``**title**``, the ``lines``, the inline plot with its caption, and as many ``rows`` (a Markdown table
    through the one formatting rule) as fit in ``limit`` characters; says how many rows were left out."""
    head = [f"**{title}**", *lines]
    if png is not None:
        head.append(f"![{caption or 'plot'}]({data_uri(png)})" + (f" {caption}" if caption else ""))
    text = "\n\n".join(head)
    rows = list(rows or [])
    for n in range(len(rows), 0, -1):
        more = f"\n\n_{len(rows) - n} more in the report_" if n < len(rows) else ""
        candidate = f"{text}\n\n{markdown_rows(rows[:n], columns, max_rows=n)}{more}"
        if len(candidate) <= limit:
            return candidate
    if len(text) > limit:
        raise ValueError(f"glance summary of {title!r} is {len(text)} characters without a table, over {limit}")
    return text
