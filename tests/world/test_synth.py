"""write_drops: img2dataset's webdataset layout, byte-for-byte reproducibility, and the truth beside each drop."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_assets.io import commit
from clip_assets.io.uid import compute_uid
from clip_assets.world import World, truth_schema, write_drops

PAIRS, SHARD, SEED = 23, 10, 7  # shards of 10, 10, 3
IMG2DATASET_COLUMNS = [
    "caption", "url", "key", "status", "error_message", "width", "height",
    "original_width", "original_height", "exif", "sha256",
]  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tar_samples(path: Path) -> tuple[list[tarfile.TarInfo], dict[str, dict[str, bytes]]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        for m in members:
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return members, samples


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("drops")
    paths = write_drops(out, drops=2, pairs=PAIRS, seed=SEED, shard_size=SHARD)
    return out, paths


def test_layout(written):
    out, paths = written
    assert [p.name for p in paths] == ["synth-s7-000", "synth-s7-001"]
    assert sorted(p.name for p in out.iterdir()) == [
        "synth-s7-000", "synth-s7-000.truth.parquet", "synth-s7-001", "synth-s7-001.truth.parquet", "world.json",
    ]  # fmt: skip
    assert World.from_dict(json.loads((out / "world.json").read_text())) == World.default()
    for drop in paths:
        assert sorted(p.name for p in drop.iterdir()) == sorted(
            f"{s:05d}{suffix}" for s in range(3) for suffix in (".tar", ".parquet", "_stats.json")
        )


def test_shards_match_img2dataset(written):
    out, paths = written
    drop = paths[0]
    for shard, n in enumerate([10, 10, 3]):
        members, samples = _tar_samples(drop / f"{shard:05d}.tar")
        keys = [f"{shard:05d}{i:04d}" for i in range(n)]
        assert [m.name for m in members] == [f"{k}.{e}" for k in keys for e in ("jpg", "txt", "json")]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o444 and m.isfile() for m in members)

        table = pq.read_table(drop / f"{shard:05d}.parquet")
        assert table.column_names == IMG2DATASET_COLUMNS
        rows = table.to_pylist()
        assert [r["key"] for r in rows] == keys
        for key, row in zip(keys, rows):
            s = samples[key]
            meta = json.loads(s["json"])
            assert list(meta) == IMG2DATASET_COLUMNS
            assert meta == row
            assert meta["sha256"] == hashlib.sha256(s["jpg"]).hexdigest()
            assert meta["caption"] == s["txt"].decode("utf-8")
            assert meta["status"] == "success" and meta["error_message"] is None and meta["exif"] is None
            assert meta["url"] == f"https://synthetic.invalid/{drop.name}/{key}.jpg"
            img = Image.open(io.BytesIO(s["jpg"]))
            assert img.format == "JPEG" and img.mode == "RGB"
            assert img.size == (meta["width"], meta["height"]) == (meta["original_width"], meta["original_height"])

        stats = json.loads((drop / f"{shard:05d}_stats.json").read_text())
        assert stats["count"] == stats["successes"] == n and stats["status_dict"] == {"success": n}
        assert stats["failed_to_download"] == stats["failed_to_resize"] == 0
        assert stats["duration"] == stats["end_time"] - stats["start_time"] > 0


def test_truth_beside_each_drop(written):
    out, paths = written
    world = World.default()
    for drop in paths:
        truth = pq.read_table(out / f"{drop.name}.truth.parquet")
        assert truth.schema.equals(truth_schema(world))
        assert truth.num_rows == PAIRS
        t = truth.to_pydict()
        assert set(t["drop"]) == {drop.name}
        seen = []
        for shard in range(3):
            _, samples = _tar_samples(drop / f"{shard:05d}.tar")
            for key, s in samples.items():
                seen.append((shard, key, compute_uid(s["jpg"], s["txt"].decode("utf-8")), s["txt"].decode("utf-8")))
        assert seen == list(zip(t["shard"], t["key"], t["uid"], t["caption"]))
        latent, cap = np.array(t["latent"]), np.array(t["caption_index"])
        assert [world.vocabulary[i] for i in cap] == t["caption"]
        np.testing.assert_array_equal(t["true_log_ratio"], world.true_log_ratio(latent, cap))
        np.testing.assert_array_equal(t["true_kl_image"], world.kl_image(latent))
        np.testing.assert_array_equal(t["true_klr_text"], world.klr_text(cap))
        np.testing.assert_array_equal(t["is_placeholder"], latent == -1)
        np.testing.assert_array_equal(t["in_red"], world.in_domain(latent, "red"))
        np.testing.assert_array_equal(t["label"], world.class_label(latent))
        for z, shape, colour, size in zip(latent, t["shape"], t["colour"], t["size"]):
            names = world.latent_names(z) if z >= 0 else {"shape": None, "colour": None, "size": None}
            assert names == {"shape": shape, "colour": colour, "size": size}
        aligned = ~np.array(t["is_misaligned"]) & (latent >= 0)
        for z, tpl, caption in zip(latent[aligned], np.array(t["template"])[aligned], np.array(t["caption"])[aligned]):
            assert world.caption_of(int(z), str(tpl)) == caption
        # every caption was made with its template (noise captions "an image" by the generic template)
        for tpl, caption in zip(t["template"], t["caption"]):
            assert (tpl == "generic") == (caption == "an image")
        np.testing.assert_array_equal(t["true_kl_text"], world.kl_text(cap))


def test_same_seed_same_bytes_other_seed_other_bytes(written, tmp_path):
    out, _ = written
    write_drops(tmp_path / "same", drops=2, pairs=PAIRS, seed=SEED, shard_size=SHARD)
    first, again = _files(out), _files(tmp_path / "same")
    assert first.keys() == again.keys()
    assert all(first[k] == again[k] for k in first), [k for k in first if first[k] != again[k]]

    write_drops(tmp_path / "other", drops=1, pairs=PAIRS, seed=SEED + 1, shard_size=SHARD, prefix="d")
    assert (tmp_path / "other/d000/00000.tar").read_bytes() != first["synth-s7-000/00000.tar"]
    # drops of one seed are independent draws
    assert first["synth-s7-000/00000.tar"] != first["synth-s7-001/00000.tar"]


def test_start_continues_a_series(written, tmp_path):
    out, _ = written
    paths = write_drops(tmp_path, drops=1, pairs=PAIRS, seed=SEED, shard_size=SHARD, start=1)
    assert [p.name for p in paths] == ["synth-s7-001"]
    assert _files(paths[0]) == _files(out / "synth-s7-001")


def test_stats_written_last_per_shard(tmp_path, monkeypatch):
    """Every file is written through the commit layer: per shard the stats file comes after the tar and parquet
    inside the staged drop folder, and the drop folder appears (renamed from its staging folder) only after its
    truth file."""
    landed: list[str] = []
    created: list[str] = []
    real_replace, real_path = os.replace, commit.StagedDir.path

    def recording_replace(src, dst):
        landed.append(Path(dst).name)
        real_replace(src, dst)

    def recording_path(self, name):
        created.append(name)
        return real_path(self, name)

    monkeypatch.setattr(commit.os, "replace", recording_replace)
    monkeypatch.setattr(commit.StagedDir, "path", recording_path)
    write_drops(tmp_path, drops=1, pairs=25, seed=1, shard_size=10, prefix="x")
    assert created == [f"{s:05d}{suffix}" for s in range(3) for suffix in (".tar", ".parquet", "_stats.json")]
    assert landed[-2:] == ["x000.truth.parquet", "x000"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or temp files left


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("webp", "WEBP")])
def test_other_image_formats(tmp_path, fmt, pil_format):
    (drop,) = write_drops(tmp_path, drops=1, pairs=4, seed=0, image_format=fmt)
    members, samples = _tar_samples(drop / "00000.tar")
    assert members[0].name == f"000000000.{fmt}"
    for s in samples.values():
        assert Image.open(io.BytesIO(s[fmt])).format == pil_format
        assert json.loads(s["json"])["sha256"] == hashlib.sha256(s[fmt]).hexdigest()


def test_refuses_to_overwrite_or_mix_worlds(written, tmp_path):
    out, _ = written
    with pytest.raises(FileExistsError):
        write_drops(out, drops=1, pairs=3, seed=SEED)
    other = World.from_dict(World.default().to_dict() | {"misaligned_rate": 0.2})
    with pytest.raises(ValueError, match="different world"):
        write_drops(out, drops=1, pairs=3, seed=SEED, prefix="new-", world=other)
    for bad in ({"prefix": "../evil"}, {"shard_size": 10_001}, {"image_format": "gif"}, {"seed": -1}):
        with pytest.raises(ValueError):
            write_drops(tmp_path, **({"drops": 1, "pairs": 3, "seed": 0} | bad))
