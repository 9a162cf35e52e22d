"""Fully connected CRF (Krähenbühl & Koltun 2011) via pydensecrf, as used by DeepLab.

Network outputs and coarse masks are blobby at object edges; a dense CRF with an appearance
(bilateral) kernel snaps labels to colour edges and a smoothness (Gaussian) kernel removes
isolated pixels. Defaults are DeepLab-v2's VOC settings (as in its reference pipeline):
Gaussian sxy=3, compat=3; bilateral sxy=67, srgb=3, compat=4 - in pixels of a ~500 px image.
"""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf

__all__ = ["SXY_BILATERAL", "SXY_GAUSSIAN", "dense_crf", "crf_refine_mask"]

_MIN_PROB = 1e-8

# DeepLab-v2's VOC kernel widths, in pixels of a ~500 px image (scaled by callers that work smaller).
SXY_GAUSSIAN = 3.0
SXY_BILATERAL = 67.0


def dense_crf(
    image_rgb: np.ndarray,
    probs: np.ndarray,
    iterations: int = 5,
    sxy_gauss: float = SXY_GAUSSIAN,
    compat_gauss: float = 3,
    sxy_bilateral: float = SXY_BILATERAL,
    srgb: float = 3,
    compat_bilateral: float = 4,
) -> np.ndarray:
    """Mean-field inference of a dense CRF; returns float32 CxHxW marginals (sum 1 over C).

    `probs` (float CxHxW, per-pixel class probabilities) give the unary term -log(p); `image_rgb`
    (HxWx3 uint8) drives the bilateral kernel.
    """
    if probs.ndim != 3 or image_rgb.shape[:2] != probs.shape[1:]:
        raise ValueError(f"probs {probs.shape} must be CxHxW matching image {image_rgb.shape[:2]}")
    n_classes, h, w = probs.shape
    # pydensecrf reads raw buffers: arrays must be C-contiguous with exactly these dtypes.
    unary = -np.log(np.clip(probs.reshape(n_classes, -1), _MIN_PROB, 1.0))
    crf = dcrf.DenseCRF2D(w, h, n_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=sxy_gauss, compat=compat_gauss)
    crf.addPairwiseBilateral(sxy=sxy_bilateral, srgb=srgb,
                             rgbim=np.ascontiguousarray(image_rgb, dtype=np.uint8),
                             compat=compat_bilateral)
    marginals = np.asarray(crf.inference(iterations), dtype=np.float32)
    return marginals.reshape(n_classes, h, w)


def crf_refine_mask(
    image_rgb: np.ndarray, fg: np.ndarray, confidence: float = 0.8, iterations: int = 5
) -> np.ndarray:
    """Refine a bool HxW foreground mask with a two-class dense CRF.

    The mask becomes soft probabilities - `confidence` for its own label, 1 - `confidence` for
    the other - so the colour kernel can overrule it near edges but not in broad regions.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    p_fg = np.where(fg, confidence, 1.0 - confidence).astype(np.float32)
    marginals = dense_crf(image_rgb, np.stack([1.0 - p_fg, p_fg]), iterations=iterations)
    return marginals[1] > marginals[0]
