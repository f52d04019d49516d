"""One formatting rule for every number a person reads (HTML reports, Markdown metadata, plot labels).

``fmt``: None, NaN and empty strings are ``-``; booleans ``yes``/``no``; integers with thousands separators;
floats rounded to ``digits`` significant digits (so 0.0040000000000000036 reads ``0.004``), integral floats
without a fraction, large floats rounded to whole numbers; anything else ``str``. ``pct`` writes a share as a
percentage with the same rule (0.2645 -> ``26.45%``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

MISSING = "-"


def fmt(value: Any, digits: int = 4) -> str:
    """``value`` as a short, noise-free string (see module doc); ``-`` when it is missing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return fmt(value.item(), digits)
    return str(value)


def pct(share: Any, digits: int = 4) -> str:
    """A share in [0, 1] as a percentage (``0.2645`` -> ``26.45%``); ``-`` when missing."""
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return MISSING
    return f"{fmt(float(share) * 100.0, digits)}%"


def table_cells(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4,
                max_chars: int = 80) -> tuple[list[str], list[list[str]]]:
    """(columns, cells) of a list of dicts, every cell through :func:`fmt` and cut to ``max_chars``."""
    columns = list(columns) if columns is not None else (list(rows[0]) if rows else [])

    def cell(v: Any) -> str:
        s = fmt(v, digits).replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    return columns, [[cell(r.get(c)) for c in columns] for r in rows]


def markdown_rows(rows: Sequence[dict], columns: Sequence[str] | None = None, max_rows: int = 50,
                  digits: int = 4, max_chars: int = 80) -> str:
    """A Markdown table of ``rows`` (cells formatted by :func:`fmt`, ``|`` escaped); ``_(no rows)_`` if empty."""
    if not rows:
        return "_(no rows)_"
    cols, cells = table_cells(rows[:max_rows], columns, digits, max_chars)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in cells]
    if len(rows) > max_rows:
        lines.append(f"\n_{len(rows) - max_rows:,} more rows not shown_")
    return "\n".join(lines)


def join_nonempty(parts: Iterable[str], sep: str = " · ") -> str:
    return sep.join(p for p in parts if p)
