"""Turning foreground masks and predictions into training label maps.

Shared by the mask stage (coarse mask -> first-round labels) and the recursive training loop
(prediction -> next-round labels), so both produce label maps by exactly the same rules:
0 = background, class index on foreground, 255 = ignore (not trained on).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from c2f.labelmap import BACKGROUND, IGNORE, MAX_FG, MIN_FG
from c2f.refine.grabcut import GRABCUT_CORE_EROSION, GRABCUT_ITERATIONS, GRABCUT_MAX_SIDE, grabcut_refine

__all__ = [
    "MAX_FG",
    "MIN_FG",
    "RoundLabel",
    "compose_label_map",
    "foreground_fraction",
    "keep_own_classes",
    "postprocess_prediction",
]


def _check_labels(labels: tuple[int, ...]) -> None:
    if any(not BACKGROUND < label < IGNORE for label in labels):
        raise ValueError(f"labels must be class indices 1..254, got {labels}")


def compose_label_map(
    fg: np.ndarray,
    labels: tuple[int, ...],
    ignore_band: int = 0,
    class_evidence: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 HxW label map: 0 off `fg`, the image's label on it, 255 in the optional band.

    With several labels, `class_evidence` (KxHxW scores, row k for ``labels[k]``) picks the
    label per foreground pixel; without it the assignment would be a guess, so it is an error.
    `ignore_band` > 0 marks pixels within that many pixels of the foreground boundary, on both
    sides, as 255: mask boundaries are the least reliable part of a pseudo-label.
    """
    fg = np.asarray(fg, dtype=bool)
    labels = tuple(int(label) for label in labels)
    _check_labels(labels)
    if not labels:
        if fg.any():
            raise ValueError("an image without labels cannot have a labelled foreground")
        label_map = np.zeros(fg.shape, np.uint8)
    elif len(labels) == 1:
        label_map = np.where(fg, labels[0], BACKGROUND).astype(np.uint8)
    else:
        if class_evidence is None:
            raise ValueError(f"{len(labels)} labels {labels} need class_evidence to split "
                             "the foreground")
        if class_evidence.shape != (len(labels), *fg.shape):
            raise ValueError(f"class_evidence {class_evidence.shape} must be "
                             f"{(len(labels), *fg.shape)} (one row per label)")
        winner = np.asarray(labels, np.uint8)[np.argmax(class_evidence, axis=0)]
        label_map = np.where(fg, winner, BACKGROUND).astype(np.uint8)
    if ignore_band > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ignore_band + 1,) * 2)
        fg8 = fg.astype(np.uint8)
        band = (cv2.dilate(fg8, kernel) > 0) & ~(cv2.erode(fg8, kernel) > 0)
        label_map[band] = IGNORE
    return label_map


def foreground_fraction(label_map: np.ndarray) -> float:
    """Share of non-ignored pixels that are foreground (0.0 when everything is ignored)."""
    valid = label_map != IGNORE
    n_valid = int(valid.sum())
    return float(((label_map != BACKGROUND) & valid).sum()) / n_valid if n_valid else 0.0


def keep_own_classes(probs: np.ndarray, labels: tuple[int, ...]) -> np.ndarray:
    """Move every other class's probability onto `labels` (float32 CxHxW, still summing to 1).

    The image-level label is known to be right, so a prediction of any other class is an error
    by construction - but an error about *which* object, not about *whether* there is one: a
    model early in training that calls the image's cat a dog has still found the object. So the
    foreign mass goes to the own classes (in proportion to their own probabilities, or evenly
    where those are all zero), never to background; background keeps exactly its probability.
    """
    labels = tuple(int(label) for label in labels)
    _check_labels(labels)
    if any(label >= probs.shape[0] for label in labels):
        raise ValueError(f"labels {labels} exceed the {probs.shape[0]} predicted classes")
    own_index = list(labels)
    own = probs[own_index].astype(np.float32)
    own_total = own.sum(axis=0)
    foreign = np.clip(1.0 - probs[BACKGROUND] - own_total, 0.0, None)
    even = np.full_like(own, 1.0 / len(labels))
    shares = np.where(own_total > 0, own / np.maximum(own_total, np.finfo(np.float32).tiny), even)
    kept = np.zeros(probs.shape, np.float32)
    kept[BACKGROUND] = probs[BACKGROUND]
    kept[own_index] = own + shares * foreign
    return kept


@dataclass(frozen=True)
class RoundLabel:
    """One image's label map for the next training round, or why it was dropped."""

    label_map: np.ndarray | None
    dropped: str | None
    fg_fraction: float
    grabcut_fallback: bool
    objectness_fallback: bool = False  # foreign classes' mass counted as the own object


def postprocess_prediction(
    image: np.ndarray,
    probs: np.ndarray,
    labels: tuple[int, ...],
    *,
    grabcut: bool = True,
    grabcut_iterations: int = GRABCUT_ITERATIONS,
    grabcut_max_side: int | None = GRABCUT_MAX_SIDE,
    grabcut_core_erosion: float = GRABCUT_CORE_EROSION,
    min_fg: float = MIN_FG,
    max_fg: float = MAX_FG,
    ignore_band: int = 0,
    seed: int = 0,
    objectness_below: float | None = None,
) -> RoundLabel:
    """The paper's between-round post-processing of one prediction.

    Own classes only -> argmax foreground -> GrabCut on that foreground (optional; falls back
    to it when GrabCut fails) -> each refined foreground pixel gets its most probable own class
    -> images with a foreground share outside [`min_fg`, `max_fg`] are dropped (they teach
    "everything is background" or "everything is object"). `seed` seeds GrabCut; pass a per-image
    value (e.g. from the key) to make results independent of processing order. `grabcut_max_side`
    bounds the longest side GrabCut works at (None: full size) and `grabcut_core_erosion` sizes its
    sure-foreground core, as in the mask stage.

    "Own classes only" is the paper's rule: foreground is where an own class beats background,
    and other classes' probability is discarded. Only when that finds (almost) nothing - an
    early model that calls the image's cat a dog - does the foreign mass count as the own
    object (:func:`keep_own_classes`), so the image is not lost. Applying that everywhere
    instead turns every background patch the model gives to any class into the image's class:
    on the demo data it made ten times more false-positive label pixels, which each round
    learnt and grew (test mIoU 0.72 -> 0.62 -> 0.56 over three rounds of 220 images).

    "(Almost) nothing" is a foreground share below `objectness_below`; ``None`` (the default) uses
    `min_fg`, the between-round rule. Inference passes ``min_fg=0, max_fg=1`` (an image is never
    dropped there) with ``objectness_below=0.01``, so the fallback still applies to its masks.
    """
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs {probs.shape} do not match image {image.shape[:2]}")
    labels = tuple(int(label) for label in labels)
    own = keep_own_classes(probs, labels)
    fg = np.argmax(probs[[BACKGROUND, *labels]], axis=0) != BACKGROUND
    below = min_fg if objectness_below is None else objectness_below
    objectness = bool(fg.mean() < below)
    if objectness:
        fg = np.argmax(own, axis=0) != BACKGROUND
    fallback = False
    if grabcut:
        result = grabcut_refine(image, fg, iterations=grabcut_iterations, max_side=grabcut_max_side,
                                core_erosion=grabcut_core_erosion, seed=seed)
        fg, fallback = result.mask, not result.used_grabcut
    evidence = own[list(labels)] if len(labels) > 1 else None
    label_map = compose_label_map(fg, labels, ignore_band, evidence)
    fraction = foreground_fraction(label_map)
    dropped = None
    if fraction < min_fg:
        dropped = f"foreground<{min_fg:.0%}"
    elif fraction > max_fg:
        dropped = f"foreground>{max_fg:.0%}"
    return RoundLabel(None if dropped else label_map, dropped, fraction, fallback, objectness)
