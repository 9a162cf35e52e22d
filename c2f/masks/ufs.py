"""``ufs``: the paper's coarse masks, a student network taught by unsupervised masks.

Croitoru et al. (ICCV 2017, "Unsupervised learning from video to detect foreground objects in
single images") train a small fully convolutional student on the masks of an unsupervised
teacher; the student generalises over the whole collection and smooths out the teacher's
per-image mistakes, and each next generation learns from the previous one's predictions. Here
the teacher is any weight-free registered generator (our saliency by default).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from c2f.data.datasets import LabelledDataset, Sample
from c2f.masks.generators import (
    CoarseGenerator,
    CoarseInputError,
    make_generator,
    register_generator,
)
from c2f.data.io import file_identity
from c2f.masks.learned import Fingerprint, LearnedGenerator, read_training_images

logger = logging.getLogger(__name__)

__all__ = ["Student", "UfsGenerator"]

_VERSION = 1  # bump when training changes: it is part of the weights' cache key


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Student(nn.Module):
    """8 conv layers, stride 8, dilated middle for context; one foreground logit at input size.

    Small enough to train on a CPU in seconds at 128 px, as the coarse stage must stay cheap.
    Besides the pixels it sees them relative to the image's own mean colour and spread: being
    unlike the rest of the image is what saliency teachers look for, and a small receptive field
    cannot measure it otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_block(6, 16, stride=2), *_block(16, 32, stride=2), *_block(32, 32),
            *_block(32, 64, stride=2), *_block(64, 64, dilation=2), *_block(64, 64, dilation=4),
            *_block(64, 32), nn.Conv2d(32, 1, 1),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """NCHW RGB in [0, 255] -> Nx1xHxW logits."""
        mean = pixels.mean((2, 3), keepdim=True)
        contrast = (pixels - mean) / (pixels.std((2, 3), keepdim=True) + 1.0)
        logits = self.layers(torch.cat([pixels / 127.5 - 1.0, contrast], 1))
        return F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def _train_student(images: torch.Tensor, targets: torch.Tensor, epochs: int, seed: int,
                   batch_size: int = 16, lr: float = 3e-3) -> Student:
    """A fresh student fitted with BCE to `targets` (Nx1xHxW in {0, 1}), flips as augmentation."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = Student()
    optimiser = torch.optim.Adam(student.parameters(), lr=lr)
    steps = epochs * max(1, -(-len(images) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps)
    student.train()
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order), batch_size):
            index = torch.from_numpy(order[start:start + batch_size])
            x, y = images[index], targets[index]
            if rng.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            loss = F.binary_cross_entropy_with_logits(student(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return student.eval()


@torch.no_grad()
def _predict(student: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    return torch.cat([torch.sigmoid(student(images[i:i + batch_size]))
                      for i in range(0, len(images), batch_size)])


@register_generator
class UfsGenerator(LearnedGenerator):
    """Teacher masks -> `generations` students, each trained on its predecessor's masks.

    `teacher` names a weight-free registered generator built with `teacher_options`. Training
    and prediction run at `size` x `size` px; a pixel is foreground when the last student's
    probability, resized to the image, exceeds `threshold`.
    """

    name = "ufs"

    def __init__(self, teacher: str = "saliency", teacher_options: dict[str, Any] | None = None,
                 generations: int = 2, epochs: int = 15, size: int = 128, seed: int = 0,
                 threshold: float = 0.5) -> None:
        super().__init__()
        if generations < 1 or epochs < 1 or size < 32:
            raise ValueError("ufs needs generations >= 1, epochs >= 1 and size >= 32")
        self.teacher_name = teacher
        self.teacher_options = dict(teacher_options or {})
        self.teacher = make_generator(teacher, **self.teacher_options)
        if type(self.teacher).fit is not CoarseGenerator.fit:
            raise ValueError(f"the ufs teacher must be weight-free; {teacher!r} is learned")
        self.generations, self.epochs, self.size = generations, epochs, size
        self.seed, self.threshold = seed, threshold

    def options(self) -> dict[str, Any]:
        return {"version": _VERSION, "teacher": self.teacher_name, "teacher_settings": self.teacher.settings(),
                "generations": self.generations, "epochs": self.epochs, "size": self.size,
                "seed": self.seed, "threshold": self.threshold}

    def _fit_inputs(self, dataset: LabelledDataset, fingerprint: Fingerprint = file_identity) -> list[Any]:
        teacher_files = sorted(
            [str(path), fingerprint(path)]
            for sample in dataset.samples for path in self.teacher.source_files(sample))
        return [*super()._fit_inputs(dataset, fingerprint), teacher_files]

    def _train(self, dataset: LabelledDataset, progress: bool) -> dict[str, Any]:
        samples, images, small = read_training_images(dataset.samples, self.size)
        kept, masks = [], []
        for index, (sample, image) in enumerate(zip(samples, images)):
            try:
                mask = np.asarray(self.teacher(image, sample), bool)
            except (FileNotFoundError, CoarseInputError) as exc:
                logger.warning("ufs: no teacher mask for %s: %s", sample.key, exc)
                continue
            kept.append(index)
            masks.append(cv2.resize(mask.astype(np.float32), (self.size, self.size),
                                    interpolation=cv2.INTER_AREA) > 0.5)
        if not kept:
            raise ValueError("ufs: no image with a teacher mask to train on")
        x = _to_tensor(small[kept])
        targets = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
        student: Student | None = None
        for generation in tqdm(range(self.generations), desc="ufs generations",
                               disable=not progress):
            if student is not None:  # the previous student becomes the teacher
                targets = (_predict(student, x) > self.threshold).float()
            started = time.perf_counter()
            student = _train_student(x, targets, self.epochs, self.seed + generation)
            logger.info("ufs: generation %d trained on %d images in %.1f s", generation + 1,
                        len(x), time.perf_counter() - started)
        assert student is not None
        return {"state_dict": student.state_dict()}

    def _build(self, payload: dict[str, Any]) -> nn.Module:
        student = Student()
        student.load_state_dict(payload["state_dict"])
        return student

    def probability(self, image: np.ndarray) -> np.ndarray:
        """HxW float32 foreground probability of the last student, at the image's size."""
        small = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            prob = torch.sigmoid(self.model(_to_tensor(small[None])))[0, 0].numpy()
        h, w = image.shape[:2]
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)

    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        return self.probability(image) > self.threshold
