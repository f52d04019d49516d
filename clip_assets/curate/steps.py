"""What each curate asset computes, one function per asset: subsets, the truth report, the N-gram analysis.

Each function reads the warehouse, computes through :mod:`clip_assets.curate.filters` (DuckDB over Parquet) and
:mod:`clip_assets.curate.report`, writes its tables through :mod:`clip_assets.io.commit` and returns what the
asset records. Bad configuration raises :class:`~clip_assets.curate.filters.FilterConfigError` (a ValueError);
an empty pool raises ValueError.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from clip_assets.curate import filters as F
from clip_assets.curate import report as R
from clip_assets.io import catalog, fs
from clip_assets.io.catalog import load_sql
from clip_assets.io.commit import stage_dir, write_table
from clip_assets.io.exports import read_summary
from clip_assets.io.warehouse import asset_dir

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# ------------------------------------------------------------------------------------------- curated_subsets
@dataclass
class SubsetsOutcome:
    """curated_subsets' run: the pool, one result per filter, counts read back per subset, and the checks."""

    pool: F.PoolInfo
    results: list[F.SubsetResult]
    counts: dict[str, dict[str, int]]
    seconds: float

    @property
    def unbalanced(self) -> dict[str, dict[str, int]]:
        """Subsets whose decisions do not cover the pool once each (kept + dropped = pool, reasons right)."""
        n = self.pool.rows
        return {name: c for name, c in self.counts.items()
                if not (c["rows"] == n and c["kept"] + c["dropped"] == c["rows"] and c["distinct_uids"] == c["rows"]
                        and c["dropped_without_reason"] == 0 and c["kept_with_reason"] == 0)}

    @property
    def single_lineage(self) -> bool:
        return len(self.pool.model_ids) <= 1 and len(self.pool.reference_ids) <= 1


def curate_subsets(home: Path, filters_path: str | None, threads: int | None = None,
                   log: Log = _quiet) -> SubsetsOutcome:
    """Load the filters (``filters_path`` or the package default), build every subset over the whole pool and
    commit ``warehouse/curated_subsets/``; counts are read back from the committed decisions."""
    specs = F.load_filters(filters_path or None)
    t0 = time.perf_counter()
    pool, results = F.build_subsets(home, specs, threads=threads, log=log)
    with catalog.scratch(threads) as con:
        counts = {r.name: F.subset_counts(con, r.path) for r in results}
    return SubsetsOutcome(pool, results, counts, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------- curation_report
def stored_filters(home: Path, log: Log = _quiet) -> tuple[F.FilterSpec, ...]:
    """The filters curated_subsets last ran with (its summary's definition), else the package default."""
    summary = read_summary(home)
    if summary is not None and summary.num_rows:
        return F.filters_from_json(summary["definition"][0].as_py(), source="curated_subsets summary")
    log("curated_subsets has no summary yet: using the package's default filters")
    return F.load_filters()


@dataclass
class ReportOutcome:
    """curation_report's run: one row per filter (REPORT_SCHEMA), the filters, and what the pool held."""

    rows: list[dict]
    specs: tuple[F.FilterSpec, ...]
    pool_rows: int
    drops: list[str]
    truth_drops: list[str]

    @property
    def shares_valid(self) -> bool:
        cols = ("aligned_share", "misaligned_share", "placeholder_share", "placeholders_kept")
        return all(r[c] is None or (0.0 <= r[c] <= 1.0 and not math.isnan(r[c])) for r in self.rows for c in cols)

    @property
    def covers_every_filter(self) -> bool:
        return [r["filter"] for r in self.rows] == [s.name for s in self.specs]


def curation_report(home: Path, landing: Path, keep_fraction: float, log: Log = _quiet) -> ReportOutcome:
    """Every stored filter at ``keep_fraction`` over the pool, with the synthetic truth of its kept rows; writes
    ``warehouse/curation_report/curation_report.parquet`` when any scored drop has a truth file (``rows`` is
    empty and nothing is written otherwise)."""
    specs = stored_filters(home, log)
    drops, _ = F.pool_files(home)
    truth, truth_drops = R.truth_files(landing, drops)
    if not truth:
        return ReportOutcome([], specs, 0, drops, [])
    at_f = [s.at_fraction(keep_fraction) for s in specs]
    with catalog.scratch() as con, F.scratch_dir(home) as scratch:
        fs.register_duckdb(con, landing)  # truth files on a store landing are read as s3://... URLs
        pool = F.build_pool(con, home, Path(scratch) / "pool.parquet")
        results = F.run_filters(con, pool, at_f, Path(scratch) / "subsets")
        rows = R.curation_report_rows(con, at_f, results, truth, keep_fraction)
    write_table(asset_dir("curation_report", home) / "curation_report.parquet",
                pa.Table.from_pylist(rows, schema=R.REPORT_SCHEMA))
    return ReportOutcome(rows, specs, pool.rows, drops, truth_drops)


# ------------------------------------------------------------------------------------------- ngram_analysis
@dataclass
class NgramOutcome:
    """ngram_analysis' run: coverage and correlation tables, the captions analysed and the pool size."""

    coverage: pa.Table
    correlations: pa.Table
    captions: int
    pool_rows: int
    drops: list[str]
    seconds: float
    checks: dict = field(default_factory=dict)


def ngram_analysis(home: Path, max_rows: int, seed: int, ns: Sequence[int], ks: Sequence[int]) -> NgramOutcome:
    """Captions of the deduplicated pool (a seeded sample of at most ``max_rows``) split into KL deciles per
    side; writes ``warehouse/ngram_analysis/{coverage,correlations}.parquet`` as one commit."""
    t0 = time.perf_counter()
    drops, files = F.pool_files(home, assets=("kl_stats", "raw_pairs"))
    if not drops:
        raise ValueError("no drop has both kl_stats and raw_pairs yet")
    with catalog.scratch() as con:
        table = con.sql(load_sql("queries/curate_ngram_pool"), params={
            "kl_files": files["kl_stats"], "raw_files": files["raw_pairs"], "max_rows": max_rows,
            "seed": seed}).to_arrow_table()
    kl = {c: table[c].to_numpy(zero_copy_only=False) for _, c in R.SIDES}
    coverage, corr = R.ngram_tables(table["caption"].to_pylist(), kl, ns, ks)
    with stage_dir(asset_dir("ngram_analysis", home)) as w:
        w.write_table("coverage.parquet", coverage)
        w.write_table("correlations.parquet", corr)
    pool_rows = int(table["pool_rows"][0].as_py()) if table.num_rows else 0
    return NgramOutcome(coverage, corr, table.num_rows, pool_rows, drops, time.perf_counter() - t0,
                        R.coverage_checks(coverage, ns, table.num_rows))
