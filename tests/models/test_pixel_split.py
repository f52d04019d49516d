"""The eval transform cut in two (``embed.split_preprocess``): the Pillow part where images are decoded (uint8
pixels), ToTensor's scaling + Normalize where the model runs. The two halves must give the whole transform's
pixels bit for bit, on the project's models and on odd images; a transform that does not split that way is
refused (the Ray executor then carries float32 pixels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from clip_assets.models.embed import finish_pixels, pixels_pil, preprocess_pil, split_preprocess
from clip_assets.models.loading import ModelSpec, load_model


def _encoded(rng, mode: str, h: int, w: int, fmt: str) -> bytes:
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    b = io.BytesIO()
    im.save(b, format=fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec(name="clip-assets-tiny", device="cpu", workers=0, batch_size=8, threads=1))


def test_split_halves_give_the_whole_transform_bit_for_bit(tiny):
    split = split_preprocess(tiny.preprocess, tiny.image_size)
    assert split is not None and split.size == tiny.image_size == 32
    assert split.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # open_clip's CLIP mean
    rng = np.random.default_rng(7)
    shapes = [("RGB", 64, 64, "JPEG"), ("L", 20, 90, "PNG"), ("RGBA", 100, 31, "PNG"), ("P", 33, 33, "PNG"),
              ("RGB", 32, 32, "PNG"), ("RGB", 1, 300, "PNG"), ("CMYK", 40, 50, "JPEG")]
    datas = [_encoded(rng, *s) for s in shapes]
    uids = [f"u{i}" for i in range(len(datas))]
    whole = preprocess_pil(datas, tiny.preprocess, "00000", uids, uids)
    u8 = pixels_pil(datas, split, "00000", uids, uids)
    assert u8.dtype == np.uint8 and u8.shape == (len(datas), 32, 32, 3)
    parts = finish_pixels(torch.from_numpy(u8), split)
    assert parts.dtype == torch.float32 and parts.shape == whole.shape
    assert torch.equal(parts, whole)
    assert u8.nbytes * 4 == whole.numpy().nbytes  # a quarter of the bytes to carry


def test_a_bad_image_fails_the_split_path_like_the_whole_one(tiny):
    split = split_preprocess(tiny.preprocess, tiny.image_size)
    with pytest.raises(RuntimeError, match=r"shard 00003: cannot decode image of uid bad \(t.tar@0\+3\)"):
        pixels_pil([b"not"], split, "00003", ["bad"], ["t.tar@0+3"])


def test_transforms_that_do_not_split_are_refused():
    norm = T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert split_preprocess(lambda im: T.functional.to_tensor(im), 32) is None  # not a Compose
    assert split_preprocess(T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]), 32) is None  # no Normalize
    # a tensor op between ToTensor and Normalize
    convert = T.ConvertImageDtype(torch.float32)
    assert split_preprocess(T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), convert, norm]), 32) is None
    # splits by its shape, but its Pillow part does not give (S, S, 3) uint8 (no crop): the probe refuses it
    assert split_preprocess(T.Compose([T.Resize(32), T.ToTensor(), norm]), 32) is None
    split = split_preprocess(T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), norm]), 32)
    assert split is not None and split.mean == (0.5, 0.5, 0.5) and split.std == (0.25, 0.25, 0.25)
