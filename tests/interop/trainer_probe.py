"""Run open_clip's trainer (through clip_assets.models.open_clip_trainer) and record every sample its data
pipeline reads: ``python trainer_probe.py <seen.jsonl> <trainer arguments>``.

open_clip_train.data.get_wds_dataset passes every sample read from the tars through its module-level
``filter_no_caption_or_no_image`` (looked up when the pipeline is built); this wraps it to append one JSON line
per sample (key, tar url, sha256 of the image bytes, caption) before the trainer decodes it.
"""

from __future__ import annotations

import hashlib
import json
import sys

import open_clip_train.data as oc_data

from clip_assets.models.open_clip_trainer import main

IMAGE_KEYS = ("jpg", "png", "jpeg", "webp")


def _recording(path: str):
    original = oc_data.filter_no_caption_or_no_image

    def record(sample: dict) -> bool:
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), b"")
        line = {"key": sample["__key__"], "url": sample["__url__"], "sha256": hashlib.sha256(image).hexdigest(),
                "caption": sample["txt"].decode("utf-8") if "txt" in sample else None}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        return original(sample)

    return record


if __name__ == "__main__":
    oc_data.filter_no_caption_or_no_image = _recording(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
