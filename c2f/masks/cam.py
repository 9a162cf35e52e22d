"""``cam``: class activation maps of a classifier trained on the image-level labels.

The labels say *which* classes are present; a classifier trained on them (Zhou et al., CVPR 2016)
localises each class through its pooled linear layer: the class's weights applied to the feature
map, before pooling, score every location. That gives a coarse foreground
and, unlike class-agnostic generators, per-class evidence that splits a multi-label image's
foreground between its classes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from c2f.data.datasets import LabelledDataset, Sample
from c2f.masks.generators import register_generator
from c2f.masks.learned import LearnedGenerator, read_training_images
from c2f.models.efficientnet import EfficientNetLite0, lite0_weights_path
from c2f.models.registry import load_backbone_weights

logger = logging.getLogger(__name__)

__all__ = ["CamNet", "CamGenerator"]

_VERSION = 1  # bump when training changes: it is part of the weights' cache key

# Log-sum-exp pooling sharpness: between average (0) and max pooling (infinity). Average pooling
# lets background locations carry the label ("this scene holds a square"), giving CAMs that
# cover the whole image; near-max pooling makes "class absent" mean "absent everywhere", which
# pushes shared background scores down for every class and leaves the object as the evidence.
_LSE_R = 5.0


class CamNet(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 up to stride 16, then a trained 1x1 conv and classifier.

    Classifying per location and then pooling keeps the per-location scores that are the CAMs.
    Only the two 1x1 layers train, on trunk features computed once per image: on a 2-core CPU a
    backward pass through the later Lite0 stages costs 0.3-2 s per batch of 8, and in our trials
    on the demo data fine-tuning those stages gave CAMs that localised worse than these layers on
    the frozen stride-16 features (two-label pixels assigned right: 0.61 against 0.79).
    """

    def __init__(self, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0(output_stride=16)
        self.split = self.backbone._taps[2] + 1  # blocks up to the stride-16 stage
        channels = self.backbone.out_channels[2]
        self.hidden = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(hidden, num_classes, 1)

    def drop_unused_blocks(self) -> None:
        """Forget the stages after the trunk (after loading ImageNet weights, which has them)."""
        self.backbone._blocks = self.backbone._blocks[:self.split]

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """NCHW RGB in [0, 255] -> the frozen stride-16 features."""
        net = self.backbone
        x = net.act(net._bn0(net._conv_stem((pixels - 127.5) / 127.5)))  # Lite0's input scaling
        for block in net._blocks[:self.split]:
            x = block(x)
        return x

    def logits(self, trunk_features: torch.Tensor) -> torch.Tensor:
        """NxK image logits: log-sum-exp pooled per-location class scores."""
        scores = self.classifier(self.hidden(trunk_features)).flatten(2)
        return (torch.logsumexp(_LSE_R * scores, 2) - math.log(scores.shape[2])) / _LSE_R

    def cams(self, pixels: torch.Tensor) -> torch.Tensor:
        """NxKxhxw ReLU(feature . class weight), each map divided by its maximum."""
        maps = F.relu(F.conv2d(self.hidden(self.trunk(pixels)), self.classifier.weight))
        return maps / maps.amax((2, 3), keepdim=True).clamp_min(1e-6)


@register_generator
class CamGenerator(LearnedGenerator):
    """Union over the image's labels of CAM > `threshold`; the CAMs are the class evidence.

    Fitting trains a classifier on ImageNet-pretrained EfficientNet-Lite0 features (see
    :class:`CamNet`) with multi-label BCE over the dataset's non-background classes, for
    `epochs` at `size` x `size` px, seeded by `seed`.
    """

    name = "cam"

    def __init__(self, epochs: int = 50, size: int = 224, threshold: float = 0.3, seed: int = 0,
                 lr: float = 1e-3, batch_size: int = 16) -> None:
        super().__init__()
        if epochs < 1 or size < 32 or not 0 < threshold < 1:
            raise ValueError("cam needs epochs >= 1, size >= 32 and 0 < threshold < 1")
        self.epochs, self.size, self.threshold = epochs, size, threshold
        self.seed, self.lr, self.batch_size = seed, lr, batch_size
        self._last: tuple[str, np.ndarray] | None = None

    def options(self) -> dict[str, Any]:
        return {"version": _VERSION, "epochs": self.epochs, "size": self.size, "threshold": self.threshold,
                "seed": self.seed, "lr": self.lr, "batch_size": self.batch_size}

    def _train(self, dataset: LabelledDataset, progress: bool) -> dict[str, Any]:
        labelled = [s for s in dataset.samples if s.labels]
        samples, _, small = read_training_images(labelled, self.size)
        if not samples:
            raise ValueError("cam: no readable image with an image-level label to train on")
        num_classes = dataset.num_classes - 1
        targets = torch.zeros(len(samples), num_classes)
        for row, sample in enumerate(samples):
            targets[row, [label - 1 for label in sample.labels]] = 1.0
        x = torch.from_numpy(small).permute(0, 3, 1, 2).float()

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        model = CamNet(num_classes)
        load_backbone_weights(model.backbone, lite0_weights_path())
        model.drop_unused_blocks()
        model.eval()  # the trunk is frozen, BN statistics included
        started = time.perf_counter()
        with torch.no_grad():  # trunk features of each image (flip 0) and its mirror image (1)
            feats = torch.stack([
                torch.cat([model.trunk(view[i:i + 16]) for i in range(0, len(view), 16)])
                for view in (x, x.flip(-1))])
        trained = [*model.hidden.parameters(), *model.classifier.parameters()]
        optimiser = torch.optim.Adam(trained, lr=self.lr)
        for _ in tqdm(range(self.epochs), desc="cam epochs", disable=not progress):
            order = rng.permutation(len(x))
            for start in range(0, len(order), self.batch_size):
                index = torch.from_numpy(order[start:start + self.batch_size])
                flips = torch.from_numpy(rng.integers(0, 2, len(index)))
                logits = model.logits(feats[flips, index])
                loss = F.binary_cross_entropy_with_logits(logits, targets[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        logger.info("cam: trained on %d images in %.1f s", len(x), time.perf_counter() - started)
        return {"state_dict": model.state_dict(), "num_classes": num_classes}

    def _build(self, payload: dict[str, Any]) -> nn.Module:
        model = CamNet(int(payload["num_classes"]))
        model.drop_unused_blocks()
        model.load_state_dict(payload["state_dict"])
        return model

    def _cams(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        """KxHxW float32 CAMs of the sample's labels at the image's size (last one memoised)."""
        if self._last is not None and self._last[0] == sample.key:
            return self._last[1]
        if not sample.labels:
            return np.zeros((0, *image.shape[:2]), np.float32)
        small = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        pixels = torch.from_numpy(small[None]).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            maps = self.model.cams(pixels)[0, [label - 1 for label in sample.labels]]
            maps = F.interpolate(maps[None], size=image.shape[:2], mode="bilinear",
                                 align_corners=False)[0]
        cams = maps.numpy()
        self._last = (sample.key, cams)
        return cams

    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        cams = self._cams(image, sample)
        return (cams > self.threshold).any(axis=0)

    def class_evidence(self, image: np.ndarray, sample: Sample) -> np.ndarray | None:
        return self._cams(image, sample)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_last": None}
