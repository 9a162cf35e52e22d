"""What every learned coarse generator shares: cached fitting, weights identity, lazy loading.

A learned generator trains once over the whole data set (in the main process), saves its weights
under ``work_dir/<name>/<inputs hash>.pt`` and from then on is described by the sha256 of that
file. The stage ships the generator to spawned workers, so only the weights *path* is pickled and
each process loads the model on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from c2f.data.datasets import LabelledDataset, Sample
from c2f.data.io import ImageReadError, file_digest, file_identity, read_image
from c2f.masks.generators import CoarseGenerator

logger = logging.getLogger(__name__)

Fingerprint = Callable[[Path], Any]  # a file -> what identifies it (file_identity, file_digest)

__all__ = ["LearnedGenerator", "read_training_images"]


def read_training_images(
    samples: list[Sample], size: int
) -> tuple[list[Sample], list[np.ndarray], np.ndarray]:
    """The readable samples, their full-size images and an NxHxWx3 uint8 stack at `size` px.

    Unreadable images are skipped here (the stage records them as failures later), so one
    broken file does not stop training.
    """
    kept, images, small = [], [], []
    for sample in samples:
        try:
            image = read_image(sample.image)
        except (ImageReadError, FileNotFoundError) as exc:
            logger.warning("fit: skipping %s: %s", sample.key, exc)
            continue
        kept.append(sample)
        images.append(image)
        small.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return kept, images, np.stack(small) if small else np.zeros((0, size, size, 3), np.uint8)


class LearnedGenerator(CoarseGenerator):
    """A generator with a torch model trained by :meth:`fit` and loaded lazily per process."""

    def __init__(self) -> None:
        self._weights: Path | None = None
        self._weights_sha256: str | None = None
        self._model: nn.Module | None = None

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """JSON options that determine training and prediction (without the weights)."""

    @abstractmethod
    def _train(self, dataset: LabelledDataset, progress: bool) -> dict[str, Any]:
        """Train on `dataset`; returns the payload to save (tensors and plain values only)."""

    @abstractmethod
    def _build(self, payload: dict[str, Any]) -> nn.Module:
        """The model described by a saved payload, weights loaded."""

    def _fit_inputs(self, dataset: LabelledDataset, fingerprint: Fingerprint = file_identity) -> list[Any]:
        """What the training data consists of: keys, labels and image fingerprints, sorted."""
        return sorted([s.key, list(s.labels), fingerprint(s.image)] for s in dataset.samples)

    def _digest(self, dataset: LabelledDataset, fingerprint: Fingerprint) -> str:
        identity = {"options": self.options(), "inputs": self._fit_inputs(dataset, fingerprint),
                    "classes": dataset.class_names}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def fit(self, dataset: LabelledDataset, work_dir: Path, progress: bool = True) -> None:
        """Train on `dataset`, or reuse the weights trained on the same images with the same options.

        Weights are named by the images' content digests, so a copied or restored data folder
        reuses them; ``<size-and-mtime digest>.alias`` files name the weights of the files as they
        are now, so a rerun on untouched files reads no image to find them.
        """
        folder = Path(work_dir) / self.name
        alias = folder / f"{self._digest(dataset, file_identity)}.alias"
        aliased = alias.read_text().strip() if alias.is_file() else None
        path = folder / aliased if aliased else None
        if path is None or not path.is_file():
            path = folder / f"{self._digest(dataset, file_digest)}.pt"
        if path.is_file():
            logger.info("%s generator: reusing trained weights %s", self.name, path)
        else:
            payload = self._train(dataset, progress)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save(payload, tmp)
            os.replace(tmp, path)
            logger.info("%s generator: trained weights saved to %s", self.name, path)
        if aliased != path.name:
            tmp = alias.with_name(f".{alias.name}.{os.getpid()}.tmp")
            tmp.write_text(path.name + "\n")
            os.replace(tmp, alias)
        self._weights = path.resolve()
        self._weights_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self._model = None  # predict with the saved weights, whether just trained or reloaded

    def settings(self) -> dict[str, Any]:
        if self._weights_sha256 is None:
            raise RuntimeError(f"the {self.name} generator is not fitted: call fit() first "
                               "(run_mask_stage does)")
        return {**self.options(), "weights_sha256": self._weights_sha256}

    @property
    def model(self) -> nn.Module:
        """The trained model in eval mode, loaded on first use in this process."""
        if self._model is None:
            if self._weights is None:
                raise RuntimeError(f"the {self.name} generator is not fitted: call fit() first")
            if multiprocessing.parent_process() is not None:
                torch.set_num_threads(1)  # a stage worker: the pool already uses every core
            payload = torch.load(self._weights, map_location="cpu", weights_only=True)
            self._model = self._build(payload).eval()
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None  # workers reload from the weights file
        return state
