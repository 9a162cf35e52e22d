"""Pluggable class-agnostic coarse mask generators, chosen by name.

The paper's first stage only needs *some* rough foreground per image; which source is best
depends on the data (our saliency, the dataset's own saliency maps, user masks, boxes, or a
network). Each source is a :class:`CoarseGenerator` registered under a name, so the mask stage
and the CLI select one with ``make_generator(name, **options)``.

Built in: ``saliency``, ``folder`` and ``box``. Generators that need torch models (``ufs``,
``cam``) live in their own modules and register themselves with :func:`register_generator`
when imported; :func:`make_generator` imports them on first use, which keeps torch out of the
import graph of runs that only use the weight-free generators.

Learned generators train in :meth:`CoarseGenerator.fit` (called by the mask stage, in the main
process, before the stage's cache key is computed) and may supply per-class evidence for
multi-label images through :meth:`CoarseGenerator.class_evidence`.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from c2f.data.datasets import LabelledDataset, Sample
from c2f.data.io import read_mask
from c2f.masks.saliency import binarize, saliency_map

__all__ = [
    "CoarseGenerator",
    "CoarseInputError",
    "GENERATORS",
    "generator_names",
    "register_generator",
    "make_generator",
    "SaliencyGenerator",
    "FolderGenerator",
    "BoxGenerator",
]


class CoarseInputError(LookupError):
    """The generator has no coarse input for this sample (e.g. no box listed for its key)."""


class CoarseGenerator(ABC):
    """Maps an image (HxWx3 uint8 RGB) and its sample to a bool HxW foreground mask.

    Instances must be picklable (the mask stage ships them to worker processes) and
    deterministic: `settings()` fully describes the output, because it names the stage's cache.
    """

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray: ...

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable options that determine the output (part of the cache key)."""

    def source_files(self, sample: Sample) -> tuple[Path, ...]:
        """Files besides the image whose change must invalidate this sample's cached masks."""
        return ()

    def fit(self, dataset: LabelledDataset, work_dir: Path, progress: bool = True) -> None:
        """Learn from the whole `dataset` before any mask is made; a no-op for fixed generators.

        Runs in the main process. Learned generators cache what they train under
        ``work_dir/<name>/`` so that a resumed run reloads instead of retraining, and afterwards
        `settings()` must identify the trained state (e.g. the weights' sha256).
        """

    def class_evidence(self, image: np.ndarray, sample: Sample) -> np.ndarray | None:
        """Per-label scores (KxHxW, rows in ``sample.labels`` order) for a multi-label image.

        They let the stage split a multi-label foreground between its classes; None (the
        default: a class-agnostic generator cannot tell) leaves that foreground ignored.
        """
        return None


GENERATORS: dict[str, type[CoarseGenerator]] = {}

_G = TypeVar("_G", bound=type[CoarseGenerator])


def register_generator(cls: _G) -> _G:
    """Class decorator adding a generator to :data:`GENERATORS` under ``cls.name``."""
    if cls.name in GENERATORS and GENERATORS[cls.name] is not cls:
        raise ValueError(f"a coarse generator named {cls.name!r} is already registered")
    GENERATORS[cls.name] = cls
    return cls


# Generators whose modules import torch: registered on first use by make_generator.
_LAZY_MODULES = {"ufs": "c2f.masks.ufs", "cam": "c2f.masks.cam"}


def generator_names() -> list[str]:
    """Every name :func:`make_generator` accepts, sorted: the registered ones and the lazily loaded ones.

    Cheap (imports no torch), so a command line can check a name before any work starts.
    """
    return sorted({*GENERATORS, *_LAZY_MODULES})


def make_generator(name: str, **options: Any) -> CoarseGenerator:
    """Instantiate the generator registered as `name` with its `options`."""
    if name not in GENERATORS and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    try:
        cls = GENERATORS[name]
    except KeyError:
        valid = ", ".join(generator_names())
        raise ValueError(f"unknown coarse generator {name!r}; valid: {valid}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for coarse generator {name!r}: {exc}") from None


@register_generator
class SaliencyGenerator(CoarseGenerator):
    """Built-in weight-free saliency (:mod:`c2f.masks.saliency`), binarised."""

    name = "saliency"

    def __init__(self, method: str = "otsu", max_side: int = 200, contrast_weight: float = 0.15,
                 centre_sigma: float = 0.4, min_component: float = 0.2) -> None:
        if method not in ("otsu", "adaptive"):
            raise ValueError(f"unknown binarize method {method!r}; use 'otsu' or 'adaptive'")
        self.method, self.max_side = method, max_side
        self.contrast_weight, self.centre_sigma = contrast_weight, centre_sigma
        self.min_component = min_component

    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        sal = saliency_map(image, self.max_side, self.contrast_weight, self.centre_sigma)
        return binarize(sal, self.method, min_component=self.min_component)

    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "max_side": self.max_side,
                "contrast_weight": self.contrast_weight, "centre_sigma": self.centre_sigma,
                "min_component": self.min_component}


@register_generator
class FolderGenerator(CoarseGenerator):
    """Ready-made maps: user masks or the dataset's saliency maps.

    With `root`, the map of a sample is ``root/<key>.png`` or else ``root/<image stem>.png``;
    without it, the sample's own ``saliency`` file. Maps of another size are resized to the
    image. `threshold` is a grey level (foreground = value > threshold; the default 127.5 suits
    0/255 masks) or ``"otsu"`` / ``"adaptive"`` for soft saliency maps, which then also get
    :func:`~c2f.masks.saliency.binarize`'s speck cleaning.
    """

    name = "folder"

    def __init__(self, root: str | Path | None = None, threshold: float | str = 127.5) -> None:
        if isinstance(threshold, str) and threshold not in ("otsu", "adaptive"):
            raise ValueError(f"threshold must be a number, 'otsu' or 'adaptive', got {threshold!r}")
        self.root = None if root is None else Path(root).resolve()
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"coarse mask folder {self.root} does not exist")
        self.threshold = threshold

    def _path(self, sample: Sample) -> Path:
        if self.root is None:
            if sample.saliency is None:
                raise FileNotFoundError(f"sample {sample.key!r} has no saliency map and the "
                                        "folder generator has no root")
            return sample.saliency
        candidates = (self.root / f"{sample.key}.png", self.root / f"{sample.image.stem}.png")
        for path in candidates:
            if path.is_file():
                return path
        looked = " and ".join(map(str, candidates))
        raise FileNotFoundError(f"no coarse mask for sample {sample.key!r}: looked for {looked}")

    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        grey = read_mask(self._path(sample))
        h, w = image.shape[:2]
        if grey.shape != (h, w):
            grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_LINEAR)
        if isinstance(self.threshold, str):
            return binarize(grey, self.threshold)
        return grey > self.threshold

    def settings(self) -> dict[str, Any]:
        return {"root": None if self.root is None else str(self.root), "threshold": self.threshold}

    def source_files(self, sample: Sample) -> tuple[Path, ...]:
        try:
            return (self._path(sample),)
        except FileNotFoundError:
            return ()


def _read_boxes(path: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Boxes (x0, y0, x1, y1 in pixels, x1/y1 exclusive) by image key, from JSON or CSV.

    JSON: ``{"key": [x0, y0, x1, y1]}`` or ``{"key": [[...], [...]]}``. CSV: rows
    ``key,x0,y0,x1,y1`` (several rows per key allowed; a non-numeric first row is a header).
    """
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    if path.suffix.lower() == ".json":
        for key, value in json.loads(path.read_text()).items():
            items = value if value and isinstance(value[0], list | tuple) else [value]
            boxes[key] = [tuple(float(v) for v in box) for box in items]  # type: ignore[misc]
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            for row_no, row in enumerate(csv.reader(handle)):
                if not row:
                    continue
                try:
                    coords = tuple(float(v) for v in row[1:5])
                except ValueError:
                    if row_no == 0:
                        continue
                    raise ValueError(f"{path}:{row_no + 1}: expected key,x0,y0,x1,y1") from None
                boxes.setdefault(row[0], []).append(coords)  # type: ignore[arg-type]
    else:
        raise ValueError(f"box file {path} must be .json or .csv")
    for key, items in boxes.items():
        if any(len(box) != 4 for box in items):
            raise ValueError(f"{path}: box of {key!r} must have 4 numbers x0, y0, x1, y1")
    return boxes


@register_generator
class BoxGenerator(CoarseGenerator):
    """Rectangles: a centred box covering `fraction` of each side, or per-key boxes from a file.

    The weakest prior (GrabCut's classic rectangle initialisation); useful for object-centric
    photos and for annotated bounding boxes.
    """

    name = "box"

    def __init__(self, fraction: float = 0.8, boxes: str | Path | None = None) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.boxes_file = None if boxes is None else Path(boxes).resolve()
        self._boxes = None if self.boxes_file is None else _read_boxes(self.boxes_file)
        self._boxes_hash = None if self.boxes_file is None else \
            hashlib.sha256(self.boxes_file.read_bytes()).hexdigest()

    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        h, w = image.shape[:2]
        mask = np.zeros((h, w), bool)
        if self._boxes is None:
            mh, mw = round(h * (1 - self.fraction) / 2), round(w * (1 - self.fraction) / 2)
            mask[mh:h - mh, mw:w - mw] = True
            return mask
        if sample.key not in self._boxes:
            raise CoarseInputError(f"no box for sample {sample.key!r} in {self.boxes_file}")
        for x0, y0, x1, y1 in self._boxes[sample.key]:
            mask[max(0, round(y0)):max(0, round(y1)), max(0, round(x0)):max(0, round(x1))] = True
        return mask

    def settings(self) -> dict[str, Any]:
        if self.boxes_file is None:
            return {"fraction": self.fraction}
        return {"boxes": str(self.boxes_file), "boxes_sha256": self._boxes_hash}
