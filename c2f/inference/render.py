"""Turning label maps into pictures: palette colours and overlays (CLI, service and reports)."""

from __future__ import annotations

import numpy as np

from c2f.data.io import voc_palette
from c2f.labelmap import BACKGROUND, IGNORE


def colorize(label_map: np.ndarray) -> np.ndarray:
    """Label indices to VOC palette colours (HxWx3 uint8)."""
    return voc_palette()[label_map]


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend palette colours over the image where a class (not background, not ignore) is labelled."""
    colours = colorize(label_map).astype(np.float32)
    mask = foreground_mask(label_map)[..., None]
    return np.where(mask, (1 - alpha) * image + alpha * colours, image).astype(np.uint8)


def foreground_mask(label_map: np.ndarray) -> np.ndarray:
    """Foreground of a label map: any class but background and ignore."""
    return (label_map != BACKGROUND) & (label_map != IGNORE)


def cutout(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """RGBA image whose alpha is the foreground mask."""
    return np.dstack([image, foreground.astype(np.uint8) * 255])
