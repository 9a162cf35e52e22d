"""The paper's first half: class-agnostic coarse masks, GrabCut/CRF refinement, label maps.

``run_mask_stage`` is the entry point; the pieces (saliency, generators, GrabCut, CRF, label
composition and the between-round post-processing) are reusable on their own.
"""

from c2f.masks.crf import crf_refine_mask, dense_crf
from c2f.masks.generators import (
    GENERATORS,
    BoxGenerator,
    CoarseGenerator,
    CoarseInputError,
    FolderGenerator,
    SaliencyGenerator,
    make_generator,
    register_generator,
)
from c2f.masks.grabcut import GrabCutResult, grabcut_refine
from c2f.masks.labels import (
    RoundLabel,
    compose_label_map,
    foreground_fraction,
    keep_own_classes,
    postprocess_prediction,
)
from c2f.masks.saliency import binarize, saliency_map
from c2f.masks.stage import MaskStageResult, key_seed, mask_quality, run_mask_stage

__all__ = [
    "GENERATORS",
    "BoxGenerator",
    "CoarseGenerator",
    "CoarseInputError",
    "FolderGenerator",
    "GrabCutResult",
    "MaskStageResult",
    "RoundLabel",
    "SaliencyGenerator",
    "binarize",
    "compose_label_map",
    "crf_refine_mask",
    "dense_crf",
    "foreground_fraction",
    "grabcut_refine",
    "keep_own_classes",
    "key_seed",
    "make_generator",
    "mask_quality",
    "postprocess_prediction",
    "register_generator",
    "run_mask_stage",
    "saliency_map",
]
