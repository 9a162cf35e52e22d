"""``c2f train``: the mask stage, then recursive rounds of DeepLab (semantic) or FPN (foreground)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import click

from .options import (
    device_option,
    generator_name_option,
    generator_option,
    layout_option,
    progress_option,
    workers_type,
)

SPLIT_FILE = "split.json"  # in the run folder: how the data was split, so that --resume splits it alike
_OPTIONS = {"val_fraction": "--val-fraction", "seed": "--seed", "val_data": "--val-data"}  # field -> option


@click.command("train")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="Training images with image-level labels.")
@layout_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--task", type=click.Choice(["semantic", "foreground"]), default=None, help="[default: semantic]")
@click.option("--config", "config_file", default=None,
              help="A bundled recipe by name (cpu: sized for a CPU, see c2f/configs/cpu.yaml) or a YAML/TOML "
                   "file of TrainConfig fields (mask-stage settings under masks:); command-line options "
                   "override it.")
@click.option("--val-data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Images with ground-truth masks for per-round metrics; --resume reuses the run's own.")
@click.option("--val-fraction", type=float, default=None,
              help="Hold out this share of --data (it needs masks) for validation [default: 0]; --resume reuses "
                   "the run's own.")
@click.option("--rounds", type=int, default=None, help="[default: 5]")
@click.option("--epochs", type=int, default=None, help="Epochs per round [default: 10].")
@click.option("--batch-size", type=int, default=None, help="[default: 12]")
@click.option("--lr", type=float, default=None, help="Backbone learning rate; the head gets 10x [default: 2.5e-4].")
@click.option("--resize", type=int, default=None, help="[default: 321]")
@click.option("--crop", type=int, default=None, help="[default: 256]")
@click.option("--arch", type=click.Choice(["deeplab", "deeplab-lite", "fpn"]), default=None,
              help="Decoder: deeplab (the paper's), deeplab-lite (about a fifth of its cost, for CPUs) or fpn "
                   "[default: deeplab for semantic, fpn for foreground].")
@click.option("--head-only-epochs", type=int, default=None,
              help="Train only the decoder, on the frozen ImageNet backbone, for this many epochs of each round "
                   "that starts from ImageNet [default: 0].")
@click.option("--backbone", default=None, help="efficientnet-lite0 (default), resnet50, resnet101.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None, help="Backbone ImageNet weights file (ResNet).")
@generator_name_option(None, "Coarse mask generator: saliency (default), folder, box, ufs, cam.")
@click.option("--warm-start/--fresh-start", default=None,
              help="Start each round after the first from the previous round's weights, or from ImageNet [default: fresh].")
@click.option("--ema-decay", type=float, default=None,
              help="Use an exponential moving average of each round's weights, e.g. 0.99 [default: 0, off].")
@click.option("--relabel-folds", type=int, default=None,
              help="Relabel each image with a model trained without it, over this many folds [default: 1, off].")
@click.option("--loss", type=click.Choice(["ce", "gce"]), default=None,
              help="Pixel loss: ce (cross-entropy) or gce (generalised cross-entropy, robust to wrong labels; "
                   "for foreground: with many classes it can learn only background) [default: ce].")
@click.option("--gce-q", type=float, default=None,
              help="gce's exponent q in (0, 1]: towards 0 it is cross-entropy [default: 0.7].")
@generator_option
@click.option("--mask-workers", type=workers_type, default=None, help="Processes for the mask stage [default: 1].")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--resume", is_flag=True, help="Continue a killed run from its last checkpoint.")
@device_option
@progress_option
def command(
    data: Path, layout: str, out: Path, task: str | None, config_file: str | None, val_data: Path | None,
    val_fraction: float | None, resume: bool, device: str, progress: bool, **overrides,
) -> None:
    """Train from image-level labels: coarse masks -> GrabCut -> rounds of train, relabel, retrain.

    \b
    Examples:
      c2f train --data photos/ --out runs/photos --config cpu    # the CPU recipe
      c2f train --data photos/ --out runs/photos --rounds 5      # the paper's settings
      c2f train --task foreground --data horses/ --out runs/horse --config cpu-foreground
      c2f train --data photos/ --out runs/photos --generator ufs --generator-option generations=3
      c2f train --data photos/ --out runs/photos --resume        # after a kill
      torchrun --nproc-per-node 2 -m c2f.cli.main train --data photos/ --out runs/ddp
    """
    from c2f.data.datasets import split
    from c2f.data.layouts import load_dataset
    from c2f.training import TrainConfig, train_recursive

    if (out / "config.yaml").exists() and not resume:
        raise click.UsageError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    try:
        cfg = TrainConfig.from_recipe(config_file) if config_file else TrainConfig()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    if resume and (out / "config.yaml").exists() and config_file is None:
        cfg = TrainConfig.from_file(out / "config.yaml")
    given = SplitSettings(val_fraction, overrides["seed"], str(val_data.resolve()) if val_data else None)
    settings = _resolved_split(out / SPLIT_FILE, given, default_seed=cfg.seed, resume=resume)
    if resume and (out / SPLIT_FILE).exists():
        click.echo(f"resuming with the run's split: {settings.describe()}")
    # --generator, --generator-option and --mask-workers set fields of cfg.masks (MaskConfig).
    masks = {"generator": overrides.pop("generator"), "generator_options": overrides.pop("generator_options"),
             "workers": overrides.pop("mask_workers")}
    cfg = cfg.updated(task=task, device=device, masks=cfg.masks.updated(**masks), **overrides)
    train_set = load_dataset(data, layout)
    val_set = load_dataset(Path(settings.val_data), "auto") if settings.val_data else None
    if settings.val_fraction:
        train_set, val_set = split(train_set, settings.val_fraction, seed=settings.seed)
    if os.environ.get("RANK", "0") == "0":
        settings.save(out / SPLIT_FILE)
    result = train_recursive(cfg, train_set, out, val_set, resume=resume, progress=progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        click.echo(f"final checkpoint: {result.final_checkpoint}")
        if result.masks:
            quality = result.masks.get("quality")
            scored = f", mIoU {quality['miou']:.3f} against the ground truth" if quality else ""
            click.echo(f"masks of the training images: {out / 'masks'} ({result.masks['masks']} images, "
                       f"{result.masks['dropped']} dropped{scored})")


@dataclass(frozen=True)
class SplitSettings:
    """What decides a run's train/val split; ``None`` in a field means "not given"."""

    val_fraction: float | None = None
    seed: int | None = None
    val_data: str | None = None  # resolved path of --val-data

    @classmethod
    def load(cls, path: Path) -> "SplitSettings":
        """The settings a run stored in its ``split.json``."""
        stored = json.loads(path.read_text())
        return cls(float(stored["val_fraction"]), int(stored["seed"]), stored.get("val_data"))

    def describe(self) -> str:
        """The settings as the options that give them, for the line a resume prints."""
        fraction = f"{self.val_fraction} (seed {self.seed})" if self.val_fraction else "none"
        return f"--val-fraction {fraction}, --val-data {self.val_data or 'none'}"

    def save(self, path: Path) -> None:
        """Write atomically (every torchrun rank may read it), unless the same settings are there already."""
        text = json.dumps(dataclasses.asdict(self), indent=2) + "\n"
        if path.exists() and path.read_text() == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _resolved_split(path: Path, given: SplitSettings, *, default_seed: int, resume: bool) -> SplitSettings:
    """The split to train on: the one stored in the run when resuming, else the options given.

    Without this a resume that forgets --val-fraction trains on a different split, silently (the
    val images even become training images). A resume whose explicit options contradict the stored
    split is refused, naming the option and the stored value.
    """
    if not (resume and path.exists()):  # a new run, or one from before split.json was kept
        return SplitSettings(given.val_fraction or 0.0, default_seed if given.seed is None else given.seed,
                             given.val_data)
    stored = SplitSettings.load(path)
    for name, option in _OPTIONS.items():
        value, kept = getattr(given, name), getattr(stored, name)
        if value is not None and value != kept:
            raise click.UsageError(
                f"{option} {value} conflicts with this run's split "
                f"({option} {kept if kept is not None else 'none'}, stored in {path}); resume without {option} "
                "to keep the run's split, or train into a new --out")
    if stored.val_data and not Path(stored.val_data).exists():
        raise click.UsageError(f"this run's --val-data {stored.val_data} (stored in {path}) no longer exists; "
                               "restore it to resume, or train into a new --out")
    return stored
