"""open_clip's own trainer (``open_clip_train.main``) with the project's model configs registered.

``python -m clip_assets.models.open_clip_trainer <open_clip_train.main arguments>`` is ``python -m
open_clip_train.main`` after :func:`clip_assets.models.small.register_small_configs`, so ``--model
clip-assets-tiny`` (or any name in ``models/model_configs/``) resolves in the trainer's process. For example, on a
webdataset export of a curated subset::

    python -m clip_assets.models.open_clip_trainer --dataset-type webdataset \\
        --train-data '/tmp/kl_text/{00000..00003}.tar' --train-num-samples 40000 \\
        --model clip-assets-tiny --pretrained '' --device cpu --precision fp32 --workers 0 \\
        --batch-size 256 --epochs 1 --report-to '' --logs /tmp/logs --name kl_text-tiny

Add ``--siglip`` for the sigmoid loss (with ``--model clip-assets-tiny-sigmoid``, which has a logit bias). The
trainer needs open_clip's training extras (webdataset, pandas: the project's ``dev`` extra).
"""

from __future__ import annotations

import sys
from typing import Sequence

from clip_assets.models.small import register_small_configs


def main(argv: Sequence[str] | None = None) -> int:
    """Register the project's configs, run open_clip's trainer on ``argv``; 0 on success, 1 when it refused."""
    register_small_configs()
    # open_clip_train imports webdataset and pandas, which only the dev extra installs
    from open_clip_train.main import main as open_clip_main

    rc = open_clip_main(list(sys.argv[1:] if argv is None else argv))
    return 1 if rc == -1 else 0  # the trainer returns -1 when it refuses (e.g. an existing experiment name)


if __name__ == "__main__":
    sys.exit(main())
