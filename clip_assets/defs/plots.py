"""Dagster metadata from the report helpers: figures and PNGs as inline Markdown images, tables as Markdown with
the one formatting rule of clip_assets.report.format, and a written report as links plus its summary."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from matplotlib.figure import Figure

from clip_assets.report.build import Report
from clip_assets.report.format import markdown_rows
from clip_assets.report.plots import data_uri, png_bytes, pyplot

__all__ = ["pyplot", "figure_metadata", "png_metadata", "markdown_table", "report_metadata"]


def figure_metadata(fig: Figure) -> dg.MetadataValue:
    """A matplotlib figure as an inline PNG (Markdown image) that the Dagster UI renders; the figure is closed."""
    return png_metadata(png_bytes(fig))


def png_metadata(png: bytes) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![plot]({data_uri(png)})")


def markdown_table(rows: list[dict], columns: list[str] | None = None, max_rows: int = 20) -> dg.MetadataValue:
    """A list of dicts as a Markdown table: numbers rounded, ``-`` for missing values, cells escaped, long text
    cut (clip_assets.report.format)."""
    return dg.MetadataValue.md(markdown_rows(rows, columns, max_rows=max_rows))


def report_link(index) -> str:
    """A link a browser opens: ``file://`` for a local report, the object URL for one on a store."""
    return index.resolve().as_uri() if isinstance(index, Path) else str(index)


def report_metadata(report: Report) -> dict[str, dg.MetadataValue]:
    """Metadata entries of a written report, the summary first: ``summary`` (the glance: under 1,000
    characters with one small plot, so the UI shows it inline on the asset's page), ``report`` (path of
    index.html), ``report_url`` (file:// link a browser opens) and ``report_details`` (the full Markdown with
    the large plots, behind the UI's "[Show Markdown]")."""
    return {"summary": dg.MetadataValue.md(report.glance or report.markdown),
            "report": dg.MetadataValue.path(str(report.index)),
            "report_url": dg.MetadataValue.url(report_link(report.index)),
            "report_details": dg.MetadataValue.md(report.markdown)}
