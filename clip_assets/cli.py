"""``clip-assets``: the headless side of the platform, next to the Dagster UI.

Subcommands: synth, materialize, status, sql, export, demo, iwl-report (``clip-assets <cmd> --help`` explains
each).
They use the data home ($CLIP_ASSETS_HOME, else data/ under the project) and the Dagster instance in
$DAGSTER_HOME, else the project's own dagster.yaml, so runs made here show up in ``dagster dev`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import typing
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pydantic
import pyarrow as pa
import yaml
from tqdm import tqdm

from clip_assets import config
from clip_assets.defs.ingest.sensors import plan_landing
from clip_assets.defs.ops.run_health import HOST_TAG, PID_TAG
from clip_assets.defs.partitions import drops_partitions
from clip_assets.io import catalog, fs
from clip_assets.io.commit import write_text
from clip_assets.io.drops import scan_landing, validate_drop_name


def _instance():
    """The Dagster instance of this project (DAGSTER_HOME, else the project's dagster.yaml, else ephemeral); use it
    as a context manager (``with _instance() as instance:``), as Dagster's own CLI does, so that it is disposed and
    Dagster's process-wide state points at it only while the command runs."""
    if not os.environ.get("DAGSTER_HOME"):
        root = config.project_root()
        if root is not None and (root / "dagster.yaml").is_file():
            os.environ["DAGSTER_HOME"] = str(root)
            os.chdir(root)  # dagster.yaml's storage paths are relative to the project root
        else:
            return dg.DagsterInstance.ephemeral()
    return dg.DagsterInstance.get()


def _print_table(table, fmt: str = "table", max_rows: int = 50) -> None:
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
    from clip_assets.world import write_drops  # the synthetic world imports torch

    # a store URL stays a str (a Path would fold its //); a bad scheme or URL fails here, by name
    out = (args.out if fs.is_remote(args.out) else Path(args.out)) if args.out else config.landing_dir()
    t0 = time.perf_counter()
    paths = write_drops(out, drops=args.drops, pairs=args.pairs, seed=args.seed, shard_size=args.shard_size,
                        image_format=args.image_format, start=args.start)
    dt = time.perf_counter() - t0
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} drop(s) x {args.pairs} pairs to {out} in {dt:.1f}s", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- materialize
class MaterializeError(RuntimeError):
    """Some runs of :func:`materialize` failed; every other run was still made. ``failures`` lists them."""

    def __init__(self, failures: list[str], timings: dict[str, float]):
        super().__init__(f"{len(failures)} run(s) failed:\n" + "\n".join(f"  {f}" for f in failures))
        self.failures = failures
        self.timings = timings


def _register_complete_drops(instance) -> list[str]:
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


def with_required_neighbours(graph, keys) -> set:
    """``keys`` plus every other output of each selected multi-asset that cannot be subset (Dagster runs all
    outputs of such an op together, so selecting one of them alone is refused)."""
    out = set(keys)
    for k in keys:
        assets_def = graph.get(k).assets_def
        if not assets_def.can_subset:
            out |= set(assets_def.keys)
    return out


def _stage_config(run_config: dict | None, stage, graph, verbose: bool) -> dict:
    """The part of a launchpad run config that belongs to this stage: its ops' entries, the resources, and the
    console log level (Dagster's event lines only with ``verbose``)."""
    run_config = run_config or {}
    ops = {graph.get(k).assets_def.node_def.name for k in stage}
    out = {k: v for k, v in run_config.items() if k not in ("ops", "execution")}
    out["ops"] = {k: v for k, v in run_config.get("ops", {}).items() if k in ops}
    out.setdefault("loggers", {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}})
    return out


def _config_class(op_def):
    """The dg.Config class an op's ``config`` parameter is annotated with, or None."""
    fn = getattr(op_def.compute_fn, "decorated_fn", None)
    if fn is None or not op_def.compute_fn.has_config_arg():
        return None
    cls = typing.get_type_hints(fn).get("config")
    return cls if isinstance(cls, type) and issubclass(cls, dg.Config) else None


def validate_run_config(run_config: dict, defs) -> None:
    """Check a launchpad-style run config (``ops: {<op>: {config: ...}}``, ``resources``) against the code
    location's asset job as the UI does, then each op's config against its dg.Config class (pydantic
    constraints); raise ValueError listing every error."""
    if not isinstance(run_config, dict):
        raise ValueError(f"run config must be a mapping, got {type(run_config).__name__}")
    job = defs.resolve_implicit_global_asset_job_def()
    nodes = job.graph.node_dict
    unknown = sorted(set(run_config.get("ops") or {}) - set(nodes))
    if unknown:
        raise ValueError(f"unknown op(s) in run config: {unknown} (ops: {sorted(nodes)})")
    try:
        dg.validate_run_config(job, {k: v for k, v in run_config.items() if k != "execution"})
    except dg.DagsterInvalidConfigError as e:
        raise ValueError("invalid run config:\n" + "\n".join(f"  {err.message}" for err in e.errors)) from None
    errors = []
    for name, entry in (run_config.get("ops") or {}).items():
        cls = _config_class(nodes[name].definition)
        try:
            if cls is not None:
                cls(**((entry or {}).get("config") or {}))
        except pydantic.ValidationError as e:
            errors += [f"  ops.{name}.config.{'.'.join(map(str, err['loc']))}: {err['msg']} "
                       f"(got {err.get('input')!r})" for err in e.errors()]
    if errors:
        raise ValueError("invalid run config:\n" + "\n".join(errors))


def load_run_config(path: str | os.PathLike) -> dict:
    """Read a run config YAML file (the UI launchpad's format)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"cannot read run config {path}: {e.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    return loaded or {}


def _resolve_drops(instance, drops: list[str] | None, all_drops: bool) -> list[str]:
    known = _register_complete_drops(instance)
    if not drops:
        return known if all_drops else []
    for d in drops:
        validate_drop_name(d)
        if d not in known:
            raise SystemExit(f"drop {d!r} is not a complete drop in {config.landing_dir()} (known: {known})")
    return list(drops)


def _run(select, run_config: dict, tags: dict, **kw) -> tuple[bool, str]:
    """One in-process run of ``select``; (success, run id or error)."""
    from clip_assets.definitions import defs  # loads every asset module (and torch); `synth`/`sql` need none

    try:
        res = dg.materialize([*(defs.assets or []), *(defs.asset_checks or [])], selection=select,
                             resources=defs.resources or {}, raise_on_error=False, run_config=run_config,
                             tags=tags, **kw)
    except dg.DagsterError as e:
        return False, f"{type(e).__name__}: {e}"
    if res.success:
        return True, res.run_id
    why = [_root_cause(ev.event_specific_data.error) for ev in res.get_step_failure_events()
           if ev.event_specific_data is not None and ev.event_specific_data.error is not None]
    return False, f"run {res.run_id}" + (f": {why[0]}" if why else "")


def _root_cause(error) -> str:
    """First line of the innermost cause of a Dagster error (the user code's own message)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip().splitlines()[0]


def _drop_stage(stage, names, todo, run_config, instance, failed, timings) -> list[str]:
    """Run one per-drop stage for every drop still healthy; returns failure lines. A failed drop is left out of
    later per-drop stages (``failed``)."""
    errors = []
    todo = [d for d in todo if d not in failed]
    bar = tqdm(todo, desc=names, unit="drop", file=sys.stderr, disable=not todo or not sys.stderr.isatty())
    for d in bar:
        t0 = time.perf_counter()
        ok, rid = _run(stage, run_config, _run_tags(), partition_key=d, instance=instance)
        timings[f"{names} [{len(todo)} drops]"] = timings.get(f"{names} [{len(todo)} drops]", 0.0) + (
            time.perf_counter() - t0)
        if not ok:
            failed.add(d)
            errors.append(f"{names} for drop {d}: failed ({rid}); later per-drop stages skip this drop")
        if bar.disable:
            print(f"    {d}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return errors


def _run_tags() -> dict:
    """Where this run's process lives (the run-health sensor fails the run if that process disappears)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def materialize(select: str | None, drops: list[str] | None, all_drops: bool, skip_global: bool = False,
                log=print, run_config: dict | None = None, verbose: bool = False) -> dict:
    """Materialize the selected assets in dependency order: per-drop stages for the chosen drops, global stages
    once. A failed drop does not stop the other drops or the global stages; a failed global stage stops the
    stages after it. Returns the seconds spent per stage; raises MaterializeError at the end if any run failed."""
    from clip_assets.definitions import defs  # see _run

    if run_config:
        validate_run_config(run_config, defs)
    with _instance() as instance:
        return _materialize(defs, instance, select, drops, all_drops, skip_global, log, run_config, verbose)


def _materialize(defs, instance, select, drops, all_drops, skip_global, log, run_config, verbose) -> dict:
    todo = _resolve_drops(instance, drops, all_drops)
    graph = defs.resolve_asset_graph()
    sel = dg.AssetSelection.from_string(select) if select else dg.AssetSelection.all()
    keys = with_required_neighbours(graph, set(sel.resolve(graph)))
    stages = [(g, s) for g, s in plan_stages(graph, keys) if not (skip_global and g == "global")]
    timings: dict[str, float] = {}
    failures: list[str] = []
    failed_drops: set[str] = set()
    for i, (grain, stage) in enumerate(stages, 1):
        names = ", ".join(k.to_user_string() for k in stage)
        cfg = _stage_config(run_config, stage, graph, verbose)
        if grain == "drop":
            log(f"[{i}/{len(stages)}] {names}: {len([d for d in todo if d not in failed_drops])} drop(s)")
            failures += _drop_stage(stage, names, todo, cfg, instance, failed_drops, timings)
            continue
        log(f"[{i}/{len(stages)}] {names}")
        t0 = time.perf_counter()
        ok, rid = _run(stage, cfg, _run_tags(), instance=instance)
        timings[names] = timings.get(names, 0.0) + time.perf_counter() - t0
        if not ok:
            failures.append(f"{names}: failed ({rid}); the {len(stages) - i} stage(s) after it were not run")
            break
    if failures:
        raise MaterializeError(failures, timings)
    return timings


def cmd_materialize(args) -> int:
    try:
        run_config = load_run_config(args.config) if args.config else None
        timings = materialize(args.select, args.drop, args.all_drops, skip_global=args.no_global,
                              run_config=run_config, verbose=args.verbose)
    except ValueError as e:
        print(f"clip-assets materialize: {e}", file=sys.stderr)
        return 2
    except MaterializeError as e:
        _print_timings(e.timings)
        print(f"clip-assets materialize: {e}\nsee each run's log in `dagster dev` (Runs page)", file=sys.stderr)
        return 1
    _print_timings(timings)
    return 0


def _print_timings(timings: dict[str, float]) -> None:
    for k, v in timings.items():
        print(f"{k:<40s} {v:8.1f}s")


# ---------------------------------------------------------------- status
def cmd_status(args) -> int:
    from clip_assets.definitions import defs  # see _run

    with _instance() as instance:
        return _status(defs, instance, args)


def _status(defs, instance, args) -> int:
    known = set(instance.get_dynamic_partitions(drops_partitions.name))
    graph = defs.resolve_asset_graph()
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
    if not args.no_refresh:
        catalog.refresh_views()
    params = [json.loads(p) if args.json_params else p for p in (args.param or [])]
    try:
        table = catalog.query(args.query, params, restricted=True)
    except (PermissionError, duckdb.Error) as e:
        print(f"clip-assets sql: {e}", file=sys.stderr)
        return 2
    _print_table(table, args.format, args.max_rows)
    return 0


# ---------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from clip_assets.world import write_drops  # the synthetic world imports torch

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
    failed = None
    from clip_assets.defs.iwl.assets import DEMO_SEEDS  # Dagster definitions: only for commands that run assets
    iwl_config = {"ops": {"iwl_models": {"config": {"seeds": DEMO_SEEDS}}}}  # a multi-seed IWL result
    try:
        timings = materialize(None, None, all_drops=True, run_config=iwl_config, verbose=args.verbose)
    except MaterializeError as e:
        failed, timings = e, e.timings
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
        print(f"\nImportance Weight Learning (target domain, zero-shot; {len(DEMO_SEEDS)} seeds x 2 models, "
              "IWL - baseline paired by seed)")
        print(iwl.read_text())
    print()
    for k, v in timings.items():
        print(f"  {k:<60s} {v:8.1f}s")
    print(f"demo chain total: {time.perf_counter() - t_all:.1f}s")
    if failed is not None:
        print(f"clip-assets demo: {failed}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- export
def cmd_export(args) -> int:
    from clip_assets.io.exports import ExportError, UnknownSubset, export_subset

    try:
        res = export_subset(args.subset, args.format, fs.location(args.out) if args.out else None,
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


# ---------------------------------------------------------------- iwl-report
def iwl_run_config(args) -> dict:
    """Run config of the IWL training and evaluation assets for the report's seeds and budget."""
    return {"ops": {
        "iwl_models": {"config": {"seeds": args.seeds, "steps": args.steps, "batch_size": args.batch_size,
                                  "prompt": args.prompt}},
        "iwl_eval": {"config": {"eval_set": args.eval_set, "target_domain": args.target_domain,
                                "eval_images": args.eval_images}},
    }}


def cmd_iwl_report(args) -> int:
    from clip_assets.defs.iwl.assets import report_markdown  # see _run
    from clip_assets.io.tables import drops_with
    from clip_assets.models.iwl_train import iwl_root

    home = config.data_home()
    drops = drops_with("embeddings", home)
    if not drops:
        print(f"no embeddings in {home}: run `make demo` (or `clip-assets materialize --all-drops`) first",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        materialize("key:importance_weights", drops, all_drops=False, verbose=args.verbose)
        materialize("key:iwl_model or key:baseline_model or key:iwl_eval", None, all_drops=False,
                    run_config=iwl_run_config(args), verbose=args.verbose)
    except MaterializeError as e:
        print(f"clip-assets iwl-report: {e}", file=sys.stderr)
        return 1
    result = json.loads((iwl_root(home) / "eval.json").read_text())  # what iwl_eval just wrote
    wall = time.perf_counter() - t0
    text = (f"{report_markdown(result)}\n\n{args.steps} steps x {args.batch_size} pairs per model, seeds "
            f"{args.seeds}; wall time {wall:.0f}s\n")
    out = write_text(iwl_root(home) / "report.md", text)
    write_text(iwl_root(home) / "report.json", json.dumps(
        {**result, "budget": {"seeds": args.seeds, "steps": args.steps, "batch_size": args.batch_size},
         "wall_seconds": wall}, indent=2, default=str))
    print(text)
    print(f"written to {out} and report.json beside it")
    return 0


def _add_chain_commands(sub) -> None:
    """synth, materialize, status."""
    s = sub.add_parser("synth", help="write synthetic drops (img2dataset webdataset layout) with exact ground truth",
                       description="Write N synthetic drops of M pairs each, plus <drop>.truth.parquet and "
                                   "world.json beside them. Same seed, same bytes.")
    s.add_argument("--out", help="folder or object-store URL (s3://bucket/prefix) to write drops into "
                                 "(default: $CLIP_ASSETS_LANDING, else <home>/landing)")
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
                                   "'group:ingest', 'key:raw_pairs+' (with downstream); selecting one output of a "
                                   "multi-asset takes its other outputs along. A failed drop does not stop the "
                                   "others: every failure is listed at the end and the exit status is 1.")
    m.add_argument("--select", help="Dagster asset selection string (default: everything)")
    g = m.add_mutually_exclusive_group()
    g.add_argument("--drop", action="append", help="a drop to materialize (repeatable)")
    g.add_argument("--all-drops", action="store_true", help="every known drop")
    m.add_argument("--no-global", action="store_true", help="skip the global (non-partitioned) assets")
    m.add_argument("--config", help="run config YAML, the UI launchpad's format (ops: {<op>: {config: ...}}, "
                                    "resources: ...), validated before any run; an execution: section is "
                                    "ignored (headless runs execute in process)")
    m.add_argument("-v", "--verbose", action="store_true", help="print Dagster's event lines")
    m.set_defaults(fn=cmd_materialize)

    st = sub.add_parser("status", help="drops in the landing folder and which assets are materialized",
                        description="One row per drop (landing folder or registered partition): whether it is "
                                    "complete in the landing folder, whether it is a 'drops' partition, and for "
                                    "each per-drop asset whether that partition is materialized; then when each "
                                    "global asset was last materialized. A complete drop with any False is what "
                                    "the hourly catchup_schedule requests a process_drop run for.")
    st.add_argument("--format", default="table", choices=["table", "csv", "json"])
    st.set_defaults(fn=cmd_status)


def _add_query_commands(sub) -> None:
    """sql, demo, iwl-report, export."""
    q = sub.add_parser("sql", help="run one SQL query against the DuckDB catalog and print the result",
                       description="Views: raw_pairs, rejected_pairs, drops and one per downstream table. Bind "
                                   "values with ? and --param, e.g. clip-assets sql \"SELECT * FROM drops WHERE "
                                   "drop = ?\" --param synth-s0-000. One SELECT only, reading nothing outside "
                                   "<home>/warehouse (no COPY, ATTACH, SET, INSTALL or other files).")
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
    d.add_argument("-v", "--verbose", action="store_true", help="print Dagster's event lines")
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("iwl-report", help="the multi-seed Importance Weight Learning report",
                       description="Against the current data home and Dagster instance: materializes "
                                   "importance_weights for every drop that has embeddings, then iwl_model + "
                                   "baseline_model for the given seeds and iwl_eval, prints the comparison (mean "
                                   "and sample std over seeds, IWL - baseline paired by seed with its 95% t "
                                   "interval, one row per seed) and writes it to <home>/models/iwl/report.md and "
                                   "report.json. The chain up to embeddings must exist first. About a minute of "
                                   "CPU per seed at the default budget. On the synthetic demo pool (4000 pairs, "
                                   "200 steps) the spread between seeds is as large as the gain: see the README "
                                   "for the pre-registered multi-seed results and where IWL helps reliably.")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r.add_argument("--steps", type=int, default=200, help="training steps per model (the demo's budget)")
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--prompt", default="", help="stored prompt to train with (default: the first configured)")
    r.add_argument("--eval-set", default="synthetic", help="'synthetic' or a labelled Parquet / ImageFolder path")
    r.add_argument("--target-domain", default="red", help="synthetic world domain of the evaluation set")
    r.add_argument("--eval-images", type=int, default=1000)
    r.add_argument("-v", "--verbose", action="store_true", help="print Dagster's event lines")
    r.set_defaults(fn=cmd_iwl_report)

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clip-assets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    _add_chain_commands(sub)
    _add_query_commands(sub)
    return p


def _terminate_as_interrupt(signum, frame) -> None:
    """SIGTERM handled like Ctrl-C: Dagster then ends the run as interrupted and frees its pool slots."""
    signal.raise_signal(signal.SIGINT)


_INTERRUPTS = ("KeyboardInterrupt", "DagsterExecutionInterruptedError")


def _redeliver_lost_interrupt(unraisable) -> None:
    """An interrupt raised while the main thread runs a garbage-collector callback is printed and dropped by
    Python (the run would go on after SIGTERM or Ctrl-C): raise SIGINT again, so it lands at the next step."""
    if type(unraisable.exc_value).__name__ in _INTERRUPTS:
        # from another thread, so the handler runs in the main thread's next step, not inside this hook
        threading.Timer(0.01, signal.raise_signal, [signal.SIGINT]).start()
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _redeliver_lost_interrupt
    try:
        return args.fn(args) or 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


if __name__ == "__main__":
    raise SystemExit(main())
