"""Embedding one sample at a time: format by content, per-sample fallback on the torch path, 16-bit images at
their full range, bounded caption cost, and stale shard outputs healed after a drop is re-landed."""

from __future__ import annotations

import io
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clip_assets.io.drops import add_tar_member
from clip_assets.io.tables import fixed_list_to_numpy
from clip_assets.models import small
from clip_assets.io.images import decode_rgb, sniff_format
from clip_assets.models.embed import CAPTION_CHARS_PER_TOKEN, TensorPreprocess, cut_captions, embed_drop
from clip_assets.models.loading import ModelSpec, load_model


@pytest.fixture(scope="module")
def lm():
    return load_model(ModelSpec(name=small.TINY, device="cpu", workers=0, batch_size=4, threads=1))


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(colour=(200, 40, 40), size=(40, 30)) -> Image.Image:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = colour
    arr[5:20, 5:25] = (20, 180, 60)  # some structure, so resizing matters
    return Image.fromarray(arr)


def _png16(value: int) -> bytes:
    arr = np.full((24, 24), value, dtype=np.uint16)
    arr[:12] = value // 2
    return _encode(Image.fromarray(arr), "PNG")


def _animated_webp() -> bytes:
    frames = [_rgb((220, 20, 20)), _rgb((20, 20, 220))]
    return _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)


SAMPLES = {  # member name -> bytes: the extension says jpg where the content is something else
    "a.jpg": _encode(_rgb(), "JPEG", quality=95),
    "b.jpg": _encode(_rgb((10, 10, 200)), "PNG"),
    "c.jpg": _encode(_rgb((10, 200, 10)), "GIF"),
    "d.jpg": _encode(_rgb((100, 100, 100)), "BMP"),
    "e.tiff": _encode(_rgb((50, 150, 250)), "TIFF"),
    "f.webp": _animated_webp(),
    "g.png": _png16(40000),
}


def _pointer_table(tmp_path, samples: dict[str, bytes], shard: str = "00000", captions=None) -> pa.Table:
    """A raw_pairs-like pointer table over a tar holding ``samples`` (one caption each)."""
    tar_path = tmp_path / f"{shard}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in samples.items():
            add_tar_member(tar, name, data)
    rows = {"uid": [], "shard": [], "caption": [], "tar_path": [], "offset": [], "size": []}
    with tarfile.open(tar_path) as tar:
        for k, info in enumerate(tar.getmembers()):
            rows["uid"].append(f"{shard}-{info.name}")
            rows["shard"].append(shard)
            rows["caption"].append(captions[k] if captions else f"a photo of sample {info.name}")
            rows["tar_path"].append(str(tar_path))
            rows["offset"].append(info.offset_data)
            rows["size"].append(info.size)
    return pa.table(rows)


def _emb(path):
    t = pq.read_table(path)
    return t.column("uid").to_pylist(), fixed_list_to_numpy(t["image_emb"]), fixed_list_to_numpy(t["text_emb"])


def test_format_is_read_from_the_bytes():
    kinds = {name: sniff_format(data) for name, data in SAMPLES.items()}
    assert kinds == {"a.jpg": "jpg", "b.jpg": "png", "c.jpg": "gif", "d.jpg": "bmp", "e.tiff": "tiff",
                     "f.webp": "webp", "g.png": "png"}
    assert sniff_format(b"\xff\xd8 not a jpeg") is None and sniff_format(b"") is None


def test_torch_path_falls_back_per_sample_and_matches_pil(lm, tmp_path):
    ptr = _pointer_table(tmp_path, SAMPLES)
    tv = embed_drop([ptr], lm, tmp_path / "tv", decode="torch", workers=0)
    pil = embed_drop([ptr], lm, tmp_path / "pil", decode="pil", workers=0)
    uids, u_tv, _ = _emb(tv.files[0])
    _, u_pil, _ = _emb(pil.files[0])
    assert uids == ptr.column("uid").to_pylist() and np.isfinite(u_tv).all()
    cos = (u_tv * u_pil).sum(axis=1)
    assert cos.min() > 0.98, dict(zip(uids, cos.round(4)))


def test_animated_webp_gives_its_first_frame():
    first = np.asarray(decode_rgb(SAMPLES["f.webp"]))
    assert first.shape == (30, 40, 3) and tuple(first[0, 0]) == (220, 20, 20)


def test_16_bit_png_keeps_its_full_range_on_both_paths(lm):
    data = _png16(40000)  # rows 0-11: 20000, rows 12-23: 40000 (of 65535)
    pil = np.array(decode_rgb(data))
    assert pil[0, 0].tolist() == [round(20000 / 257)] * 3 and pil[-1, 0].tolist() == [round(40000 / 257)] * 3
    tp = TensorPreprocess(lm.preprocess_cfg, lm.device)
    (img,) = tp.decode([torch.frombuffer(bytearray(data), dtype=torch.uint8)])
    assert img.dtype == torch.uint8 and torch.equal(img.permute(1, 2, 0), torch.from_numpy(pil))
    x = tp([torch.frombuffer(bytearray(data), dtype=torch.uint8)])
    x_pil = lm.preprocess(decode_rgb(data))
    assert x.abs().max() < 3  # normalised pixels, not values near 446
    assert torch.allclose(x[0], x_pil, atol=0.05)


def test_long_captions_are_cut_before_tokenization(lm, tmp_path):
    limit = CAPTION_CHARS_PER_TOKEN * lm.context_length
    huge = "a photo of a red circle " + "word " * 2_000_000  # 10 MB
    assert cut_captions(["short", huge], lm.context_length) == ["short", huge[:limit]]
    ptr = _pointer_table(tmp_path, {f"{k}.jpg": SAMPLES["a.jpg"] for k in range(4)}, captions=[huge] * 4)
    t0 = time.perf_counter()
    res = embed_drop([ptr], lm, tmp_path / "out", workers=0)
    assert time.perf_counter() - t0 < 5
    _, _, v = _emb(res.files[0])
    ref = lm.encode_texts([huge[:limit]]).numpy()
    np.testing.assert_allclose(v, np.repeat(ref, 4, axis=0), atol=2e-3)
    # the cut never changes what the model sees for captions within the context
    assert torch.equal(lm.tokenizer([huge[:limit]]), lm.tokenizer([huge[: 10 * limit]]))


def test_relanded_drop_heals_stale_shard_outputs(lm, tmp_path):
    jpg = SAMPLES["a.jpg"]
    shards = []
    for i in range(3):
        (tmp_path / f"s{i}").mkdir()
        shards.append(_pointer_table(tmp_path / f"s{i}", {f"{i}{k}.jpg": jpg for k in range(3)}, shard=f"0000{i}"))
    out = tmp_path / "emb"
    first = embed_drop(shards, lm, out, workers=0)
    assert first.written == ["00000", "00001", "00002"]
    (tmp_path / "new1").mkdir()
    changed = _pointer_table(tmp_path / "new1", {f"x{k}.jpg": jpg for k in range(2)}, shard="00001")
    again = embed_drop([shards[0], changed], lm, out, workers=0)  # shard 2 gone, shard 1 has other uids
    assert again.removed == ["00002"] and again.written == ["00001"] and again.skipped == ["00000"]
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert _emb(out / "part-00001.parquet")[0] == changed.column("uid").to_pylist()


def test_torch_path_retries_jpegs_alone_and_names_the_one_that_fails(lm, tmp_path):
    good = SAMPLES["a.jpg"]
    bad = good[: len(good) // 2]  # truncated: neither decode_jpeg nor Pillow reads it
    tp = TensorPreprocess(lm.preprocess_cfg, lm.device)
    as_t = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in (good, bad, good)]
    got = tp._jpegs(as_t)  # the batched call fails; each JPEG is retried alone
    assert got[0] is not None and got[1] is None and torch.equal(got[0], got[2])
    ptr = _pointer_table(tmp_path, {"ok.jpg": good, "cut.jpg": bad})
    with pytest.raises(RuntimeError, match="shard 00000: cannot decode image of uid 00000-cut.jpg"):
        embed_drop([ptr], lm, tmp_path / "out", decode="torch", workers=0)
    assert not (tmp_path / "out" / "part-00000.parquet").exists()
