"""Training pairs (image, label map) with the paper's augmentation: resize, random crop, flip.

Randomness is drawn from a generator seeded by (seed, round, epoch, index), never from global state,
so a resumed run, a run with loader workers and a distributed run all see the same crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from c2f.data.io import read_image, read_mask


@dataclass(frozen=True)
class Pair:
    """One training example: an image and the label map it is trained to reproduce this round."""

    key: str
    image: Path
    label: Path


class LabelMapDataset(Dataset):
    """Yields ``(pixels float32 3xCxC in 0..255, target int64 CxC)`` with 255 = ignore."""

    def __init__(
        self, pairs: list[Pair], resize: int, crop: int, flip: bool = True, seed: int = 0, round_index: int = 0
    ) -> None:
        self.pairs = pairs
        self.resize, self.crop, self.flip = resize, crop, flip
        self.seed, self.round_index, self.epoch = seed, round_index, 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # Images are small after the resize, so each is decoded once per process.
        if index not in self._cache:
            pair = self.pairs[index]
            size = (self.resize, self.resize)
            image = cv2.resize(read_image(pair.image), size, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(read_mask(pair.label), size, interpolation=cv2.INTER_NEAREST)
            self._cache[index] = (image, label)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self._load(index)
        rng = np.random.default_rng([self.seed, self.round_index, self.epoch, index])
        top, left = (int(rng.integers(0, self.resize - self.crop + 1)) for _ in range(2))
        image = image[top : top + self.crop, left : left + self.crop]
        label = label[top : top + self.crop, left : left + self.crop]
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        return pixels, torch.from_numpy(label.astype(np.int64))


def epoch_order(n: int, seed: int, round_index: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's share of a seeded permutation, padded so every rank takes the same step count."""
    order = np.random.default_rng([seed, round_index, epoch, 1]).permutation(n).tolist()
    per_rank = -(-n // world)
    order += order[: per_rank * world - n]
    return order[rank::world]

