"""Relabelling: a model's predictions of labelled images, cleaned into next round's label maps.

The paper's step between rounds, public so it can be run on its own (``c2f.relabel``): each image is
predicted, restricted to its own classes, its foreground re-cut by GrabCut, and dropped when the
foreground share falls outside ``[min_fg, max_fg]`` (:func:`c2f.refine.labels.postprocess_prediction`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from c2f.data.datasets import LabelledDataset, Sample
from c2f.data.io import read_image, read_mask, write_label_png, write_mask_png
from c2f.inference import Engine
from c2f.labelmap import BACKGROUND, DEFAULT_DISAGREEMENT, IGNORE, agreement
from c2f.masks.config import MaskConfig
from c2f.masks.stage import key_seed
from c2f.refine.labels import RoundLabel, postprocess_prediction

__all__ = ["RelabelResult", "relabel", "relabel_fold"]

_DEFAULTS = MaskConfig()  # relabel's defaults are the mask stage's: one source (TrainConfig.masks passes its own)


@dataclass
class RelabelResult:
    """Where the cleaned label maps went (key -> PNG), what was dropped and why, who was rescued."""

    labels: dict[str, Path] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    objectness_fallback: list[str] = field(default_factory=list)  # kept by counting foreign classes


def relabel_fold(key: str, folds: int) -> int:
    """The cross-fitting fold of an image: fixed by its key, so it is the same in every round."""
    return key_seed(f"relabel-fold:{key}") % folds


def relabel(
    model: Engine | str | Path | Sequence[Engine],
    dataset: LabelledDataset,
    out_dir: str | Path,
    *,
    grabcut: bool = _DEFAULTS.grabcut,
    grabcut_iterations: int = _DEFAULTS.grabcut_iterations,
    grabcut_max_side: int | None = _DEFAULTS.grabcut_max_side,
    min_fg: float = _DEFAULTS.min_fg,
    max_fg: float = _DEFAULTS.max_fg,
    ignore_band: int = _DEFAULTS.ignore_band,
    agree_with: Mapping[str, Path] | None = None,
    disagreement: str = DEFAULT_DISAGREEMENT,
    workers: int = _DEFAULTS.workers,
    write_masks: bool = False,
    progress: bool = True,
) -> RelabelResult:
    """Predict every image of ``dataset`` and write its cleaned label map to ``out_dir/labels/<key>.png``.

    ``model`` is an engine, a model file (ONNX export or checkpoint), or one engine per cross-fitting
    fold (each image is then predicted by the engine of :func:`relabel_fold`). ``dropped.json`` and
    ``objectness_fallback.json`` go beside ``labels/``; with ``write_masks`` the 0/255 foreground of
    each kept map goes to ``out_dir/masks/<key>.png`` too. ``out_dir/labels`` and ``out_dir/masks``
    are replaced, so a killed earlier attempt leaves nothing behind. The model runs in this thread,
    the post-processing (GrabCut dominates it) on ``workers`` threads; GrabCut is seeded per key, so
    the result does not depend on ``workers``. The cleaning settings default to
    :class:`~c2f.masks.config.MaskConfig`'s (a training run passes its ``TrainConfig.masks``, with
    ``grabcut=round_grabcut``); ``grabcut_max_side`` bounds GrabCut's working size (None: full size).

    ``agree_with`` (key -> label PNG, e.g. the labels the model was trained on) keeps only the pixels
    where the cleaned map agrees with that image's earlier map; the rest becomes IGNORE, or with
    ``disagreement="background"`` background wherever either map says background
    (:func:`c2f.labelmap.agreement`); pixels the earlier map ignored stay ignored. A model
    relabelling its own training images repeats its mistakes with confidence, and where two
    independent cleanings disagree neither is to be trusted. Images without an earlier map are kept
    as cleaned.
    """
    engines = _engines(model)
    out = Path(out_dir)
    for folder in ("labels", "masks"):
        shutil.rmtree(out / folder, ignore_errors=True)
    result = RelabelResult()

    def clean(sample: Sample, image: np.ndarray, probs: np.ndarray) -> tuple[str, RoundLabel]:
        cleaned = postprocess_prediction(
            image, probs, sample.labels, grabcut=grabcut, grabcut_iterations=grabcut_iterations,
            grabcut_max_side=grabcut_max_side, min_fg=min_fg, max_fg=max_fg, ignore_band=ignore_band,
            seed=key_seed(sample.key))
        if agree_with is not None and cleaned.label_map is not None and sample.key in agree_with:
            earlier = read_mask(agree_with[sample.key])
            cleaned = dataclasses.replace(cleaned, label_map=agreement(cleaned.label_map, earlier, disagreement))
        return sample.key, cleaned

    def store(key: str, cleaned: RoundLabel) -> None:
        if cleaned.label_map is None:
            result.dropped[key] = cleaned.dropped or "dropped"
            return
        path = out / "labels" / f"{key}.png"
        write_label_png(path, cleaned.label_map)
        result.labels[key] = path
        if write_masks:
            foreground = (cleaned.label_map != BACKGROUND) & (cleaned.label_map != IGNORE)
            write_mask_png(out / "masks" / f"{key}.png", foreground)
        if cleaned.objectness_fallback:
            result.objectness_fallback.append(key)

    workers = max(workers, 1)
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(dataset.samples), desc="relabel", disable=not progress, leave=False) as bar:
        pending: deque[Future] = deque()
        for sample in dataset.samples:
            image = read_image(sample.image)
            engine = engines[relabel_fold(sample.key, len(engines))]
            probs, _ = next(iter(engine.probabilities([image])))
            pending.append(pool.submit(clean, sample, image, probs))
            while pending and (pending[0].done() or len(pending) > 2 * workers):
                store(*pending.popleft().result())
                bar.update()
        while pending:
            store(*pending.popleft().result())
            bar.update()
    out.mkdir(parents=True, exist_ok=True)
    (out / "dropped.json").write_text(json.dumps(result.dropped, indent=2))
    (out / "objectness_fallback.json").write_text(json.dumps(sorted(result.objectness_fallback), indent=2))
    return result


def _engines(model: Engine | str | Path | Sequence[Engine]) -> list[Engine]:
    if isinstance(model, Engine):
        return [model]
    if isinstance(model, (str, Path)):
        return [Engine.open(model)]
    engines = list(model)
    if not engines:
        raise ValueError("relabel needs at least one engine")
    return engines
