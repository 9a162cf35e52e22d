"""Real photographs: GrabCut improves the benchmark's own saliency masks (skipped without data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2f.data.layouts import load_images_masks
from c2f.masks.config import MaskConfig
from c2f.masks.stage import mask_quality, run_mask_stage

VOC = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc10-coseg"


@pytest.mark.skipif(not (VOC / "saliency").is_dir(),
                    reason=f"VOC10 co-segmentation data not found at {VOC}")
def test_grabcut_improves_shipped_saliency_masks_on_voc(tmp_path):
    dataset = load_images_masks(VOC)
    # 140 photos, every class: on 20 the gain of GrabCut at c2f's defaults is within the noise
    # (+0.3 to -0.4 mIoU), on 140 it is 41.0 -> 44.1.
    subset = dataset.subset([s.key for s in dataset.samples[::5]])
    config = MaskConfig(generator="folder", workers=2, min_fg=0.0, max_fg=1.0)
    result = run_mask_stage(subset, tmp_path, config, progress=False)
    assert not result.failed and len(result.label_paths) == len(subset.samples) == 140
    coarse = mask_quality(subset, result, "coarse")
    refined = mask_quality(subset, result, "refined")
    assert refined["fg_jaccard"] > coarse["fg_jaccard"]
    assert refined["miou"] > coarse["miou"]
