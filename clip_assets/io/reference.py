"""The reference set: N image embeddings and N text embeddings drawn from the marginals of the pool.

PAPER.md section 1: the normaliser Z(x) = E_{y'~p(y)}[exp(s(x, y'))] is estimated over texts drawn from p(y), and
Z(y) over images drawn from p(x). Images and texts are sampled *independently* (two separate draws of row
indices, seeded, without replacement) so that the reference texts are not paired with the reference images.

Sampling never loads the pool: row counts come from Parquet footers, the chosen global row indices are sorted, and
each embeddings file is read once (only if it holds a chosen row). Files: ``<home>/warehouse/reference_set/``
``reference_set.parquet`` (role, uid, drop, emb) and ``moments.npz`` (means and covariances, float64).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clip_assets.core.kl import reference_moments
from clip_assets.io import fs
from clip_assets.io.catalog import partition_files
from clip_assets.io.commit import resolve, stage_dir
from clip_assets.io.tables import fixed_list_to_numpy
from clip_assets.io.warehouse import asset_dir

REF_ASSET = "reference_set"


@dataclass
class ReferenceSet:
    reference_id: str
    model_id: str
    images: np.ndarray  # (N, d) float32
    texts: np.ndarray  # (N, d) float32
    image_mean: np.ndarray  # (d,) float64
    text_mean: np.ndarray
    image_cov: np.ndarray  # (d, d) float64
    text_cov: np.ndarray
    drops: list[str]

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def _embedding_files(drops: list[str], home: Path | None) -> list[tuple[str, Path, int]]:
    out = []
    for d in drops:  # listed once, in the version a versioned partition's pointer names
        files = [fs.location(f) for f in partition_files("embeddings", d, home)]
        files = [f for f in files if f.name.startswith("part-")]
        if not files:
            raise FileNotFoundError(f"drop {d!r} has no embeddings: materialize embeddings for it first")
        out += [(d, f, fs.parquet_metadata(f).num_rows) for f in files]
    return out


def _model_ids(files: list[tuple[str, Path, int]]) -> set[str]:
    ids: set[str] = set()
    for _, f, n in files:
        if n:
            col = fs.read_table(f, columns=["model_id"])["model_id"]
            ids |= set(col.unique().to_pylist())
    return ids


def sample_reference(drops: list[str], n: int, seed: int, home: Path | None = None) -> tuple[pa.Table, dict]:
    """Draw ``min(n, pool)`` images and, independently, as many texts from the drops' embeddings."""
    if n < 1:
        raise ValueError(f"reference set size must be >= 1, got {n}")
    files = _embedding_files(sorted(drops), home)
    total = sum(k for _, _, k in files)
    if total == 0:
        raise ValueError(f"the drops {drops} hold no embeddings rows")
    ids = _model_ids(files)
    if len(ids) != 1:
        raise ValueError(
            f"embeddings of {drops} come from {len(ids)} different models {sorted(ids)}: re-materialize "
            "embeddings for every drop with the current contrastive_model before building a reference set"
        )
    k = min(n, total)
    rng = np.random.default_rng(seed)
    pick = {"image": np.sort(rng.choice(total, size=k, replace=False)),
            "text": np.sort(rng.choice(total, size=k, replace=False))}
    parts = []
    start = 0
    for drop, f, rows in files:
        stop = start + rows
        local = {r: p[(p >= start) & (p < stop)] - start for r, p in pick.items()}
        if any(len(v) for v in local.values()):
            t = fs.read_table(f, columns=["uid", "image_emb", "text_emb"])
            for role, col in (("image", "image_emb"), ("text", "text_emb")):
                idx = local[role]
                if len(idx):
                    sub = t.take(pa.array(idx))
                    parts.append(pa.table({
                        "role": pa.array([role] * len(idx)),
                        "uid": sub["uid"],
                        "drop": pa.array([drop] * len(idx)),
                        "emb": sub[col].combine_chunks(),
                    }))
        start = stop
    table = pa.concat_tables(parts).sort_by([("role", "ascending"), ("uid", "ascending")])
    h = hashlib.sha256()
    h.update(next(iter(ids)).encode())
    for role, uid in zip(table["role"].to_pylist(), table["uid"].to_pylist()):
        h.update(f"{role}:{uid}\n".encode())
    info = {"reference_id": h.hexdigest()[:16], "model_id": next(iter(ids)), "n": k, "pool_rows": total,
            "seed": seed, "drops": sorted(drops)}
    return table, info


def write_reference(table: pa.Table, info: dict, home: Path | None = None) -> Path:
    """Write the reference rows + their moments, replacing the previous reference set atomically."""
    imgs = fixed_list_to_numpy(table.filter(pc.equal(table["role"], "image"))["emb"], np.float64)
    txts = fixed_list_to_numpy(table.filter(pc.equal(table["role"], "text"))["emb"], np.float64)
    im_mean, im_cov = reference_moments(imgs)
    tx_mean, tx_cov = reference_moments(txts)
    final = asset_dir(REF_ASSET, home) / "current"
    with stage_dir(final) as w:
        w.write_table("reference_set.parquet", table.replace_schema_metadata({"info": json.dumps(info)}))
        buf = io.BytesIO()
        np.savez(buf, image_mean=im_mean, image_cov=im_cov, text_mean=tx_mean, text_cov=tx_cov)
        (w.staging / "moments.npz").write_bytes(buf.getvalue())
    return final


def load_reference(home: Path | None = None) -> ReferenceSet:
    folder = resolve(asset_dir(REF_ASSET, home) / "current")  # the version its pointer names, if versioned
    path = folder / "reference_set.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no reference set at {path}: materialize the 'reference_set' asset first")
    t = fs.read_table(path)
    info = json.loads(t.schema.metadata[b"info"])
    m = np.load(io.BytesIO((folder / "moments.npz").read_bytes()))
    return ReferenceSet(
        reference_id=info["reference_id"], model_id=info["model_id"],
        images=fixed_list_to_numpy(t.filter(pc.equal(t["role"], "image"))["emb"]),
        texts=fixed_list_to_numpy(t.filter(pc.equal(t["role"], "text"))["emb"]),
        image_mean=m["image_mean"], text_mean=m["text_mean"], image_cov=m["image_cov"], text_cov=m["text_cov"],
        drops=info["drops"],
    )
