"""A procedurally generated demo dataset: learnable, but not trivially so, and needing no download.

The whole pipeline (saliency coarse masks -> GrabCut refinement -> segmentation training) is
demonstrated and tested on this set, so it follows the paper's assumption that objects are salient
by colour contrast (each class has a hue family, as real classes have typical looks), while keeping
that assumption imperfect: textured, cluttered backgrounds,
low-contrast distractor blobs and some low-contrast objects leave the saliency stage errors that
GrabCut and training must fix. Each image is seeded from ``(seed, class, index)``, so a given image
is byte-identical across runs and does not change when ``n_per_class`` or ``classes`` change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from c2f.data.io import write_mask_png, write_rgb

logger = logging.getLogger(__name__)

DEMO_CLASSES: tuple[str, ...] = ("disc", "square", "triangle")

_SUPERSAMPLE = 4  # shapes are drawn at 4x and averaged down: anti-aliased edges, like a camera's
_SHIFT = 4  # cv2 fixed-point bits for sub-pixel vertex positions
_LOW_CONTRAST_RATE = 0.15
_TWO_OBJECT_RATE = 0.15
_BORDER_TOUCH_RATE = 0.1


def _coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates normalised by the longer side, so patterns scale with the image."""
    scale = float(max(height, width))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy / scale, xx / scale


def _pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One random texture in [0, 1]: stripes, rotated checker, smooth blotches or fine grain."""
    yy, xx = _coords(height, width)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    kind = rng.integers(4)
    if kind == 0:
        period = rng.uniform(0.04, 0.15)
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    if kind == 1:
        cell = rng.uniform(0.05, 0.15)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == 2:
        coarse = rng.random((height // 16 + 3, width // 16 + 3)).astype(np.float32)
        return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    grain = rng.random((height, width)).astype(np.float32)
    return cv2.GaussianBlur(grain, (0, 0), 1.0)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour gradient overlaid with one or two textures, as float32 HxWx3 in [0, 255]."""
    yy, xx = _coords(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(30, 225, (2, 3)).astype(np.float32)
    image = start + (end - start) * ramp[:, :, None]
    for _ in range(rng.integers(1, 3)):
        pattern = _pattern(rng, height, width)[:, :, None]
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        strength = rng.uniform(0.1, 0.4)
        image = image * (1 - strength * pattern) + colour * strength * pattern
    return image


def _polygon_alpha(height: int, width: int, points: np.ndarray) -> np.ndarray:
    canvas = np.zeros((height * _SUPERSAMPLE, width * _SUPERSAMPLE), np.uint8)
    fixed = np.round(points * _SUPERSAMPLE * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 255, cv2.LINE_8, _SHIFT)
    return (
        cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    )


def _disc(rng: np.random.Generator, centre: np.ndarray, extent: float) -> np.ndarray:
    """Outline of a disc or mild ellipse, as a polygon of 64 points."""
    radii = extent / 2 * np.array([1.0, rng.uniform(0.65, 1.0)])
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return _rotate(np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], 1), rng) + centre


def _square(rng: np.random.Generator, centre: np.ndarray, extent: float) -> np.ndarray:
    """A square or moderately elongated rectangle."""
    half = extent / 2 * np.array([1.0, rng.uniform(0.6, 1.0)])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
    return _rotate(corners, rng) + centre


def _triangle(rng: np.random.Generator, centre: np.ndarray, extent: float) -> np.ndarray:
    """A roughly equilateral triangle with jittered vertices."""
    angles = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-12, 12, 3))
    radii = extent / 1.6 * rng.uniform(0.9, 1.1, 3)  # circumradius giving a bounding box ~ extent
    return _rotate(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1), rng) + centre


def _rotate(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rotation.T


_SHAPES: dict[str, Callable[[np.random.Generator, np.ndarray, float], np.ndarray]] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
}


def _object_alpha(
    rng: np.random.Generator, shape: str, height: int, width: int, extent: float
) -> np.ndarray:
    """Anti-aliased coverage of one object at a random position, rarely touching the border."""
    side_margin = extent / 2 * (0.4 if rng.random() < _BORDER_TOUCH_RATE else 1.0)
    centre = np.array(
        [
            rng.uniform(side_margin, max(side_margin, width - side_margin)),
            rng.uniform(side_margin, max(side_margin, height - side_margin)),
        ]
    )
    return _polygon_alpha(height, width, _SHAPES[shape](rng, centre, extent))


# Each class has its own hue family (OpenCV hue, 0..180), as real classes have typical appearances:
# shape and colour together make the classes learnable within a CPU demo's few hundred steps.
_CLASS_HUES: dict[str, tuple[int, int]] = {"disc": (0, 22), "square": (40, 80), "triangle": (100, 130)}


def _object_colour(
    rng: np.random.Generator, shape: str, surround: np.ndarray, low_contrast: bool
) -> np.ndarray:
    """A colour of the class's hue family far from the background or, when low-contrast, close to it."""
    if low_contrast:
        direction = rng.normal(size=3)
        return np.clip(
            surround + direction / np.linalg.norm(direction) * rng.uniform(25, 45), 0, 255
        )
    low, high = _CLASS_HUES[shape]
    hsv = np.stack(
        [rng.integers(low, high + 1, 16), rng.integers(130, 256, 16), rng.integers(120, 256, 16)], axis=1
    ).astype(np.uint8)[None]
    candidates = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64)
    return candidates[np.argmax(np.linalg.norm(candidates - surround, axis=1))]


def _distractors(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A few small, soft, mostly low-contrast blobs: clutter a saliency detector may pick up."""
    height, width = image.shape[:2]
    for _ in range(rng.integers(1, 5)):
        extent = rng.uniform(0.05, 0.16) * min(height, width)
        alpha = _object_alpha(rng, "disc", height, width, extent)
        alpha = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.5, 2.0))[:, :, None]
        surround = (image * alpha).sum((0, 1)) / max(float(alpha.sum()), 1e-6)
        colour = np.clip(surround + rng.normal(0, rng.uniform(15, 40), 3), 0, 255)
        image = image * (1 - alpha) + colour.astype(np.float32) * alpha
    return image


def render_demo_image(
    rng: np.random.Generator, shape: str, size: int = 160
) -> tuple[np.ndarray, np.ndarray]:
    """One demo image (HxWx3 uint8 RGB) and its object mask (HxW bool) for ``shape``."""
    if shape not in _SHAPES:
        raise ValueError(f"unknown demo shape {shape!r}; valid: {', '.join(_SHAPES)}")
    height, width = (max(32, round(size * rng.uniform(0.8, 1.2))) for _ in range(2))
    image = _distractors(rng, _background(rng, height, width))
    n_objects = 2 if rng.random() < _TWO_OBJECT_RATE else 1
    low_contrast = rng.random() < _LOW_CONTRAST_RATE
    coverage = np.zeros((height, width), np.float32)
    for index in range(n_objects):
        fraction = rng.uniform(0.2, 0.45) if index == 0 else rng.uniform(0.18, 0.28)
        alpha = _object_alpha(rng, shape, height, width, fraction * min(height, width))[:, :, None]
        surround = (image * alpha).sum((0, 1)) / max(float(alpha.sum()), 1e-6)
        colour = _object_colour(rng, shape, surround, low_contrast).astype(np.float32)
        yy, xx = _coords(height, width)
        shade_angle = rng.uniform(0, 2 * np.pi)
        shading = (xx * np.cos(shade_angle) + yy * np.sin(shade_angle)) * rng.uniform(-60, 60)
        texture = (
            (_pattern(rng, height, width) - 0.5) * rng.uniform(0, 40) if rng.random() < 0.4 else 0
        )
        surface = colour + (shading + texture)[:, :, None]
        image = image * (1 - alpha) + surface * alpha
        coverage = np.maximum(coverage, alpha[:, :, 0])
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.4, 1.1))
    image = image + rng.normal(0, rng.uniform(2, 7), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), coverage > 0.5


def generate_demo_dataset(
    out_dir: str | Path,
    n_per_class: int = 40,
    size: int = 160,
    seed: int = 0,
    classes: Sequence[str] = DEMO_CLASSES,
) -> Path:
    """Write the demo set in the ``images-masks`` layout and return ``out_dir``.

    ``images/<class>/<class>_NNN.jpg`` (JPEG quality 95, sides ``size`` +-20%, rarely square) and
    ``masks/<class>/<class>_NNN.png`` (0/255). Existing files of the same names are replaced.
    """
    unknown = [name for name in classes if name not in _SHAPES]
    if unknown:
        raise ValueError(f"unknown demo classes {unknown}; valid: {', '.join(DEMO_CLASSES)}")
    out = Path(out_dir)
    for name in classes:
        class_id = DEMO_CLASSES.index(name)
        for index in range(n_per_class):
            rng = np.random.default_rng([seed, class_id, index])
            image, mask = render_demo_image(rng, name, size)
            stem = f"{name}_{index:03d}"
            write_rgb(out / "images" / name / f"{stem}.jpg", image)
            write_mask_png(out / "masks" / name / f"{stem}.png", mask)
    logger.info(
        "wrote %d demo images of classes %s to %s", n_per_class * len(classes), list(classes), out
    )
    return out
