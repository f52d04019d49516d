"""``clip-assets``: the headless side of the platform, next to the Dagster UI.

Subcommands: synth, materialize, status, sql, export, demo (``clip-assets <cmd> --help`` explains each).
They use the data home ($CLIP_ASSETS_HOME, else data/ under the project) and the Dagster instance in
$DAGSTER_HOME, else the project's own dagster.yaml, so runs made here show up in ``dagster dev`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from clip_assets import config


def _instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        root = config.project_root()
        if root is not None and (root / "dagster.yaml").is_file():
            os.environ["DAGSTER_HOME"] = str(root)
            os.chdir(root)  # dagster.yaml's storage paths are relative to the project root
        else:
            return dg.DagsterInstance.ephemeral()
    return dg.DagsterInstance.get()


def _print_table(table, fmt: str = "table", max_rows: int = 50) -> None:
    import polars as pl

    df = pl.from_arrow(table)
    if fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(df.write_json() + "\n")
    else:
        with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200,
                       tbl_hide_dataframe_shape=False):
            print(df)


# ---------------------------------------------------------------- synth
def cmd_synth(args) -> int:
    from clip_assets.world import write_drops

    out = Path(args.out) if args.out else config.landing_dir()
    t0 = time.perf_counter()
    paths = write_drops(out, drops=args.drops, pairs=args.pairs, seed=args.seed, shard_size=args.shard_size,
                        image_format=args.image_format, start=args.start)
    dt = time.perf_counter() - t0
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} drop(s) x {args.pairs} pairs to {out} in {dt:.1f}s", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- materialize
def _register_complete_drops(instance) -> list[str]:
    from clip_assets.defs.ingest.sensors import plan_landing
    from clip_assets.defs.partitions import drops_partitions

    known = set(instance.get_dynamic_partitions(drops_partitions.name))
    new, _, bad = plan_landing(config.landing_dir(), known)
    if bad:
        print(f"skipping landing folders with unsafe names: {bad}", file=sys.stderr)
    if new:
        instance.add_dynamic_partitions(drops_partitions.name, new)
    return sorted(known | set(new))


def plan_stages(graph, keys) -> list[tuple[str, list]]:
    """Split selected asset keys into stages in dependency order: ("drop", keys) runs once per drop,
    ("global", keys) once. Keys of one topological level are independent; consecutive same-grain levels merge."""
    stages: list[tuple[str, list]] = []
    for level in graph.toposorted_asset_keys_by_level:
        chosen = sorted((k for k in level if k in keys), key=lambda k: k.to_user_string())
        for grain in ("drop", "global"):
            part = [k for k in chosen if (graph.get(k).tags or {}).get("grain") == grain]
            if not part:
                continue
            if stages and stages[-1][0] == grain:
                stages[-1][1].extend(part)
            else:
                stages.append((grain, part))
    return stages


def _stage_config(run_config: dict | None, stage, graph) -> dict:
    """The part of ``{"ops": {op_name: {"config": ...}}}`` that belongs to the ops of this stage."""
    if not run_config:
        return {}
    ops = {graph.get(k).assets_def.node_def.name for k in stage}
    return {"ops": {k: v for k, v in run_config.get("ops", {}).items() if k in ops}}


def materialize(select: str | None, drops: list[str] | None, all_drops: bool, skip_global: bool = False,
                log=print, run_config: dict | None = None) -> dict:
    """Materialize the selected assets in dependency order: per-drop stages for the chosen drops, global stages
    once. Returns the seconds spent per stage."""
    import dagster as dg

    from clip_assets.definitions import defs
    from clip_assets.io.drops import validate_drop_name

    instance = _instance()
    known = _register_complete_drops(instance)
    if drops:
        for d in drops:
            validate_drop_name(d)
            if d not in known:
                raise SystemExit(f"drop {d!r} is not a complete drop in {config.landing_dir()} (known: {known})")
        todo = drops
    else:
        todo = known if all_drops else []
    graph = defs.resolve_asset_graph()
    all_assets = [*(defs.assets or []), *(defs.asset_checks or [])]
    resources = defs.resources or {}
    sel = dg.AssetSelection.from_string(select) if select else dg.AssetSelection.all()
    keys = set(sel.resolve(graph))
    timings: dict[str, float] = {}
    for grain, stage in plan_stages(graph, keys):
        names = ", ".join(k.to_user_string() for k in stage)
        if grain == "global":
            if skip_global:
                continue
            t0 = time.perf_counter()
            log(f"materializing {names} ...")
            res = dg.materialize(all_assets, selection=stage, instance=instance, resources=resources,
                                 raise_on_error=False, run_config=_stage_config(run_config, stage, graph))
            if not res.success:
                raise SystemExit(f"run of {names} failed (run {res.run_id}): see its log in `dagster dev`")
            timings[names] = timings.get(names, 0.0) + time.perf_counter() - t0
            continue
        for d in todo:
            t0 = time.perf_counter()
            log(f"materializing {names} for drop {d} ...")
            res = dg.materialize(all_assets, selection=stage, partition_key=d, instance=instance,
                                 resources=resources, raise_on_error=False,
                                 run_config=_stage_config(run_config, stage, graph))
            if not res.success:
                raise SystemExit(f"run of {names} for drop {d} failed (run {res.run_id}): see `dagster dev`")
            timings[f"{names} [{len(todo)} drops]"] = (
                timings.get(f"{names} [{len(todo)} drops]", 0.0) + time.perf_counter() - t0)
    return timings


def cmd_materialize(args) -> int:
    timings = materialize(args.select, args.drop, args.all_drops, skip_global=args.no_global)
    for k, v in timings.items():
        print(f"{k:<40s} {v:8.1f}s")
    return 0


# ---------------------------------------------------------------- status
def cmd_status(args) -> int:
    import pyarrow as pa

    from clip_assets.definitions import defs
    from clip_assets.defs.partitions import drops_partitions
    from clip_assets.io.drops import scan_landing

    instance = _instance()
    known = set(instance.get_dynamic_partitions(drops_partitions.name))
    graph = defs.resolve_asset_graph()
    import dagster as dg

    per_drop_keys = sorted(dg.AssetSelection.tag("grain", "drop").resolve(graph), key=lambda k: k.to_user_string())
    materialized = {k: set(instance.get_materialized_partitions(k)) for k in per_drop_keys}
    landing = {st.name: st for st in scan_landing(config.landing_dir())}
    rows = []
    for name in sorted(set(landing) | known):
        st = landing.get(name)
        row = {
            "drop": name,
            "landing": "missing" if st is None else ("complete" if st.complete else
                                                     ("bad name" if st.name_error else "incomplete")),
            "partition": name in known,
        }
        for k in per_drop_keys:
            row[k.to_user_string()] = name in materialized[k]
        rows.append(row)
    print(f"data home: {config.data_home()}")
    if not rows:
        print("no drops yet: put drops in", config.landing_dir(), "or run `clip-assets synth`")
        return 0
    _print_table(pa.Table.from_pylist(rows), args.format)
    glob = sorted(dg.AssetSelection.tag("grain", "global").resolve(graph), key=lambda k: k.to_user_string())
    g_rows = []
    for k in glob:
        ev = instance.get_latest_materialization_event(k)
        g_rows.append({"global asset": k.to_user_string(),
                       "last materialized": "never" if ev is None else
                       time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.timestamp))})
    if g_rows:
        _print_table(pa.Table.from_pylist(g_rows), args.format)
    return 0


# ---------------------------------------------------------------- sql
def cmd_sql(args) -> int:
    from clip_assets.io import catalog

    if not args.no_refresh:
        catalog.refresh_views()
    params = [json.loads(p) if args.json_params else p for p in (args.param or [])]
    table = catalog.query(args.query, params)
    _print_table(table, args.format, args.max_rows)
    return 0


# ---------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from clip_assets.io import catalog
    from clip_assets.world import write_drops

    t_all = time.perf_counter()
    landing = config.landing_dir()
    print(f"data home: {config.data_home()}")
    existing = [p for p in landing.glob(f"synth-s{args.seed}-*") if p.is_dir()] if landing.exists() else []
    if len(existing) < args.drops:
        t0 = time.perf_counter()
        write_drops(landing, drops=args.drops, pairs=args.pairs, seed=args.seed)
        print(f"synthetic drops: {args.drops} x {args.pairs} pairs written in {time.perf_counter() - t0:.1f}s")
    else:
        print(f"synthetic drops already in {landing}: {len(existing)}")
    timings = materialize(None, None, all_drops=True)
    views = set(catalog.refresh_views())
    for title, query, needs in (("drops", "queries/demo_summary", "drops"),
                                ("estimates vs exact truth", "queries/demo_calibration", "score_calibration"),
                                ("curated subsets at 25% (synthetic truth)", "queries/demo_curation",
                                 "curation_report")):
        if needs in views:
            print(f"\n{title}")
            _print_table(catalog.query(catalog.load_sql(query)))
    iwl = config.models_dir() / "iwl" / "eval.md"
    if iwl.is_file():
        print("\nImportance Weight Learning (target domain, zero-shot)")
        print(iwl.read_text())
    print()
    for k, v in timings.items():
        print(f"  {k:<60s} {v:8.1f}s")
    print(f"demo chain total: {time.perf_counter() - t_all:.1f}s")
    return 0


# ---------------------------------------------------------------- export
def cmd_export(args) -> int:
    from clip_assets.io.exports import ExportError, UnknownSubset, export_subset

    try:
        res = export_subset(args.subset, args.format, Path(args.out) if args.out else None,
                            samples_per_shard=args.samples_per_shard)
    except UnknownSubset as e:
        raise SystemExit(f"clip-assets export: {e}") from None
    except ExportError as e:
        raise SystemExit(f"clip-assets export: {e}") from None
    shards = f" in {res.shards} shard(s)" if res.format == "webdataset" else ""
    print(res.path)
    print(f"exported {res.rows} kept samples of subset {res.subset!r} as {res.format}{shards} in "
          f"{res.seconds:.1f}s", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clip-assets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("synth", help="write synthetic drops (img2dataset webdataset layout) with exact ground truth",
                       description="Write N synthetic drops of M pairs each, plus <drop>.truth.parquet and "
                                   "world.json beside them. Same seed, same bytes.")
    s.add_argument("--out", help="folder to write drops into (default: <home>/landing)")
    s.add_argument("--drops", type=int, default=1)
    s.add_argument("--pairs", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--start", type=int, default=0, help="index of the first drop (drop names end in it)")
    s.add_argument("--shard-size", type=int, default=1000)
    s.add_argument("--image-format", default="jpg", choices=["jpg", "png", "webp"])
    s.set_defaults(fn=cmd_synth)

    m = sub.add_parser("materialize", help="materialize assets for drops without the UI",
                       description="Registers every complete landing drop as a partition, then materializes the "
                                   "selected per-drop assets for the chosen drops and then the selected global "
                                   "assets. Selection uses Dagster's syntax, e.g. 'key:raw_pairs', "
                                   "'group:ingest', 'key:raw_pairs+' (with downstream).")
    m.add_argument("--select", help="Dagster asset selection string (default: everything)")
    g = m.add_mutually_exclusive_group()
    g.add_argument("--drop", action="append", help="a drop to materialize (repeatable)")
    g.add_argument("--all-drops", action="store_true", help="every known drop")
    m.add_argument("--no-global", action="store_true", help="skip the global (non-partitioned) assets")
    m.set_defaults(fn=cmd_materialize)

    st = sub.add_parser("status", help="drops in the landing folder and which assets are materialized",
                        description="One row per drop (landing folder or registered partition): whether it is "
                                    "complete in the landing folder, whether it is a 'drops' partition, and for "
                                    "each per-drop asset whether that partition is materialized; then when each "
                                    "global asset was last materialized. A complete drop with any False is what "
                                    "the hourly catchup_schedule requests a process_drop run for.")
    st.add_argument("--format", default="table", choices=["table", "csv", "json"])
    st.set_defaults(fn=cmd_status)

    q = sub.add_parser("sql", help="run one SQL query against the DuckDB catalog and print the result",
                       description="Views: raw_pairs, rejected_pairs, drops and one per downstream table. Bind "
                                   "values with ? and --param, e.g. clip-assets sql \"SELECT * FROM drops WHERE "
                                   "drop = ?\" --param synth-s0-000")
    q.add_argument("query")
    q.add_argument("--param", action="append", help="value bound to the next ? (repeatable)")
    q.add_argument("--json-params", action="store_true", help="parse each --param as JSON (numbers, lists)")
    q.add_argument("--format", default="table", choices=["table", "csv", "json"])
    q.add_argument("--max-rows", type=int, default=50)
    q.add_argument("--no-refresh", action="store_true", help="do not re-create views first")
    q.set_defaults(fn=cmd_sql)

    d = sub.add_parser("demo", help="synthetic drops -> every asset -> a summary, with timings")
    d.add_argument("--drops", type=int, default=2)
    d.add_argument("--pairs", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=cmd_demo)

    e = sub.add_parser("export", help="export a curated subset: DataComp uid .npy, Parquet manifest or webdataset",
                       description="Export the kept samples of one subset of curated_subsets: --format npy writes "
                                   "DIR/SUBSET.npy (DataComp's sorted uid array, dtype u8,u8), parquet writes "
                                   "DIR/SUBSET.parquet (uid, drop, shard, key, caption, scores), webdataset writes "
                                   "DIR/SUBSET/ (img2dataset layout; image bytes copied, never re-encoded). Written "
                                   "atomically (temporary name, then rename).")
    e.add_argument("subset", help="subset name (a filter name of curated_subsets; see the subset_summary view)")
    e.add_argument("--format", required=True, choices=["npy", "parquet", "webdataset"])
    e.add_argument("--out", help="output folder (default: <home>/exports)")
    e.add_argument("--samples-per-shard", type=int, default=10_000, help="webdataset only (default 10000)")
    e.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
