"""Classes 1, 2 and 5 on a store home (CLIP_ASSETS_HOME=s3://...), against a real S3 API on loopback (moto's
server, tests/io/s3_server.py): the kill-and-re-run and concurrent-reader cases of test_kill_rerun,
test_kill_stages and test_reingest_readers, where nothing is renamed and a commit is uploads plus pointer PUTs.

* ``clip-assets materialize`` killed with SIGKILL while it uploads a drop's new raw_pairs version (PUTs below the
  warehouse are served one at a time, slowly, so the kill lands with the version half uploaded): the pointers
  still name the previous commit, readers read its rows, the run-health sensor fails the dead run,
  ``clean_stale`` removes the orphaned version and nothing else, and a re-run gives exactly the clean run's rows.
* the same while it writes embeddings (per-shard files, each one PUT): killed after its first shard, it leaves
  whole shard files only, and the re-run completes exactly the clean run's rows.
* readers during re-ingests alternating two contents: read_partitions and the catalog's views see
  the rows of one commit (kept + rejected of one content), never a mix, never an error; and a reader's recovery
  that rolls forward a journal it read before its writer finished never moves the pointers back past a later
  commit (it did: commit._point_store re-pointed unconditionally).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))  # tests/io/s3_server.py, wherever run from
from s3_server import s3_store  # noqa: E402,F401 - the module-scoped loopback S3 fixture

from clip_assets import cli, config
from clip_assets.defs.ops.run_health import FAILURE_TAG, PROCESS_GONE, fail_dead_runs
from clip_assets.io import catalog, commit
from clip_assets.io.commit import (JOURNAL_PREFIX, VERSION_PREFIX, clean_stale, is_pointer, recover_folder,
                                   remove_tree, snapshot)
from clip_assets.io.completeness import drop_counts
from clip_assets.io.ingest import ingest_drop
from clip_assets.io.tables import read_partition, read_partitions
from clip_assets.io.warehouse import partition_dir
from conftest import build_drop, jpeg_bytes
from faultlib import dagster_home, wait_for  # noqa: F401 (dagster_home is a fixture)

ROOT = "store-faults"  # this module's own prefix (moto's store is shared per process)
DROP = "synth-s5-000"
PAIRS = 240
INGEST = ("raw_pairs", "rejected_pairs")
SLOW_PUT_S = 1.0  # per PUT below the warehouse while killed: the kill lands with a version half uploaded


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """One synthetic drop (three shards) on local disk, uploaded to each test's store landing."""
    from clip_assets.world import write_drops

    root = tmp_path_factory.mktemp("landing")
    write_drops(root, drops=1, pairs=PAIRS, seed=5, shard_size=PAIRS // 3)
    return root


def _store_home(store, name: str, landing: Path, tmp: Path, dhome: Path, mp: pytest.MonkeyPatch):
    """A store home ``s3://<bucket>/store-faults/<name>/home`` holding ``landing``, set as this process's home."""
    store.upload_dir(landing, f"{ROOT}/{name}/home/landing")
    mp.setenv("CLIP_ASSETS_HOME", store.url(ROOT, name, "home"))
    mp.setenv("CLIP_ASSETS_CACHE", str(tmp / "cache"))
    mp.setenv("DAGSTER_HOME", str(dhome))
    mp.delenv("CLIP_ASSETS_LANDING", raising=False)
    return config.data_home()


def _spawn(home, tmp: Path, select: str) -> tuple[subprocess.Popen, Path]:
    """``clip-assets materialize`` of DROP in a child process (its local temp folder under ``tmp``)."""
    child_tmp = tmp / "child-tmp"
    child_tmp.mkdir()
    env = {**os.environ, "CLIP_ASSETS_HOME": str(home), "TMPDIR": str(child_tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "clip_assets.cli", "materialize", "--drop", DROP,
                             "--select", select], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, child_tmp


def _kill_when(proc: subprocess.Popen, started, what: str) -> None:
    try:
        wait_for(lambda: started() or proc.poll() is not None, 120, interval_s=0.02)
        assert proc.poll() is None, f"the run finished before {what}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


def _fail_dead_run() -> None:
    """The run-health sensor's work: the killed run (still STARTED) is failed as a dead process."""
    instance = dg.DagsterInstance.get()
    (killed,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert len(fail_dead_runs(instance)) == 1
    assert instance.get_run_by_id(killed.run_id).tags[FAILURE_TAG] == PROCESS_GONE


def _rows(home, asset: str) -> list[dict]:
    """Every row of DROP's partition of ``asset`` (tar paths relative to the home), in a total order."""
    t = read_partition(asset, DROP, home)
    if "tar_path" in t.column_names:
        assert all(p.startswith("s3://") for p in t["tar_path"].to_pylist())
        t = t.set_column(t.column_names.index("tar_path"), "tar_path",
                         pc.replace_substring(t["tar_path"], str(home), "<home>"))
    return sorted(t.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _versions(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(VERSION_PREFIX)}


def _objects(prefix) -> list[str]:
    return sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file())


@pytest.mark.slow
def test_kill_while_a_drop_uploads_then_rerun_equals_the_clean_run(s3_store, landing, tmp_path, dagster_home,  # noqa: F811
                                                                   monkeypatch):
    home = _store_home(s3_store, "kill-ingest", landing, tmp_path, dagster_home, monkeypatch)
    wh = config.warehouse_dir(home)
    finals = [partition_dir(a, DROP, home) for a in INGEST]
    ingest_drop(f"{config.landing_dir(home)}/{DROP}", home=home)  # a clean run (what the raw_pairs asset calls)
    committed = snapshot(finals)
    clean = {a: _rows(home, a) for a in INGEST}
    assert len(clean["raw_pairs"]) + len(clean["rejected_pairs"]) == PAIRS
    old = {a: _versions(wh / a) for a in INGEST}

    # the same drop again, killed while its new raw_pairs version is being uploaded (PUTs served slowly)
    s3_store.slow_puts[f"/{ROOT}/kill-ingest/home/warehouse/"] = SLOW_PUT_S
    try:
        proc, _ = _spawn(home, tmp_path, "key:raw_pairs")
        _kill_when(proc, lambda: _versions(wh / "raw_pairs") - old["raw_pairs"], "its upload began")
    finally:
        s3_store.wait_quiet()  # PUTs the store had received before the kill still land (as they would on S3)
        s3_store.slow_puts.clear()
    (orphan,) = _versions(wh / "raw_pairs") - old["raw_pairs"]
    uploaded = _objects(wh / "raw_pairs" / orphan)
    # part or all of a new version on the store (the files go up in parallel, and every PUT the store had
    # received before the kill lands), but no pointer moved to it
    assert 0 < len(uploaded) <= len(_objects(committed[0])), uploaded
    assert _versions(wh / "rejected_pairs") == old["rejected_pairs"]
    assert not any(p.name.startswith(JOURNAL_PREFIX) for p in (wh / "raw_pairs").iterdir())
    # no pointer names it: readers see the committed rows
    assert snapshot(finals) == committed and all(is_pointer(f) for f in finals)
    assert {a: _rows(home, a) for a in INGEST} == clean

    _fail_dead_run()

    clean_stale(wh, version_grace_s=0)  # the orphaned version is collected; what the pointers name stays
    assert _versions(wh / "raw_pairs") == {committed[0].name}
    assert _versions(wh / "rejected_pairs") == {committed[1].name}
    assert snapshot(finals) == committed and {a: _rows(home, a) for a in INGEST} == clean

    assert cli.main(["materialize", "--drop", DROP, "--select", "key:raw_pairs"]) == 0  # the re-run
    assert snapshot(finals) != committed
    assert {a: _rows(home, a) for a in INGEST} == clean
    assert drop_counts(DROP, home)[0] == len(clean["raw_pairs"])


@pytest.mark.slow
def test_kill_while_embeddings_upload_then_rerun_equals_the_clean_run(s3_store, landing, tmp_path,  # noqa: F811
                                                                      dagster_home, monkeypatch):
    """Embeddings are per-shard files written straight into the partition (each one PUT, resumable): a run killed
    after its first shard leaves whole shard files only, and the re-run completes the clean run's rows."""
    from clip_assets.models.card import write_card
    from clip_assets.models.loading import ModelSpec, load_model

    home = _store_home(s3_store, "kill-embed", landing, tmp_path, dagster_home, monkeypatch)
    ingest_drop(f"{config.landing_dir(home)}/{DROP}", home=home)
    spec = ModelSpec(name="clip-assets-tiny", device="cpu", batch_size=16, workers=0)
    lm = load_model(spec)  # seeded random init: the same weights in every process
    write_card(spec.to_dict(), lm.model_id, lm.model_id_str, home=home)
    assert cli.main(["materialize", "--drop", DROP, "--select", "key:embeddings"]) == 0  # the clean run
    final = partition_dir("embeddings", DROP, home)
    clean = _rows(home, "embeddings")
    shards = _objects(final)
    assert len(clean) == len(_rows(home, "raw_pairs")) > 0 and len(shards) == 3, shards
    remove_tree(final)  # as test_kill_stages: the stage's output removed, then killed as it writes it again

    s3_store.slow_puts[f"/{ROOT}/kill-embed/home/warehouse/embeddings/"] = SLOW_PUT_S
    try:
        proc, _ = _spawn(home, tmp_path, "key:embeddings")
        _kill_when(proc, lambda: _objects(final), "it wrote a shard")
    finally:
        s3_store.wait_quiet()  # PUTs the store had received before the kill still land (as they would on S3)
        s3_store.slow_puts.clear()
    left = _objects(final)
    assert 0 < len(left) < len(shards) and set(left) <= set(shards), left  # whole shard files, no scratch
    part = _rows(home, "embeddings")
    assert part and all(r in clean for r in part)
    _fail_dead_run()

    assert cli.main(["materialize", "--drop", DROP, "--select", "key:embeddings"]) == 0  # the re-run
    assert _objects(final) == shards and _rows(home, "embeddings") == clean


# --- readers during re-ingests --------------------------------------------------------------------------------

READS = 4  # read rounds of the test thread (each: read_partitions and one catalog query)
MAX_WRITES = 60
# the drops view (counts from the drop's record) and both tables' rows, through one connection: one commit's
VIEWS_SQL = ("SELECT kept, rejected, (SELECT count(*) FROM raw_pairs) AS raw, "
             "(SELECT count(*) FROM rejected_pairs) AS rej FROM drops WHERE drop = 'd'")


def _contents(s3_store, tmp: Path, name: str = "readers") -> list[tuple[str, tuple[int, int]]]:
    """Two store landing folders named ``d`` with different contents: (URL, (kept, rejected)) each; both 7 in."""
    a = build_drop(tmp / "a" / "d", [[{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"a {i}"}
                                      for i in range(6)] + [{"key": "000000090", "image": None, "caption": "x"}]])
    b = build_drop(tmp / "b" / "d", [[{"key": f"{i:09d}", "image": jpeg_bytes(50 + i), "caption": f"b {i}"}
                                      for i in range(3)],
                                     [{"key": f"1{i:08d}", "image": None, "caption": "y"} for i in range(4)]])
    out = []
    for local, totals in ((a, (6, 1)), (b, (3, 4))):
        s3_store.upload_dir(local, f"{ROOT}/{name}/{local.parent.name}/d")
        out.append((s3_store.url(ROOT, name, local.parent.name, "d"), totals))
    return out


@pytest.mark.slow
def test_readers_during_reingests_on_a_store_see_one_commit(s3_store, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CLIP_ASSETS_HOME", s3_store.url(ROOT, "readers", "home"))
    monkeypatch.setenv("CLIP_ASSETS_CACHE", str(tmp_path / "cache"))
    home = config.data_home()
    contents = _contents(s3_store, tmp_path)
    valid = {totals for _, totals in contents}
    ingest_drop(contents[0][0], home=home)
    assert catalog.query(VIEWS_SQL, home=home).to_pylist() == [{"kept": 6, "rejected": 1, "raw": 6, "rej": 1}]

    stop, writes, errors = threading.Event(), [0], []

    def reingest() -> None:  # B then A, again and again, until the reads are done
        try:
            while not stop.is_set() and writes[0] < MAX_WRITES:
                for url, _ in (contents[1], contents[0]):
                    ingest_drop(url, home=home)
                    writes[0] += 1
                    stop.wait(0.1 * (writes[0] % 4))  # paced, unevenly: the readers do not lock to one phase
        except Exception as e:  # noqa: BLE001 - a failed write is a failure of the test
            errors.append(f"writer: {type(e).__name__}: {e}")

    seen: dict[str, list] = {"tables": [], "views": [], "one view commit": []}
    writer = threading.Thread(target=reingest)
    writer.start()
    try:
        assert wait_for(lambda: writes[0] >= 1 or errors, 60, interval_s=0.05)
        first = writes[0]
        for i in range(READS * 10):  # at least READS rounds, more (bounded) until both contents were read
            if i >= READS and set(seen["tables"]) | set(seen["views"]) == valid:
                break
            try:
                raw, rej = read_partitions(list(INGEST), "d", home, columns=["uid"])
                seen["tables"].append((raw.num_rows, rej.num_rows))
                (row,) = catalog.query(VIEWS_SQL, home=home).to_pylist()
                seen["views"].append((row["kept"], row["rejected"]))
                seen["views"].append((row["raw"], row["rej"]))
                seen["one view commit"].append((row["kept"], row["rejected"]) == (row["raw"], row["rej"]))
            except Exception as e:  # noqa: BLE001 - every error a reader meets is a failure of the test
                errors.append(f"reader: {type(e).__name__}: {e}")
        during = writes[0] - first
    finally:
        stop.set()
        writer.join(120)
    assert not writer.is_alive() and errors == []
    assert during >= READS // 2, f"only {during} commits while the readers read"  # the reads really overlapped writes
    assert all(seen.pop("one view commit"))
    for kind, totals in seen.items():
        assert len(totals) >= READS and set(totals) <= valid, (kind, sorted(set(totals) - valid))
    assert set(seen["tables"]) | set(seen["views"]) == valid  # both contents were read

    wh = config.warehouse_dir(home)
    clean_stale(wh, version_grace_s=0)  # past the grace: only the current versions stay
    last = contents[writes[0] % 2][1]  # writes alternate B, A, B, ...: an odd count ended with B
    assert drop_counts("d", home)[::2] == last
    for asset, version in zip(INGEST, snapshot([partition_dir(a, "d", home) for a in INGEST])):
        assert _versions(wh / asset) == {version.name}


def test_a_reader_rolling_a_finished_journal_forward_never_undoes_a_later_commit(s3_store, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    """A reader's recovery (read_partitions / drops_with -> recover_folder) rolls forward any journal it lists. One
    that read ingest B's journal and stalled before re-pointing (a busy process), while B finished and ingest A
    committed after it, must not move the pointers back to B: A's rows, committed last, stay the drop's rows."""
    monkeypatch.setenv("CLIP_ASSETS_HOME", s3_store.url(ROOT, "stale-journal", "home"))
    monkeypatch.setenv("CLIP_ASSETS_CACHE", str(tmp_path / "cache"))
    home = config.data_home()
    (a, totals_a), (b, _) = _contents(s3_store, tmp_path, "stale-journal")
    ingest_drop(a, home=home)
    journaled, go, at_point, release = (threading.Event() for _ in range(4))
    real_roll, real_point = commit._roll_forward, commit._point_store

    def roll(journal):  # the writer stops at its commit point (journal published, no pointer moved yet)
        if threading.current_thread().name == "writer" and not go.is_set():
            journaled.set()
            go.wait(60)
        return real_roll(journal)

    def point(final, version):  # the reader stalls after reading the journal, before it re-points
        if threading.current_thread().name == "reader" and not release.is_set():
            at_point.set()
            release.wait(60)
        return real_point(final, version)

    monkeypatch.setattr(commit, "_roll_forward", roll)
    monkeypatch.setattr(commit, "_point_store", point)
    writer = threading.Thread(target=ingest_drop, args=(b,), kwargs={"home": home}, name="writer")
    writer.start()
    reader = None
    try:
        assert journaled.wait(60)
        reader = threading.Thread(target=recover_folder, args=(config.warehouse_dir(home) / "raw_pairs",),
                                  name="reader")
        reader.start()
        assert at_point.wait(60)  # the reader holds B's journal
        go.set()
        writer.join(60)  # B commits and removes its journal
        ingest_drop(a, home=home)  # then A again: the newest commit
        latest = snapshot([partition_dir(x, "d", home) for x in INGEST])
    finally:
        go.set(), release.set()
        writer.join(60)
        if reader is not None:
            reader.join(60)
    assert snapshot([partition_dir(x, "d", home) for x in INGEST]) == latest
    assert drop_counts("d", home)[::2] == totals_a
