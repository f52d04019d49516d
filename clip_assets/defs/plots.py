"""Small helpers that turn matplotlib figures and tables into Dagster metadata."""

from __future__ import annotations

import base64
import io

import dagster as dg
from matplotlib.figure import Figure


def figure_metadata(fig: Figure) -> dg.MetadataValue:
    """A matplotlib figure as an inline PNG (Markdown image) that the Dagster UI renders."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return png_metadata(buf.getvalue())


def png_metadata(png: bytes) -> dg.MetadataValue:
    data = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{data})")


def _cell(v) -> str:
    s = f"{v:.4g}" if isinstance(v, float) else str(v)
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= 80 else s[:77] + "..."


def markdown_table(rows: list[dict], columns: list[str] | None = None, max_rows: int = 20) -> dg.MetadataValue:
    """A list of dicts as a Markdown table (cells escaped, long text cut)."""
    if not rows:
        return dg.MetadataValue.md("_(no rows)_")
    columns = columns or list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows[:max_rows]:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))
