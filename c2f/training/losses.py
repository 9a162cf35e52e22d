"""The per-pixel training loss: cross-entropy (the paper's) or generalised cross-entropy.

Both ignore IGNORE (255) pixels and average over the labelled ones. The generalised cross-entropy
(Zhang & Sabuncu, NeurIPS 2018) is ``(1 - p_y ** q) / q`` for the probability ``p_y`` the model gives
a pixel's label. Its gradient is cross-entropy's scaled by ``p_y ** q``: a pixel whose label the model
confidently contradicts pulls less, so a model fits fewer of its weak labels' errors. On the horse
photos it cut the weak model's false positives and its spread between seeds (docs/cpu_recipe.md).
``q`` towards 0 gives cross-entropy back; ``q = 1`` is the mean absolute error of the label's
probability. With many classes it can fail to start: a fresh 21-class head gives each label about
1/21, those pixels pull about 0.12 times as hard as under cross-entropy, and the VOC recipe learnt
background only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from c2f.labelmap import IGNORE

LOSSES = ("ce", "gce")


def pixel_loss(logits: torch.Tensor, target: torch.Tensor, *, kind: str, gce_q: float) -> torch.Tensor:
    """Mean loss over the labelled pixels of ``logits`` (N, C, H, W) against ``target`` (N, H, W).

    A batch with no labelled pixel gives a zero loss that still has a gradient (not NaN).
    """
    labelled = target != IGNORE
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    if kind == "ce":
        return F.cross_entropy(logits, target, ignore_index=IGNORE)
    if kind == "gce":
        log_probs = F.log_softmax(logits, dim=1)
        label = torch.where(labelled, target, torch.zeros_like(target))
        log_p = log_probs.gather(1, label.unsqueeze(1)).squeeze(1)[labelled]
        return ((1.0 - torch.exp(gce_q * log_p)) / gce_q).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
