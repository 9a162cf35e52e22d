"""The dataset model: images with image-level labels, optional ground truth and coarse maps.

Image-level labels are the only supervision the method needs; ground-truth masks are kept beside
them purely for evaluation, and ready-made coarse maps (saliency) are an optional shortcut for the
first stage. Everything here is plain data plus a few pure functions so that every layout loader
(:mod:`c2f.data.layouts`) produces the same structure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from c2f.data.io import ImageReadError, image_shape, read_image, read_mask
from c2f.labelmap import BACKGROUND, IGNORE

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

MaskFormat = Literal["binary", "semantic", "trimap"]
Task = Literal["semantic", "foreground"]

# Oxford-IIIT Pet trimap values.
_TRIMAP_FOREGROUND, _TRIMAP_BACKGROUND = 1, 2

# Datasets (by root) whose mask/image size mismatch has already been reported: once is enough.
_warned_size_mismatch: set[str] = set()


@dataclass(frozen=True)
class Sample:
    """One image with its image-level labels.

    ``labels`` are class indices >= 1, normalised to sorted and unique; background is implicit in
    every image and therefore never listed. An empty tuple means "unlabelled" (inference sets).
    """

    key: str
    image: Path
    labels: tuple[int, ...] = ()
    mask: Path | None = None
    saliency: Path | None = None

    def __post_init__(self) -> None:
        labels = tuple(sorted({int(label) for label in self.labels}))
        if labels and not 1 <= labels[0] <= labels[-1] < IGNORE:
            raise ValueError(
                f"sample {self.key!r}: labels must be class indices 1..254, got {labels}"
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "image", Path(self.image))
        for name in ("mask", "saliency"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


@dataclass
class LabelledDataset:
    """A list of samples plus the class space their labels index into.

    ``mask_format`` says how to decode the ground-truth files:
      * ``"binary"``: 0/255 (or 0/1) foreground of the image's single label;
      * ``"semantic"``: class indices with 255 = ignore (VOC SegmentationClass);
      * ``"trimap"``: Oxford-IIIT Pet trimaps, 1 = object, 2 = background, 3 = border (ignored).
    ``task`` ``"foreground"`` means evaluation is class-agnostic (0 background / 1 object) even when
    the labels still name classes, as in object-discovery benchmarks.
    ``notes`` are one-line warnings about what loading left out (an empty class folder, images the
    layout does not look at); the loader has logged them, and reports such as the mask stage's
    summary repeat them, because a silently smaller data set is the hardest mistake to notice.
    """

    root: Path
    class_names: list[str]
    samples: list[Sample] = field(default_factory=list)
    mask_format: MaskFormat = "binary"
    task: Task = "semantic"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.class_names or self.class_names[0] != "background":
            raise ValueError(
                f"class_names must start with 'background', got {self.class_names[:3]}"
            )
        top = max((label for sample in self.samples for label in sample.labels), default=0)
        if top >= len(self.class_names):
            raise ValueError(f"label {top} is outside the {len(self.class_names)} class names")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_ground_truth(self) -> bool:
        """True when there are samples and every one has a mask: evaluation needs all of them."""
        return bool(self.samples) and all(sample.mask is not None for sample in self.samples)

    def subset(
        self, keys_or_predicate: Iterable[str] | Callable[[Sample], bool]
    ) -> LabelledDataset:
        """A copy restricted to the given keys (KeyError for unknown ones) or to matching samples.

        The original order is kept either way, so subsets of a deterministic dataset stay so.
        """
        if callable(keys_or_predicate):
            kept = [sample for sample in self.samples if keys_or_predicate(sample)]
        else:
            wanted = set(keys_or_predicate)
            missing = wanted - {sample.key for sample in self.samples}
            if missing:
                raise KeyError(f"{len(missing)} unknown sample keys, e.g. {sorted(missing)[:5]}")
            kept = [sample for sample in self.samples if sample.key in wanted]
        return dataclasses.replace(self, samples=kept)

    def to_foreground(self) -> LabelledDataset:
        """The class-agnostic copy: classes background/foreground, every labelled image -> (1,)."""
        samples = [dataclasses.replace(s, labels=(1,) if s.labels else ()) for s in self.samples]
        return dataclasses.replace(
            self, class_names=["background", "foreground"], samples=samples, task="foreground"
        )


def class_index(dataset: LabelledDataset, name: str) -> int:
    """Index of a class name, with an error message that lists the valid names."""
    try:
        return dataset.class_names.index(name)
    except ValueError:
        raise KeyError(
            f"unknown class {name!r}; valid names: {', '.join(dataset.class_names)}"
        ) from None


def _single_label(sample: Sample, dataset: LabelledDataset) -> int:
    """The value a binary/trimap foreground gets: 1 for the foreground task, else the one label."""
    if dataset.task == "foreground":
        return 1
    if len(sample.labels) != 1:
        raise ValueError(
            f"sample {sample.key!r}: a {dataset.mask_format} mask only defines ground truth for "
            f"exactly one label, the image has {len(sample.labels)}"
        )
    return sample.labels[0]


def _match_image_size(mask: np.ndarray, sample: Sample, dataset: LabelledDataset) -> np.ndarray:
    """Resize a mask to its image's size (nearest neighbour) if they differ; warn once a dataset."""
    height, width = image_shape(sample.image)
    if mask.shape == (height, width):
        return mask
    root = str(dataset.root)
    log = logger.debug if root in _warned_size_mismatch else logger.warning
    _warned_size_mismatch.add(root)
    log(
        "mask %s is %dx%d but its image is %dx%d: resizing the mask (nearest neighbour); "
        "further mismatches in %s are logged at debug level",
        sample.mask,
        mask.shape[1],
        mask.shape[0],
        width,
        height,
        root,
    )
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def ground_truth(sample: Sample, dataset: LabelledDataset) -> np.ndarray:
    """The HxW uint8 semantic label map of a sample (0 background, class ids, 255 ignore).

    For a ``foreground`` task every object pixel is 1. The map always has the image's size.

    Raises:
        ValueError: the sample has no mask, or a binary/trimap mask for a multi-label image.
        ImageReadError: the mask file cannot be read.
    """
    if sample.mask is None:
        raise ValueError(f"sample {sample.key!r} has no ground-truth mask")
    mask = read_mask(sample.mask)
    if dataset.mask_format == "binary":
        value = _single_label(sample, dataset)
        # 0/1 masks (Object Discovery) and 0/255 masks with anti-aliased edges both occur.
        foreground = mask > 0 if mask.max(initial=0) <= 1 else mask > 127
        label = np.where(foreground, value, BACKGROUND).astype(np.uint8)
    elif dataset.mask_format == "trimap":
        value = _single_label(sample, dataset)
        label = np.full(mask.shape, IGNORE, dtype=np.uint8)
        label[mask == _TRIMAP_FOREGROUND] = value
        label[mask == _TRIMAP_BACKGROUND] = BACKGROUND
    elif dataset.mask_format == "semantic":
        label = mask.copy()
        if dataset.task == "foreground":
            label[(label != BACKGROUND) & (label != IGNORE)] = 1
    else:
        raise ValueError(f"unknown mask_format {dataset.mask_format!r}")
    return _match_image_size(label, sample, dataset)


def _unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from ``seed`` and ``key``, identical on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split(
    dataset: LabelledDataset, val_fraction: float = 0.2, seed: int = 0
) -> tuple[LabelledDataset, LabelledDataset]:
    """Deterministic, stratified train/val split.

    Rule: samples are grouped by their label tuple; within a group they are ranked by
    ``sha256(f"{seed}:{key}")`` and the first ``round(n * val_fraction)`` go to val, but never all
    of a group with n >= 2. Then, for any class with >= 2 images and none in train (possible with
    multi-label groups of one), its val image with the highest hash moves to train. The result
    depends only on the keys, labels, ``val_fraction`` and ``seed``, not on order or platform.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    hashes = {sample.key: _unit_hash(seed, sample.key) for sample in dataset.samples}
    groups: dict[tuple[int, ...], list[Sample]] = defaultdict(list)
    for sample in dataset.samples:
        groups[sample.labels].append(sample)
    val_keys: set[str] = set()
    for members in groups.values():
        ranked = sorted(members, key=lambda s: (hashes[s.key], s.key))
        n_val = int(len(ranked) * val_fraction + 0.5)
        if len(ranked) >= 2:
            n_val = min(n_val, len(ranked) - 1)
        val_keys.update(s.key for s in ranked[:n_val])
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for sample in dataset.samples:
        for label in sample.labels:
            by_class[label].append(sample)
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) >= 2 and all(s.key in val_keys for s in members):
            val_keys.discard(max(members, key=lambda s: (hashes[s.key], s.key)).key)
    train = dataset.subset(lambda s: s.key not in val_keys)
    val = dataset.subset(lambda s: s.key in val_keys)
    return train, val


def read_error(sample: Sample, error: ImageReadError) -> tuple[str, str]:
    """(image path, reason) for a sample that cannot be used because ``error`` was raised reading it.

    The image path names what is skipped; the reason names the ground-truth mask when that was the
    unreadable file, so the listing says which file to fix.
    """
    if sample.mask is not None and error.path == str(sample.mask):
        return str(sample.image), f"ground-truth mask {sample.mask}: {error.reason}"
    return str(sample.image), error.reason


def _read_error(sample: Sample, masks: bool = True) -> tuple[str, str] | None:
    try:
        read_image(sample.image)
        if masks and sample.mask is not None:
            read_mask(sample.mask)
    except ImageReadError as exc:
        return read_error(sample, exc)
    return None


def check_images(
    dataset: LabelledDataset, workers: int = 1, *, masks: bool = True
) -> tuple[LabelledDataset, list[tuple[str, str]]]:
    """Fully decode every image (and, with ``masks``, its ground-truth mask); return the dataset
    without unreadable ones, and (image path, reason)s.

    Header checks miss truncated files, so each file is decoded completely. A sample whose mask is
    unreadable goes too: scoring it would fail later, after hours of training. Threads suffice for
    ``workers > 1`` because Pillow releases the GIL while decoding.
    """
    def check(sample: Sample) -> tuple[str, str] | None:
        return _read_error(sample, masks)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(check, dataset.samples))
    else:
        errors = [check(sample) for sample in dataset.samples]
    bad: list[tuple[str, str]] = []
    good: list[Sample] = []
    for sample, error in zip(dataset.samples, errors, strict=True):
        if error is None:
            good.append(sample)
        else:
            logger.warning("skipping unreadable image %s: %s", *error)
            bad.append(error)
    return dataclasses.replace(dataset, samples=good), bad
