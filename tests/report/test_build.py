"""Contact sheets show exactly the samples they claim; the HTML report references files that exist; the
"since the last materialization" table is right after a second drop arrives."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_assets.defs.plots import report_metadata
from clip_assets.io.exports import decisions_path, read_summary, subsets_dir
from clip_assets.report import build, collect, select
from clip_assets.report.format import fmt
from clip_assets.report.sheets import COLUMNS, THUMB, TILE_W
from report_world import add_drop, world_home  # noqa: F401 - pytest fixtures

N = 6  # images per sheet


def _read(home: Path, asset: str, columns: list[str]) -> list[dict]:
    files = sorted((home / "warehouse" / asset).glob("drop=*/*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=columns).to_pylist()]


def _truth(home: Path, subset: str, column: str | None) -> dict[str, dict]:
    """uid -> {keep, score (None for NaN/missing)} from the subset's decisions and the score Parquet."""
    d = pq.read_table(decisions_path(subset, subsets_dir(home))).to_pylist()
    scores = {}
    if column:
        asset = "kl_stats" if column.startswith(("text_", "image_")) else "pair_scores"
        for r in _read(home, asset, ["uid", "drop", column]):
            v = r[column]
            scores[(r["uid"], str(r["drop"]))] = None if v is None or math.isnan(v) else v
    return {r["uid"]: {"keep": r["keep"], "score": scores.get((r["uid"], r["drop"]))} for r in d}


def _expected(truth: dict[str, dict], side: str, n: int) -> list[str]:
    kept = [(u, t["score"]) for u, t in truth.items() if t["keep"]]
    dropped = [(u, t["score"]) for u, t in truth.items() if not t["keep"]]
    inf = float("inf")
    if side == "kept_top":
        rows = sorted(kept, key=lambda r: (-r[1], r[0]))
    elif side == "kept_near":
        rows = sorted(kept, key=lambda r: (r[1], r[0]))
    elif side == "dropped_near":
        rows = sorted([r for r in dropped if r[1] is not None], key=lambda r: (-r[1], r[0]))
    elif side == "dropped_bottom":
        rows = sorted(dropped, key=lambda r: (r[1] is None, r[1] if r[1] is not None else inf, r[0]))
    else:
        rows = sorted(kept if side == "kept_sample" else dropped)
    return [u for u, _ in rows[:n]]


def test_subset_sheets_show_exactly_the_rows_they_claim(world_home):
    rep = build.curated_subsets_report(world_home, "run-one", per_sheet=N)
    summary = {s["subset"]: s for s in read_summary(world_home).to_pylist()}
    seen_sides = set()
    for f in rep.sheets:
        m = json.loads((rep.folder / f.json).read_text())
        if not f.name.startswith("subset-"):
            continue
        s = summary[m["subset"]]
        truth = _truth(world_home, m["subset"], s["column"])
        assert m["uids"] == _expected(truth, m["side"], N), f.name
        assert [x["uid"] for x in m["samples"]] == m["uids"] and m["count"] == len(m["uids"]) == f.count
        for x in m["samples"]:
            assert x["keep"] == truth[x["uid"]]["keep"]
            assert x["score"] == truth[x["uid"]]["score"]
            assert (x["reason"] is None) == x["keep"]
            assert x["keep"] or x["reason"].startswith(("kl_text:", "clip_min:"))
            if m["side"].startswith("kept"):
                assert x["keep"] and (s["threshold"] is None or x["score"] >= s["threshold"])
            else:
                assert not x["keep"]
                if m["side"] == "dropped_near":
                    assert x["score"] < s["threshold"]
        if m["side"] == "kept_near" and s["kind"] == "keep_fraction":
            assert m["samples"][0]["score"] == s["threshold"]  # the k-th largest value is itself kept
        seen_sides.add((m["subset"], m["side"]))
        assert f.unreadable == 0 and len(m["uids"]) == min(N, len(set(m["uids"])))
    assert {("kl_text", s) for s in select.SUBSET_SIDES} <= seen_sides
    assert {("everything", "kept_sample"), ("both", "kept_sample"), ("both", "dropped_sample")} <= seen_sides
    # ties: the keep-fraction subset keeps more than k and the report says so
    kl = summary["kl_text"]
    assert kl["kept"] > kl["k"]
    html = rep.index.read_text()
    assert "ties at the threshold are kept" in html and f"{kl['kept'] - kl['k']}" in html


def test_sheet_png_matches_its_json(world_home):
    rep = build.curated_subsets_report(world_home, "run-png", per_sheet=N, deciles=False)
    f = next(f for f in rep.sheets if f.name == "subset-kl_text-kept_top")
    with Image.open(rep.folder / f.png) as im:
        assert im.format == "PNG"
        assert im.width == max(min(COLUMNS, f.count), 4) * TILE_W and im.height > THUMB * math.ceil(f.count / COLUMNS)
        # every tile's thumbnail area has image pixels (not the white background)
        px = np.asarray(im.convert("L"))
    tile_h = (px.shape[0] - 44) // math.ceil(f.count / COLUMNS)
    for i in range(f.count):
        x0, y0 = (i % COLUMNS) * TILE_W, 44 + (i // COLUMNS) * tile_h
        cx = x0 + TILE_W // 2
        assert px[y0 + 10: y0 + THUMB, cx - 40: cx + 40].std() > 1.0, f"tile {i} is blank"


def test_decile_sheets_follow_ntile_by_value_then_uid(world_home):
    con = select.connect()
    sheets = collect.decile_sheets(con, world_home, ["text_kl"], n=N)
    con.close()
    t = _read(world_home, "kl_stats", ["uid", "text_kl"])
    rows = sorted(((r["text_kl"], r["uid"]) for r in t if not math.isnan(r["text_kl"])))
    m = len(rows)
    sizes = [m // 10 + (1 if i < m % 10 else 0) for i in range(10)]  # ntile: the first m % 10 are one larger
    start = 0
    assert [s.extra["decile"] for s in sheets] == list(range(1, 11))
    for s, size in zip(sheets, sizes):
        part = rows[start:start + size]
        start += size
        assert [r["uid"] for r in s.rows] == sorted(u for _, u in part)[:N]
        assert (s.extra["lo"], s.extra["hi"], s.extra["rows_in_decile"]) == (part[0][0], part[-1][0], size)


def test_html_references_existing_files_and_markdown_inlines_plots(world_home):
    rep = build.curated_subsets_report(world_home, "run-html", per_sheet=N)
    html = rep.index.read_text()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs and all((rep.folder / r).is_file() for r in refs)
    assert {f.png for f in rep.sheets} <= set(refs) and {f.json for f in rep.sheets} <= set(refs)
    assert "plots/text-kl-histogram.png" in refs and "nan" not in html.lower().replace("nanosec", "")
    assert "data:image/png;base64," in rep.markdown and str(rep.index) in rep.markdown
    assert (rep.folder / build.STATE_FILE).is_file()
    listing = rep.folder.parent / "index.html"
    links = re.findall(r'href="([^"#]+)"', listing.read_text())
    assert f"{rep.folder.name}/index.html" in links and all((listing.parent / h).is_file() for h in links)


def test_since_last_after_a_second_drop(world_home, add_drop):
    first_drop = read_summary(world_home)
    rep1 = build.curated_subsets_report(world_home, "run-a", per_sheet=2, deciles=False)
    assert "no earlier report" in rep1.markdown
    before = {s["subset"]: s for s in first_drop.to_pylist()}
    second = add_drop(world_home, 1)
    after = {s["subset"]: s for s in read_summary(world_home).to_pylist()}
    rep2 = build.curated_subsets_report(world_home, "run-b", per_sheet=2, deciles=False)
    state = json.loads((rep2.folder / build.STATE_FILE).read_text())
    assert state["drops"] == sorted(["synth-s5-000", second])
    assert f"drops added: {second}" in rep2.markdown
    for name in before:
        b, a = before[name], after[name]
        assert a["pool"] == b["pool"] * 2  # two disjoint drops of the same size
        line = next(x for x in rep2.markdown.splitlines() if x.startswith(f"| {name} | "))  # since-last is first
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == ("same" if (a["kept"], a["threshold"]) == (b["kept"], b["threshold"]) else "changed")
        assert cells[3] == f"{fmt(b['threshold'])} -> {fmt(a['threshold'])}", (name, cells)
        assert cells[4:7] == [f"{b['kept']:,} -> {a['kept']:,}", f"{a['kept'] - b['kept']:+,}",
                              f"{b['pool']:,} -> {a['pool']:,}"], (name, cells)
    # kept per drop: the table sums to the subset's kept count
    con = select.connect()
    per = select.kept_per_drop(con, world_home)
    con.close()
    for name, a in after.items():
        assert sum(r["kept"] for r in per if r["subset"] == name) == a["kept"]
        assert sorted(r["drop"] for r in per if r["subset"] == name) == state["drops"]


def test_drop_report_has_sample_and_decile_sheets(world_home):
    rep = build.drop_report(world_home, "kl_stats", "synth-s5-000", "run-d", per_sheet=4)
    names = [f.name for f in rep.sheets]
    assert names[0] == "drop-synth-s5-000" and sum(n.startswith("decile-") for n in names) == 20
    raw = sorted(r["uid"] for r in _read(world_home, "raw_pairs", ["uid"]))
    m = json.loads((rep.folder / rep.sheets[0].json).read_text())
    clip = {r["uid"]: None if math.isnan(r["clip_score"]) else r["clip_score"]
            for r in _read(world_home, "pair_scores", ["uid", "clip_score"])}
    assert m["uids"] == raw[:4] and [x["score"] for x in m["samples"]] == [clip[u] for u in raw[:4]]
    assert rep.index.is_file() and rep.folder.parent.name == "kl_stats"


def test_drop_reports_are_pruned_per_drop(world_home):
    drop = "synth-s5-000"
    reps = [build.drop_report(world_home, "pair_scores", drop, f"run-p{i}", per_sheet=1, deciles=False)
            for i in range(3)]
    # another drop whose name ends like this one's: told apart by state.json, not by the folder name
    other = build.write_report(world_home, "pair_scores", build.run_key("run-o", f"x-{drop}"), "other", [],
                               state={"drop": f"x-{drop}"})
    assert build.prune(world_home, "pair_scores", keep=2, drop=drop) == [reps[0].folder.name]
    assert not reps[0].folder.exists() and reps[1].index.is_file() and reps[2].index.is_file()
    assert other.index.is_file()
    assert build.prune(world_home, "pair_scores", keep=2, drop=drop) == []


def test_unreadable_images_are_marked_not_skipped(world_home):
    for tar in (world_home / "landing" / "synth-s5-000").glob("*.tar"):
        tar.write_bytes(b"")  # the pointers now point past the end of the file
    rep = build.drop_report(world_home, "raw_pairs", "synth-s5-000", "run-bad", per_sheet=3)
    f = rep.sheets[0]
    m = json.loads((rep.folder / f.json).read_text())
    assert f.count == 3 and f.unreadable == 3 and len(m["uids"]) == 3
    assert all("short read" in x["error"] for x in m["samples"])  # read_pointer: fewer bytes than the pointer says
    assert "(3 unreadable)" in rep.index.read_text()


def test_unknown_column_and_bad_sizes_are_refused(world_home):
    con = select.connect()
    try:
        with pytest.raises(ValueError, match="'text_kll'.*text_kl"):
            select.histogram(con, world_home, "text_kll")
        with pytest.raises(ValueError, match="images per sheet .* got 0"):
            select.subset_rows(con, world_home, "kl_text", "kept_top", 0, "text_kl")
        with pytest.raises(ValueError, match="unknown sheet side 'middle'"):
            select.subset_rows(con, world_home, "kl_text", "middle", 3, "text_kl")
        with pytest.raises(FileNotFoundError, match="'nope'"):
            select.subset_rows(con, world_home, "nope", "kept_top", 3, "text_kl")
    finally:
        con.close()


def test_report_metadata_and_prune(world_home):
    reps = [build.curated_subsets_report(world_home, f"run-{i}", per_sheet=1, deciles=False) for i in range(3)]
    md = report_metadata(reps[-1])
    assert md["report"].value == str(reps[-1].index) and md["report_url"].value.startswith("file://")
    assert md["summary"].value == reps[-1].glance and md["report_details"].value == reps[-1].markdown
    removed = build.prune(world_home, "curated_subsets", keep=2)
    assert removed == [reps[0].folder.name] and not reps[0].folder.exists() and reps[2].index.is_file()
    listing = (reps[0].folder.parent / "index.html").read_text()
    assert reps[0].folder.name not in listing and listing.index(reps[2].folder.name) < listing.index(reps[1].folder.name)
    # the newest remaining report is what the next one compares with
    assert build.previous_state(world_home, "curated_subsets", "~")["drops"] == ["synth-s5-000"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        build.prune(world_home, "curated_subsets", keep=0)


def test_the_three_line_wiring_materializes_in_dagster(world_home):
    @dg.asset(name="curated_subsets_report_probe")
    def probe(context):
        rep = build.curated_subsets_report(world_home, context.run_id, per_sheet=2, deciles=False)
        return dg.MaterializeResult(metadata=report_metadata(rep))

    result = dg.materialize([probe], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (mat,) = result.asset_materializations_for_node("curated_subsets_report_probe")
    index = Path(mat.metadata["report"].value)
    assert index.is_file() and index.parent.name.endswith(result.run_id[:8])
    assert mat.metadata["report_details"].value.startswith("### curated_subsets")
    assert mat.metadata["summary"].value.startswith("**curated_subsets**") and len(mat.metadata["summary"].value) < 1000
