"""The pixel loss: cross-entropy and the generalised cross-entropy, with IGNORE pixels left out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from c2f.labelmap import IGNORE
from c2f.training import TrainConfig
from c2f.training.losses import LOSSES, pixel_loss


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6, generator=generator) * 3
    target = torch.randint(0, 3, (2, 5, 6), generator=generator)
    target[0, :2] = IGNORE
    return logits, target


def test_cross_entropy_is_the_mean_over_labelled_pixels() -> None:
    logits, target = _batch()
    labelled = target != IGNORE
    per_pixel = F.cross_entropy(logits, target.clamp(max=2), reduction="none")
    expected = per_pixel[labelled].mean()
    assert torch.allclose(pixel_loss(logits, target, kind="ce", gce_q=0.7), expected)


def test_generalised_cross_entropy_follows_its_formula_and_ignores_ignore() -> None:
    logits, target = _batch()
    labelled = target != IGNORE
    p = F.softmax(logits, 1).gather(1, target.clamp(max=2).unsqueeze(1)).squeeze(1)[labelled]
    for q in (0.3, 0.7, 1.0):
        expected = ((1 - p ** q) / q).mean()
        assert torch.allclose(pixel_loss(logits, target, kind="gce", gce_q=q), expected, atol=1e-6)
    changed = logits.clone()
    changed[0, :, :2] = 50.0  # only ignored pixels change
    assert torch.equal(pixel_loss(changed, target, kind="gce", gce_q=0.7),
                       pixel_loss(logits, target, kind="gce", gce_q=0.7))


def test_generalised_cross_entropy_tends_to_cross_entropy_as_q_tends_to_zero() -> None:
    logits, target = _batch(1)
    ce = pixel_loss(logits, target, kind="ce", gce_q=0.7)
    assert torch.allclose(pixel_loss(logits, target, kind="gce", gce_q=1e-4), ce, rtol=1e-3)


def test_a_confidently_contradicted_label_pulls_less_under_gce() -> None:
    """GCE's gradient is cross-entropy's times p_y ** q: the label the model rejects weighs less."""
    logits = torch.tensor([[4.0, -4.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2).clone()  # pixel 0 sure of class 0
    target = torch.tensor([[[1, 1]]])  # pixel 0's label contradicts the model, pixel 1's is a coin toss
    grads = {}
    for kind in ("ce", "gce"):
        x = logits.clone().requires_grad_(True)
        pixel_loss(x, target, kind=kind, gce_q=0.7).backward()
        grads[kind] = x.grad[0, :, 0].norm(dim=0)  # per pixel
    ce_ratio = grads["ce"][0] / grads["ce"][1]
    gce_ratio = grads["gce"][0] / grads["gce"][1]
    p = F.softmax(logits, 1)[0, 1, 0]
    assert gce_ratio < ce_ratio / 10
    assert torch.allclose(gce_ratio / ce_ratio, (p[0] / p[1]) ** 0.7, rtol=1e-4)


@pytest.mark.parametrize("kind", ["ce", "gce"])
def test_a_batch_without_labels_gives_zero_loss_with_a_gradient(kind: str) -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = pixel_loss(logits, torch.full((1, 3, 3), IGNORE), kind=kind, gce_q=0.7)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_loss_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="loss must be one of ce, gce"):
        TrainConfig(loss="focal")
    with pytest.raises(ValueError, match="gce_q"):
        TrainConfig(loss="gce", gce_q=0.0)
    assert TrainConfig().updated(loss="gce", gce_q=0.5).gce_q == 0.5


def test_the_train_command_offers_every_loss() -> None:
    from c2f.cli.train import command

    option = next(param for param in command.params if param.name == "loss")
    assert tuple(option.type.choices) == LOSSES
