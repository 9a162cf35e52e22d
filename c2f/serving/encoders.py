"""Response encodings: PNG (gray, RGB(A) or palette), COCO-style RLE and the ``format=json`` body."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from c2f.data.io import voc_palette
from c2f.inference.engine import class_pixels


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """Encode HxW (gray, or palette indices when ``palette`` is given), HxWx3 or HxWx4 uint8 as PNG."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 2 and palette is not None:
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        image.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    elif array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        image = Image.fromarray(array)  # L, RGB or RGBA from the shape
    else:
        raise ValueError(f"cannot encode an array of shape {array.shape} as PNG")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def label_png(label_map: np.ndarray) -> bytes:
    """Label map as an indexed PNG with the VOC palette (pixel values are the class ids)."""
    return png_bytes(label_map, voc_palette())


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO-style uncompressed RLE of a binary HxW mask.

    The mask is read in column-major (Fortran) order; ``counts`` alternates runs of 0 and 1 and
    always starts with a run of 0 (possibly of length 0). ``size`` is ``[height, width]``. This is
    the form ``pycocotools.mask.frPyObjects`` accepts for uncompressed RLE.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return {"size": [int(height), int(width)], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [int(height), int(width)], "counts": [int(c) for c in counts]}


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: a bool HxW mask."""
    height, width = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != height * width:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def segmentation_json(label_map: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """The ``format=json`` body: image size, class names, pixel shares and one RLE per class present."""
    height, width = label_map.shape
    present = class_pixels(label_map, class_names)
    masks = [
        {"class_id": index, "class_name": name, "pixels": pixels, "share": share,
         "rle": rle_encode(label_map == index)}
        for index, name, pixels, share in present
    ]
    return {
        "width": int(width),
        "height": int(height),
        "class_names": list(class_names),
        "shares": {name: share for _, name, _, share in present},
        "masks": masks,
        "rle_format": "coco-uncompressed: column-major, counts alternate 0-runs and 1-runs starting with 0",
    }
