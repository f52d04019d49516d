"""Classes 1, 2 and 5 at every heavy stage: ``clip-assets materialize`` killed with SIGKILL while it writes
embeddings, scores (pair_scores + kl_stats) or curated_subsets. The run-health sensor fails the dead run, and a
re-run gives exactly the rows and values of a clean run (sorted by key).

One module fixture takes a small drop through raw_pairs -> embeddings -> reference_set -> scores with a tiny
seeded model; each case copies that home twice, removes the stage's output from both, kills the stage in one copy
as soon as it starts writing (a scratch file or staging folder of its asset appears, or after a delay), re-runs
it there and runs it cleanly in the other.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_assets import cli
from clip_assets.defs.ops.run_health import fail_dead_runs
from clip_assets.io.commit import resolve
from faultlib import dagster_home, wait_for  # noqa: F401 (dagster_home is a fixture)

DROP = "synth-s3-000"
CHAIN = "key:raw_pairs or key:embeddings or key:reference_set or key:pair_scores"
# stage -> (selection, assets it writes (compared), keys to sort their rows by)
STAGES = {
    "embeddings": ("key:embeddings", ["embeddings"], ["uid"]),
    "scores": ("key:pair_scores", ["pair_scores", "kl_stats"], ["uid"]),
    "curated_subsets": ("key:curated_subsets", ["curated_subsets"], ["uid"]),
}


def _cli(home, dhome, *args) -> int:
    old = {k: os.environ.get(k) for k in ("CLIP_ASSETS_HOME", "DAGSTER_HOME")}
    os.environ.update(CLIP_ASSETS_HOME=str(home), DAGSTER_HOME=str(dhome))
    try:
        return cli.main(["materialize", *args])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _dagster_home(root):
    d = root / "dagster"
    d.mkdir(parents=True)
    (d / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {d / 'storage'}\n"
                                    "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")
    return d


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from clip_assets.models.card import write_card
    from clip_assets.models.loading import ModelSpec, load_model
    from clip_assets.world import write_drops

    root = tmp_path_factory.mktemp("stages")
    home = root / "home"
    write_drops(home / "landing", drops=1, pairs=600, seed=3, shard_size=200)
    spec = ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=64, workers=0)
    lm = load_model(spec)  # seeded random init: the same weights in every process
    write_card(spec.to_dict(), lm.model_id, lm.model_id_str, home=home)
    assert _cli(home, _dagster_home(root), "--drop", DROP, "--select", CHAIN) == 0
    return home


def _rows(home, asset, keys):
    """Every row of ``asset`` with its partition folder's name (``drop=...`` / ``subset=...``), sorted."""
    root = home / "warehouse" / asset
    tables = [pq.read_table(f).append_column("part", pa.array([d.name] * pq.read_metadata(f).num_rows))
              for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
              for f in sorted(resolve(d).glob("*.parquet"))]
    t = pa.concat_tables(tables, promote_options="default")
    return t.sort_by([(k, "ascending") for k in ["part", *keys]]).to_pylist()


def _writing(home, asset) -> bool:
    """The stage has begun to write its asset: a staging folder or a scratch/part file below it."""
    root = home / "warehouse" / asset
    return root.is_dir() and any(p.name.startswith(".staging-") or p.name.endswith(".tmp")
                                 or p.name.startswith("part-") for p in root.rglob("*"))


def _copy(base, dst, assets):
    shutil.copytree(base, dst, symlinks=True)
    for a in assets:
        shutil.rmtree(dst / "warehouse" / a, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kill_at_a_stage_then_rerun_equals_a_clean_run(base, tmp_path, stage):
    select, assets, keys = STAGES[stage]
    home, clean = tmp_path / "home", tmp_path / "clean"
    _copy(base, home, assets), _copy(base, clean, assets)
    dhome, clean_dhome = _dagster_home(tmp_path / "d1"), _dagster_home(tmp_path / "d2")
    env = {**os.environ, "CLIP_ASSETS_HOME": str(home), "DAGSTER_HOME": str(dhome)}
    proc = subprocess.Popen([sys.executable, "-m", "clip_assets.cli", "materialize", "--drop", DROP,
                             "--select", select], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(_writing(home, a) for a in assets) or proc.poll() is not None, 120, interval_s=0.01)
        assert proc.poll() is None, f"{stage} finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(dhome)
    try:
        instance = dg.DagsterInstance.get()
        assert len(fail_dead_runs(instance)) == 1  # the killed run is failed, its pool slots freed
    finally:
        os.environ.pop("DAGSTER_HOME") if old is None else os.environ.__setitem__("DAGSTER_HOME", old)

    assert _cli(home, dhome, "--drop", DROP, "--select", select) == 0
    assert _cli(clean, clean_dhome, "--drop", DROP, "--select", select) == 0
    for a in assets:
        got, want = _rows(home, a, keys), _rows(clean, a, keys)
        assert len(got) == len(want) > 0 and got == want, a
