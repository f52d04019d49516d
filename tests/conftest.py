"""Shared fixtures: an isolated data home per test and a builder for img2dataset-layout drops."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import traceback
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_assets.io.drops import SIDECAR_SCHEMA


_OPEN_INSTANCES: dict[int, tuple[weakref.ref, str]] = {}  # id -> (instance, where the test entered it)


def _entered_at() -> str:
    frames = [f for f in traceback.extract_stack()[:-2] if "/tests/" in f.filename.replace("\\", "/")]
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "outside the tests"


@pytest.fixture(scope="session", autouse=True)
def _track_dagster_instances():
    """Record every DagsterInstance a test enters and whether it is exited again (see dagster_instances_exited)."""
    import dagster as dg

    enter, exit_ = dg.DagsterInstance.__enter__, dg.DagsterInstance.__exit__

    def tracked_enter(self):
        _OPEN_INSTANCES[id(self)] = (weakref.ref(self), _entered_at())
        return enter(self)

    def tracked_exit(self, *exc):
        _OPEN_INSTANCES.pop(id(self), None)
        return exit_(self, *exc)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dg.DagsterInstance, "__enter__", tracked_enter)
        mp.setattr(dg.DagsterInstance, "__exit__", tracked_exit)
        yield


@pytest.fixture(scope="module", autouse=True)
def dagster_instances_exited(_track_dagster_instances, request):
    """Fails the module that enters a DagsterInstance and never exits it.

    Entering an instance sets a process-wide context variable (its definitions-state storage) until the instance
    is exited. A sensor or schedule context built with resources but never closed (no ``with``) enters an instance
    it never exits; when the garbage collector later finalizes it, the variable is reset to whatever was current
    when it was entered, often the storage of an instance that is gone by then. Every later ``dg.materialize`` in
    the process then fails with "Attempted to resolve undefined DagsterInstance weakref", at a time that depends
    on when the collector runs (it broke 12 unrelated tests in one CI run and none locally). Tracking enter/exit
    finds the cause deterministically, whenever the collector runs."""
    yield
    left = sorted(where for _, where in _OPEN_INSTANCES.values())
    _OPEN_INSTANCES.clear()
    assert not left, (f"{request.node.nodeid} entered Dagster instance(s) it never exited, at {', '.join(left)}: "
                      "build sensor/schedule/op contexts as `with dg.build_..._context(...) as ctx:`")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh data home (CLIP_ASSETS_HOME) for one test."""
    h = tmp_path / "home"
    (h / "landing").mkdir(parents=True)
    monkeypatch.setenv("CLIP_ASSETS_HOME", str(h))
    return h


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _members(s: dict) -> list[tuple[str, bytes]]:
    """The tar members of one sample dict (see build_drop)."""
    if "members" in s:
        return list(s["members"])
    key, img, cap = s["key"], s.get("image"), s.get("caption")
    members = []
    if img is not None:
        members.append((f"{key}.{s.get('ext', 'jpg')}", img))
    if cap is not None:
        members.append((f"{key}.txt", cap if isinstance(cap, bytes) else cap.encode()))
    meta = {"key": key, "status": s.get("status", "success")} | ({"uid": s["uid"]} if "uid" in s else {})
    members.append((f"{key}.json", s["json"] if "json" in s else json.dumps(meta | s.get("meta", {})).encode()))
    return members


def _sidecar_row(s: dict) -> dict:
    key, img, cap, status = s["key"], s.get("image"), s.get("caption"), s.get("status", "success")
    row = {
        "caption": cap if isinstance(cap, str) else None, "url": f"https://example.invalid/{key}",
        "key": key, "status": status, "error_message": None if status == "success" else "HTTP 404",
        "width": 32, "height": 32, "original_width": 32, "original_height": 32, "exif": None,
        "sha256": hashlib.sha256(img).hexdigest() if img else None,
    }
    if "uid" in s:
        row["uid"] = s["uid"]
    return row | s.get("sidecar", {})


def build_drop(drop_dir: Path, shards: list[list[dict]], stats: bool = True, sidecar: bool = True) -> Path:
    """Write a drop in img2dataset's webdataset layout from explicit sample dicts.

    Each sample dict: key, and any of image (bytes or None to omit), ext ("jpg"), caption (str, bytes, or None to
    omit the .txt), status (sidecar status, default "success"), in_tar (default True), in_sidecar (default True),
    uid (a DataComp uid, written to the json and the sidecar), meta (extra json fields), json (the raw .json
    bytes), members (explicit (name, bytes) tar members instead of the above), sidecar (fields overriding the
    sidecar row). Sidecars use io.drops.SIDECAR_SCHEMA (plus a uid column when a sample has one).
    """
    drop_dir.mkdir(parents=True, exist_ok=True)
    for si, samples in enumerate(shards):
        sid = f"{si:05d}"
        rows = []
        with tarfile.open(drop_dir / f"{sid}.tar", "w") as tf:
            for s in samples:
                if s.get("in_tar", True) and s.get("status", "success") == "success":
                    for name, data in _members(s):
                        ti = tarfile.TarInfo(name)
                        ti.size = len(data)
                        tf.addfile(ti, io.BytesIO(data))
                if s.get("in_sidecar", True):
                    rows.append(_sidecar_row(s))
        schema = SIDECAR_SCHEMA
        if any("uid" in r for r in rows):
            schema = schema.append(pa.field("uid", pa.string()))
        if sidecar:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), drop_dir / f"{sid}.parquet")
        if stats:
            (drop_dir / f"{sid}_stats.json").write_text(json.dumps({"count": len(samples)}))
    return drop_dir
