"""One round of training: SGD with the paper's settings, poly schedule, 10x head learning rate.

A round is resumable at epoch granularity: every epoch ends with an atomic ``last.pt`` holding model,
optimizer and position. Because all randomness is seeded from (seed, round, epoch), a resumed round
takes exactly the steps an unbroken one would.

With ``ema_decay`` > 0 the round's model is an exponential moving average of the trained weights
(``torch.optim.swa_utils.AveragedModel``): a round's end then depends less on its last few batches,
which is standard practice for long runs. On the short demo rounds it did not help on average
(README, "Three options go beyond the paper").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from c2f.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from c2f.models import SegmentationModel, build_model

from .config import TrainConfig
from .distributed import DistInfo
from .losses import pixel_loss
from .samples import LabelMapDataset, epoch_order

log = logging.getLogger(__name__)



def new_model(cfg: TrainConfig, num_classes: int, round_index: int) -> SegmentationModel:
    """A freshly initialised model for a round (seeded, ImageNet backbone)."""
    torch.manual_seed(cfg.seed * 1000 + round_index)
    return build_model(
        cfg.model_arch, cfg.backbone, num_classes, cfg.model_output_stride, pretrained=True, weights=cfg.weights
    )


def make_optimizer(model: SegmentationModel, cfg: TrainConfig) -> torch.optim.SGD:
    backbone, head = model.parameter_groups()
    return torch.optim.SGD(
        [{"params": backbone, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_mult}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


def weight_average(model: SegmentationModel, decay: float) -> AveragedModel | None:
    """An EMA of ``model``'s weights and BatchNorm statistics, or None when ``decay`` is 0.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so the first steps of a
    round started from ImageNet (random head) fade out quickly instead of lingering in the average.
    """
    if decay == 0.0:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        rate = min(decay, (1 + float(count)) / (10 + float(count)))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - rate)
        else:  # integer buffers (BatchNorm's batch counter) follow the model
            for average, value in zip(averaged, current, strict=True):
                average.copy_(value)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def steps_per_epoch(n: int, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps per epoch; the global batch is split over ranks, so this does not depend on world."""
    return math.ceil(math.ceil(n / world) / max(cfg.batch_size // world, 1))


def train_round(
    dataset: LabelMapDataset,
    cfg: TrainConfig,
    num_classes: int,
    round_index: int,
    task: str,
    class_names: list[str],
    last_path: Path,
    device: str,
    *,
    dist_info: DistInfo,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
    init_from: Path | None = None,
) -> SegmentationModel:
    """Train one round's model on ``dataset``, resuming from ``last_path`` when it holds this round.

    ``init_from`` (a checkpoint, e.g. the previous round's) replaces the ImageNet start.
    """
    model = new_model(cfg, num_classes, round_index)
    if init_from is not None:
        model.load_state_dict(load_checkpoint(init_from)["model"])
    model = model.to(device)
    optimizer = make_optimizer(model, cfg)
    average = weight_average(model, cfg.ema_decay)
    start_epoch = 0
    if last_path.exists():
        state = load_checkpoint(last_path)
        if state.get("round") == round_index:
            # With an average, "model" holds the average (what inference uses) and "trained" the SGD weights.
            model.load_state_dict(state.get("trained", state["model"]))
            if average is not None:
                average.module.load_state_dict(state["model"])
                average.n_averaged.fill_(state["averaged_steps"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = state["epoch"] + 1
            log.info("round %d: resuming after epoch %d from %s", round_index, state["epoch"] + 1, last_path)
    use_amp = cfg.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    per_rank_batch = max(cfg.batch_size // dist_info.world, 1)
    total_steps = steps_per_epoch(len(dataset), cfg, dist_info.world) * cfg.epochs
    base_lrs = [cfg.lr, cfg.lr * cfg.head_lr_mult]  # not from the optimizer: a resumed one holds decayed rates
    step = start_epoch * steps_per_epoch(len(dataset), cfg, dist_info.world)
    for epoch in range(start_epoch, cfg.epochs):
        dataset.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + round_index * 1009 + epoch)  # dropout masks
        order = epoch_order(len(dataset), cfg.seed, round_index, epoch, dist_info.rank, dist_info.world)
        loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=order, num_workers=cfg.loader_workers)
        head_only = init_from is None and epoch < cfg.head_only_epochs
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(not head_only)
        # Wrapped per epoch: DDP registers the parameters that need gradients when it is built.
        wrapped = DistributedDataParallel(model) if dist_info.world > 1 else model
        wrapped.train()
        if head_only:
            model.backbone.eval()
        elif cfg.freeze_bn:
            for module in model.backbone.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        bar = tqdm(
            loader,
            desc=f"round {round_index} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and dist_info.is_main),
            leave=False,
        )
        running = 0.0
        for batch_index, (pixels, target) in enumerate(bar):
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * (1 - step / total_steps) ** cfg.poly_power
            pixels, target = pixels.to(device), target.to(device)
            with torch.autocast("cuda", enabled=use_amp):
                logits = wrapped(pixels)
            loss = pixel_loss(logits.float(), target, kind=cfg.loss, gce_q=cfg.gce_q)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update_parameters(model)
            step += 1
            running += float(loss.detach())
            bar.set_postfix(loss=f"{running / (batch_index + 1):.3f}")
        if dist_info.is_main:
            extra = {}
            if average is not None:  # resuming needs the SGD weights and the average's step count too
                extra = {"trained": model.state_dict(), "averaged_steps": int(average.n_averaged)}
            save_checkpoint(
                make_checkpoint(
                    model if average is None else average.module,
                    task,
                    class_names,
                    cfg.resize,
                    optimizer=optimizer.state_dict(),
                    round=round_index,
                    epoch=epoch,
                    steps=step,
                    train_config=cfg.to_dict(),
                    loss=running / max(len(loader), 1),
                    **extra,
                ),
                last_path,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(True)
    final = model if average is None else average.module
    final.steps = step  # for reporting and for the distributed step-count test
    return final
