"""Reference points for judging coarse masks: what the weakest prior would score.

A generator is only worth its cost if it beats a centred box given the same image-level label;
the mask stage report prints this baseline beside its own stages.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from c2f.data.datasets import LabelledDataset
from c2f.data.io import ImageReadError, image_shape, write_mask_png
from c2f.masks.generators import BoxGenerator
from c2f.masks.stage import mask_quality, stage_output_path

__all__ = ["box_baseline_quality"]


def box_baseline_quality(dataset: LabelledDataset, fraction: float = 0.8) -> dict[str, Any]:
    """:func:`mask_quality` of :class:`BoxGenerator` masks (no GrabCut), each given its label.

    Scored exactly like a stage's coarse masks (same code path), so the numbers compare directly.
    Unreadable images count as `missing`, as failed images do for a stage.
    """
    box = BoxGenerator(fraction)
    with tempfile.TemporaryDirectory(prefix="c2f-box-") as tmp:
        for sample in dataset.samples:
            if sample.mask is None:
                continue
            try:
                height, width = image_shape(sample.image)
            except (ImageReadError, FileNotFoundError):
                continue
            shape_only = np.empty((height, width, 0), np.uint8)  # a box needs no pixels
            write_mask_png(Path(tmp) / stage_output_path("coarse", sample.key), box(shape_only, sample))
        return {**mask_quality(dataset, tmp, "coarse"), "stage": f"box {fraction:g}"}
