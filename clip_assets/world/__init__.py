"""The synthetic world: an image-text generator with a closed-form joint density, and its exact ground truth.

* :class:`World` (``world.py``): parameters, exact tables (p(z), p(y|z), noise captions b(y), p(y),
  log r(c, y), per-sample KLs), sampling of pair labels and labelled images.
* ``render.py``: drawing and encoding of the images.
* :func:`write_drops` (``synth.py``): drops in img2dataset's webdataset layout plus ``<drop>.truth.parquet``.
"""

from clip_assets.world.synth import drop_name, truth_schema, write_drops
from clip_assets.world.world import PLACEHOLDER, LabelledImages, PairSample, Template, World

__all__ = [
    "PLACEHOLDER",
    "LabelledImages",
    "PairSample",
    "Template",
    "World",
    "drop_name",
    "truth_schema",
    "write_drops",
]
