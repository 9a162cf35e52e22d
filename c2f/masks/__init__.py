"""The paper's first half: class-agnostic coarse masks, refined (GrabCut/CRF) into label maps.

``run_mask_stage`` is the entry point, its settings one :class:`MaskConfig`; saliency and the
coarse generators are reusable on their own. The refinement primitives it applies live in
:mod:`c2f.refine`, shared with inference.
"""

from c2f.masks.config import MaskConfig
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
from c2f.masks.saliency import binarize, saliency_map
from c2f.masks.stage import MaskStageResult, key_seed, mask_quality, run_mask_stage

__all__ = [
    "GENERATORS",
    "BoxGenerator",
    "CoarseGenerator",
    "CoarseInputError",
    "FolderGenerator",
    "MaskConfig",
    "MaskStageResult",
    "SaliencyGenerator",
    "binarize",
    "key_seed",
    "make_generator",
    "mask_quality",
    "register_generator",
    "run_mask_stage",
    "saliency_map",
]
