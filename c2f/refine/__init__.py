"""Refinement primitives shared by inference and the mask stage: GrabCut, the dense CRF, label rules.

The label rules turn a foreground mask or a prediction into a label map (own classes only, the
objectness fallback, ignore bands, the foreground-share filter); see :mod:`c2f.labelmap` for the
values a label map holds.
"""

from c2f.refine.crf import crf_refine_mask, dense_crf
from c2f.refine.grabcut import GrabCutResult, grabcut_refine
from c2f.refine.labels import (
    RoundLabel,
    compose_label_map,
    foreground_fraction,
    keep_own_classes,
    postprocess_prediction,
)

__all__ = [
    "GrabCutResult",
    "RoundLabel",
    "compose_label_map",
    "crf_refine_mask",
    "dense_crf",
    "foreground_fraction",
    "grabcut_refine",
    "keep_own_classes",
    "postprocess_prediction",
]
