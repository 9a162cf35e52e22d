"""Scoring a model or label maps against ground truth: mIoU, per-class IoU, pixel accuracy, foreground Jaccard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from c2f.data.datasets import LabelledDataset, ground_truth, read_error
from c2f.data.io import ImageReadError, read_image, read_mask
from c2f.inference import Engine
from c2f.labelmap import IGNORE

from .metrics import Scorer

log = logging.getLogger(__name__)


def evaluate_engine(
    engine: Engine,
    dataset: LabelledDataset,
    crf: bool = False,
    grabcut: bool = False,
    progress: bool = True,
    known_labels: bool = False,
) -> dict:
    """Score an engine's predictions against the dataset's ground truth.

    The model's classes must be the dataset's (a foreground model is scored on ``to_foreground()``).
    ``known_labels`` restricts each prediction to its image's own labels (label-aware segmentation,
    the co-segmentation use: the classes in each photo are known, their pixels are not).
    An image whose file or ground-truth mask cannot be read is skipped, not fatal (one bad file must
    not cost a whole evaluation); the result counts them under ``skipped`` and lists
    ``{"path", "reason"}`` under ``skipped_images``.
    """
    if engine.info.num_classes != dataset.num_classes:
        raise ValueError(
            f"model has {engine.info.num_classes} classes but the dataset has {dataset.num_classes}; "
            "evaluate a foreground model with the dataset's foreground view"
        )
    scorer = Scorer(dataset.num_classes)
    samples = [s for s in dataset.samples if s.mask is not None]
    skipped: list[dict[str, str]] = []
    for sample in tqdm(samples, desc="evaluate", disable=not progress, leave=False):
        try:  # both files before the model runs: a bad mask costs no prediction
            image = read_image(sample.image)
            truth = ground_truth(sample, dataset)
        except ImageReadError as error:
            path, reason = read_error(sample, error)
            log.warning("skipping unreadable image %s: %s", path, reason)
            skipped.append({"path": path, "reason": reason})
            continue
        labels = [sample.labels] if known_labels else None
        prediction = engine.segment([image], crf=crf, grabcut=grabcut, labels=labels)[0]
        scorer.update(truth, prediction.label_map)
    settings = {"crf": crf, "grabcut": grabcut, "known_labels": known_labels}
    return scorer.summary(dataset.class_names) | settings | {"skipped": len(skipped), "skipped_images": skipped}


def score_label_maps(dataset: LabelledDataset, label_maps: Mapping[str, Path | np.ndarray]) -> dict:
    """Score training label maps (files or arrays, keyed by sample key) against ground truth."""
    scorer = Scorer(dataset.num_classes)
    for sample in dataset.samples:
        if sample.key not in label_maps or sample.mask is None:
            continue
        label = label_maps[sample.key]
        scorer.update(ground_truth(sample, dataset), read_mask(label) if isinstance(label, Path) else label)
    return scorer.summary(dataset.class_names)


def label_statistics(dataset: LabelledDataset, label_maps: Mapping[str, Path]) -> dict:
    """How many images a round trains on, their mean foreground share and pixels per class."""
    counts = np.zeros(256, dtype=np.int64)
    fg_shares = []
    for sample in dataset.samples:
        if sample.key not in label_maps:
            continue
        label = read_mask(label_maps[sample.key])
        hist = np.bincount(label.ravel(), minlength=256)
        counts += hist
        labelled = hist[:IGNORE].sum()
        fg_shares.append(float(hist[1:IGNORE].sum() / labelled) if labelled else 0.0)
    return {
        "images": len(fg_shares),
        "dropped": len(dataset.samples) - len(fg_shares),
        "mean_fg_share": float(np.mean(fg_shares)) if fg_shares else 0.0,
        "ignore_share": float(counts[IGNORE] / max(counts.sum(), 1)),
        "pixels_per_class": {
            name: int(counts[i]) for i, name in enumerate(dataset.class_names) if counts[i]
        },
    }


def format_table(metrics: dict) -> str:
    """A plain-text table of per-class IoU and the headline figures."""
    rows = [f"{'class':<16}{'IoU':>8}"]
    rows += [f"{name:<16}{iou:>8.3f}" for name, iou in metrics["iou_per_class"].items() if iou is not None]
    rows.append("-" * 24)
    rows += [
        f"{'mIoU':<16}{metrics['miou']:>8.3f}",
        f"{'pixel acc':<16}{metrics['pixel_accuracy']:>8.3f}",
        f"{'fg Jaccard':<16}{metrics['fg_jaccard']:>8.3f}",
    ]
    return "\n".join(rows)
