"""Shared fixtures: an isolated data home per test and a builder for img2dataset-layout drops."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image


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


SIDECAR_COLUMNS = ["caption", "url", "key", "status", "error_message", "width", "height",
                   "original_width", "original_height", "exif", "sha256"]


def build_drop(drop_dir: Path, shards: list[list[dict]], stats: bool = True) -> Path:
    """Write a drop in img2dataset's webdataset layout from explicit sample dicts.

    Each sample dict: key, and any of image (bytes or None to omit), ext ("jpg"), caption (str, bytes, or None to
    omit the .txt), status (sidecar status, default "success"), in_tar (default True), in_sidecar (default True).
    """
    import hashlib

    drop_dir.mkdir(parents=True, exist_ok=True)
    for si, samples in enumerate(shards):
        sid = f"{si:05d}"
        rows = []
        with tarfile.open(drop_dir / f"{sid}.tar", "w") as tf:
            for s in samples:
                key = s["key"]
                img = s.get("image")
                cap = s.get("caption")
                status = s.get("status", "success")
                if s.get("in_tar", True) and status == "success":
                    members = []
                    if img is not None:
                        members.append((f"{key}.{s.get('ext', 'jpg')}", img))
                    if cap is not None:
                        members.append((f"{key}.txt", cap if isinstance(cap, bytes) else cap.encode()))
                    members.append((f"{key}.json", json.dumps({"key": key, "status": status}).encode()))
                    for name, data in members:
                        ti = tarfile.TarInfo(name)
                        ti.size = len(data)
                        tf.addfile(ti, io.BytesIO(data))
                if s.get("in_sidecar", True):
                    rows.append({
                        "caption": cap if isinstance(cap, str) else None, "url": f"https://example.invalid/{key}",
                        "key": key, "status": status, "error_message": None if status == "success" else "HTTP 404",
                        "width": 32, "height": 32, "original_width": 32, "original_height": 32, "exif": None,
                        "sha256": hashlib.sha256(img).hexdigest() if img else None,
                    })
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
            ("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
            ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
            ("original_width", pa.int64()), ("original_height", pa.int64()), ("exif", pa.string()),
            ("sha256", pa.string())])), drop_dir / f"{sid}.parquet")
        if stats:
            (drop_dir / f"{sid}_stats.json").write_text(json.dumps({"count": len(samples)}))
    return drop_dir
