"""A report as sections (text, a table, a plot, contact sheets), rendered two ways:

* :func:`html_page`: a static HTML page for ``index.html`` (plots and sheets are PNG files beside it, linked by
  relative paths, so the folder can be copied or opened from disk without Dagster);
* :func:`markdown_summary`: Markdown for an asset's ``MetadataValue.md`` (plots inline as base64 data URIs,
  which Dagster's UI renders; sheets listed by path).

Every table cell goes through :func:`clip_assets.report.format.fmt` (rounded numbers, ``-`` when missing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import jinja2

from clip_assets.report.format import markdown_rows, table_cells
from clip_assets.report.plots import data_uri
from clip_assets.report.sheets import SheetFile


@dataclass
class Section:
    """One part of a report. ``plot``: PNG bytes (written to ``plots/<slug>.png``); ``sheets``: written sheets."""

    title: str
    text: str = ""
    rows: list[dict] | None = None
    columns: list[str] | None = None
    plot: bytes | None = None
    sheets: list[SheetFile] = field(default_factory=list)
    in_markdown: bool = True
    links: dict[str, str] = field(default_factory=dict)  # column -> href pattern, "{}" = the cell's raw value

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"

    @property
    def plot_path(self) -> str:
        return f"plots/{self.slug}.png"


_PAGE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .5em 0 1.2em; } figcaption { font-size: 13px; color: #444; }
img.sheet { max-width: 100%; border: 1px solid #ddd; } nav a { margin-right: 1em; }
</style></head><body>
<h1>{{ title }}</h1><p>{{ subtitle }}</p>
<nav>{% for s in sections %}<a href="#{{ s.slug }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in sections %}<section id="{{ s.slug }}"><h2>{{ s.title }}</h2>
{% if s.text %}<p>{{ s.text }}</p>{% endif %}
{% if s.plot %}<figure><img src="{{ s.plot_path }}" alt="{{ s.title }}"></figure>{% endif %}
{% if s.table %}<table><tr>{% for c in s.table[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in s.table[1] %}<tr>{% for v in r %}<td{% if v[1] %} class="num"{% endif %}>{% if v[2] %}<a href="{{ v[2] }}">{{ v[0] }}</a>{% else %}{{ v[0] }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>{% elif s.rows is not none %}<p><em>(no rows)</em></p>{% endif %}
{% for g, sheets in s.groups %}{% if g %}<h3>{{ g }}</h3>{% endif %}{% for f in sheets %}
<figure><a href="{{ f.png }}"><img class="sheet" src="{{ f.png }}" alt="{{ f.title }}" loading="lazy"></a>
<figcaption>{{ f.title }} &middot; {{ f.count }} images{% if f.unreadable %} ({{ f.unreadable }} unreadable){% endif %}
&middot; <a href="{{ f.json }}">uids (JSON)</a></figcaption></figure>{% endfor %}{% endfor %}
</section>{% endfor %}
</body></html>
""")

_NUM = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?$|^-$")


def _groups(sheets: Sequence[SheetFile]) -> list[tuple[str, list[SheetFile]]]:
    out: dict[str, list[SheetFile]] = {}
    for f in sheets:
        out.setdefault(f.group, []).append(f)
    return list(out.items())


def html_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole ``index.html`` of a report (paths of plots and sheets relative to it)."""
    views = []
    for s in sections:
        table = None
        if s.rows:
            cols, cells = table_cells(s.rows, s.columns)
            hrefs = [[s.links[c].format(row.get(c)) if c in s.links else None for c in cols] for row in s.rows]
            table = (cols, [[(v, bool(_NUM.match(v)), h) for v, h in zip(r, hr)] for r, hr in zip(cells, hrefs)])
        views.append({"title": s.title, "slug": s.slug, "text": s.text, "plot": s.plot is not None,
                      "plot_path": s.plot_path, "table": table, "rows": s.rows, "groups": _groups(s.sheets)})
    return _PAGE.render(title=title, subtitle=subtitle, sections=views)


def section_markdown(s: Section, max_rows: int = 30) -> str:
    """One section as Markdown: its title, text, plot inline (base64 PNG), table, and where its sheets are."""
    lines = [f"#### {s.title}"]
    if s.text:
        lines.append(s.text)
    if s.plot is not None:
        lines.append(f"![{s.title}]({data_uri(s.plot)})")
    if s.rows is not None:
        lines.append(markdown_rows(s.rows, s.columns, max_rows=max_rows))
    if s.sheets:
        lines.append(f"{len(s.sheets)} contact sheets in the report folder, e.g. `{s.sheets[0].png}`")
    return "\n\n".join(lines)


def markdown_summary(title: str, sections: Sequence[Section], report_path: str | None = None,
                     max_rows: int = 30) -> str:
    """Markdown of the sections marked ``in_markdown`` (:func:`section_markdown`), under ``title``."""
    lines = [f"### {title}"]
    if report_path:
        lines.append(f"Full report (open in a browser, no Dagster needed): `{report_path}`")
    lines += [section_markdown(s, max_rows) for s in sections if s.in_markdown]
    return "\n\n".join(lines)
