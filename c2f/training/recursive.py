"""The paper's recursive refinement: mask stage, then rounds of train -> predict -> clean -> retrain.

Run folder layout (every step's artifacts on disk, so any step can be inspected or rerun)::

    OUT/config.yaml            the full TrainConfig
    OUT/skipped_images.json    images (train or val split) left out because they or their masks are unreadable
    OUT/mask_stage/            coarse, GrabCut-refined and label maps of the mask stage (+ summary.json)
    OUT/round_K/labels/        round K's training labels (round 1 uses OUT/mask_stage/labels)
    OUT/round_K/label_stats.json, metrics.json, checkpoint.pt, overlays/*.png
    OUT/round_K/fold_F/last.pt with relabel_folds > 1: the model that relabels fold F's images
    OUT/last.pt                the newest epoch's state, for --resume
    OUT/metrics.json, rounds.png   per-round summary and plot
    OUT/masks/                 the deliverable: the last model's cleaned relabelling of every training
                               image (labels/ label PNGs, masks/ 0/255 foreground PNGs, dropped.json,
                               quality.json when ground truth exists, summary.json written last)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2f.checkpoint import load_checkpoint, save_checkpoint
from c2f.data.datasets import LabelledDataset, check_images
from c2f.evaluation import (
    evaluate_engine, format_table, label_statistics, plot_rounds, score_label_maps, write_overlays,
)
from c2f.inference import Engine, ModelInfo, TorchBackend
from c2f.masks.stage import mask_quality, run_mask_stage

from .config import TrainConfig
from .distributed import DistInfo, barrier, init_distributed, resolve_device
from .samples import LabelMapDataset, Pair
from .relabel import RelabelResult, relabel, relabel_fold
from .trainer import train_round

log = logging.getLogger(__name__)

MASK_STAGE_DIR = "mask_stage"  # the coarse masks, their GrabCut refinement and round 1's labels
MASKS_DIR = "masks"  # the deliverable: the last model's cleaned masks of the training images


@dataclass
class RunResult:
    """What a finished run produced: per-round metrics and the final checkpoint."""

    out_dir: Path
    rounds: list[dict] = field(default_factory=list)
    mask_stage: dict = field(default_factory=dict)
    final_checkpoint: Path | None = None
    masks: dict = field(default_factory=dict)  # summary of OUT/masks, the deliverable


def train_recursive(
    cfg: TrainConfig | None,
    train_set: LabelledDataset,
    out_dir: str | Path,
    val_set: LabelledDataset | None = None,
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run the whole method; with ``resume`` finished rounds are kept and the current one continues.

    A resumed run trains with the settings it was started with (``OUT/config.yaml``): ``cfg=None``
    reads them, and a ``cfg`` that differs from them in anything but where the run executes
    (:data:`EXECUTION_FIELDS`) is refused, since finished rounds cannot be retrained with it.
    """
    out = Path(out_dir)
    stored = out / "config.yaml"
    if stored.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) or choose another folder")
    cfg = resumed_config(cfg, stored) if resume and stored.exists() else cfg
    if cfg is None:
        raise ValueError(f"{out} holds no run to resume (no config.yaml): pass a TrainConfig")
    dist_info = init_distributed(resolve_device(cfg.device, DistInfo()))
    device = resolve_device(cfg.device, dist_info)
    barrier(dist_info)  # every rank has looked before rank 0 writes the config
    if cfg.task == "foreground":
        train_set = train_set.to_foreground()
        val_set = val_set.to_foreground() if val_set is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if dist_info.is_main:
        cfg.save(stored)
    train_set, val_set = _readable(train_set, val_set, out if dist_info.is_main else None)
    result = RunResult(out)
    # The mask stage journals each image as it finishes; under DDP each rank takes its share of the
    # images (a journal per rank) and every rank returns the merged result.
    stage = run_mask_stage(
        train_set,
        out / MASK_STAGE_DIR,
        cfg.masks,
        progress=progress and dist_info.is_main,
        shard=(dist_info.rank, dist_info.world),
        barrier=lambda: barrier(dist_info),
    )
    result.mask_stage = stage.summary
    labels = _existing_labels(train_set, out / MASK_STAGE_DIR / "labels")
    run = _Run(cfg, train_set, out, device, dist_info, progress)
    for round_index in range(1, cfg.rounds + 1):
        round_dir = out / f"round_{round_index}"
        metrics_path = round_dir / "metrics.json"
        if resume and metrics_path.exists() and (round_dir / "checkpoint.pt").exists():
            result.rounds.append(json.loads(metrics_path.read_text()))
            labels = _existing_labels(train_set, out / f"round_{round_index + 1}" / "labels") or labels
            log.info("round %d already complete, skipped", round_index)
            continue
        metrics, engine = _run_round(run, val_set, labels, round_index)
        result.rounds.append(metrics)
        if round_index < cfg.rounds:
            next_dir = out / f"round_{round_index + 1}" / "labels"
            engines = [engine]
            if cfg.relabel_folds > 1:
                engines, metrics["relabel_fold_steps"] = _fold_engines(run, labels, round_index)
            if engine is not None:
                relabelled = _relabel(run, engines, next_dir.parent,
                                      agree_with=labels if run.cfg.round_consensus else None)
                metrics["next_labels"] = (label_statistics(train_set, relabelled.labels)
                                          | {"objectness_fallback": len(relabelled.objectness_fallback)})
            barrier(dist_info)
            relabelled = _existing_labels(train_set, next_dir)
            if relabelled:
                labels = relabelled
            else:  # every prediction fell outside [masks.min_fg, masks.max_fg]: keep training on what we had
                log.warning("round %d dropped every image; round %d reuses round %d's labels",
                            round_index, round_index + 1, round_index)
        if dist_info.is_main:
            # Written last: --resume skips a round only once its relabelling has finished too.
            metrics_path.write_text(json.dumps(metrics, indent=2))
            print(_summary_line(metrics), flush=True)
    result.final_checkpoint = out / f"round_{cfg.rounds}" / "checkpoint.pt"
    if dist_info.is_main and cfg.write_masks:
        result.masks = write_final_masks(run, result.final_checkpoint)
    if dist_info.is_main:
        summary = {"mask_stage": _mask_stage_scores(train_set, out), "rounds": result.rounds}
        notes = list(dict.fromkeys(train_set.notes + (val_set.notes if val_set is not None else [])))
        if notes:  # what loading the data left out (empty class folders, unread images), as logged
            summary["data_warnings"] = notes
        if result.masks:
            summary["masks"] = result.masks
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        plot_rounds(summary, out / "rounds.png")
    return result


# Where and how fast a run executes, not what it trains: a resumed run may change these.
EXECUTION_FIELDS = ("device", "loader_workers", "amp", "masks.workers")


def resumed_config(cfg: TrainConfig | None, stored: Path) -> TrainConfig:
    """The settings a resumed run continues with: the stored ones, or ``cfg`` if it only moves the run."""
    started = TrainConfig.from_file(stored)
    if cfg is None:
        return started

    def trained(config: TrainConfig) -> dict[str, Any]:
        fields = config.to_dict()
        fields |= {f"masks.{name}": value for name, value in fields.pop("masks").items()}
        return {name: value for name, value in fields.items() if name not in EXECUTION_FIELDS}

    before, now = trained(started), trained(cfg)
    changed = [f"{name} {before[name]!r} -> {now[name]!r}" for name in before if before[name] != now[name]]
    if changed:
        raise ValueError(f"{stored.parent} was started with other settings ({'; '.join(changed)}): "
                         "resume it with its own (config.yaml) or start a new run")
    return cfg


SKIPPED_IMAGES = "skipped_images.json"  # the images (of either split) left out as unreadable


def _readable(
    train_set: LabelledDataset, val_set: LabelledDataset | None, out: Path | None
) -> tuple[LabelledDataset, LabelledDataset | None]:
    """Both splits without the images whose file or ground-truth mask cannot be read.

    Checked before the first round: otherwise a corrupt val image ends the run only once round 1
    has trained. The skipped ones are listed with their split in ``out/skipped_images.json``
    (written only when ``out`` is given, i.e. on the main rank; a stale list is removed).
    """
    train_set, bad = check_images(train_set)
    skipped = [{"split": "train", "path": path, "reason": reason} for path, reason in bad]
    if val_set is not None:
        val_set, bad = check_images(val_set)
        skipped += [{"split": "val", "path": path, "reason": reason} for path, reason in bad]
    if out is not None and skipped:
        (out / SKIPPED_IMAGES).write_text(json.dumps(skipped, indent=2))
        log.warning("skipped %d unreadable images (listed in %s); fix or remove them to use them",
                    len(skipped), out / SKIPPED_IMAGES)
    elif out is not None:
        (out / SKIPPED_IMAGES).unlink(missing_ok=True)
    return train_set, val_set


@dataclass(frozen=True)
class _Run:
    """What every step of a run shares: settings, training images, run folder, device, rank."""

    cfg: TrainConfig
    train_set: LabelledDataset
    out: Path
    device: str
    dist_info: DistInfo
    progress: bool

    def train(self, pairs: list[Pair], round_index: int, last_path: Path, init_from: Path | None):
        """Train (or resume from ``last_path``) one model of round ``round_index`` on ``pairs``."""
        cfg = self.cfg
        return train_round(
            LabelMapDataset(pairs, cfg.resize, cfg.crop, cfg.flip, cfg.seed, round_index),
            cfg,
            self.train_set.num_classes,
            round_index,
            cfg.task,
            self.train_set.class_names,
            last_path,
            self.device,
            dist_info=self.dist_info,
            progress=self.progress,
            init_from=init_from if cfg.warm_start and round_index > 1 else None,
        )

    def engine(self, model) -> Engine:
        info = ModelInfo(self.cfg.task, list(self.train_set.class_names), self.cfg.resize, model.config.to_dict())
        return Engine(TorchBackend(model, info, self.device), batch_size=max(self.cfg.batch_size, 1))


def _run_round(
    run: _Run, val_set: LabelledDataset | None, labels: dict[str, Path], round_index: int
) -> tuple[dict, Engine | None]:
    """Train and score one round; the engine over its model is returned on the main rank only."""
    out, train_set = run.out, run.train_set
    round_dir = out / f"round_{round_index}"
    pairs = _pairs(train_set, labels)
    if not pairs:
        raise RuntimeError(f"round {round_index}: no training labels left (all images dropped?)")
    stats = label_statistics(train_set, labels)
    if run.dist_info.is_main:
        round_dir.mkdir(parents=True, exist_ok=True)
        (round_dir / "label_stats.json").write_text(json.dumps(stats, indent=2))
    model = run.train(pairs, round_index, out / "last.pt", out / f"round_{round_index - 1}" / "checkpoint.pt")
    metrics: dict = {"round": round_index, "train_images": len(pairs), "steps": model.steps, "labels": stats}
    if not run.dist_info.is_main:
        return metrics, None
    # The round's checkpoint is its last epoch's full state (weights, optimizer, config, position).
    save_checkpoint(load_checkpoint(out / "last.pt"), round_dir / "checkpoint.pt")
    engine = run.engine(model)
    if train_set.has_ground_truth:
        metrics["train_labels_quality"] = score_label_maps(train_set, labels)
    if val_set is not None and val_set.has_ground_truth:
        metrics["val"] = evaluate_engine(engine, val_set, progress=run.progress)
        write_overlays(engine, val_set, round_dir / "overlays")
    return metrics, engine


def _pairs(train_set: LabelledDataset, labels: dict[str, Path], skip_fold: int | None = None,
           folds: int = 1) -> list[Pair]:
    """Training pairs of the labelled images, leaving out one relabelling fold when asked."""
    return [Pair(s.key, s.image, labels[s.key]) for s in train_set.samples
            if s.key in labels and (skip_fold is None or relabel_fold(s.key, folds) != skip_fold)]


def _fold_engines(run: _Run, labels: dict[str, Path], round_index: int) -> tuple[list[Engine | None], list[int]]:
    """Cross-fitted relabelling models: model F is trained without fold F's images, then labels them.

    A round's model predicting its own training images partly recites the labels it was trained
    on, so a wrong label (a low-contrast object whose coarse mask caught the background) comes back
    as confident as a right one and grows round after round. A model that never saw the image
    cannot recite it. With ``warm_start`` fold F starts from the previous round's fold-F model,
    which never saw those images either. Each fold's ``last.pt`` makes it resumable like a round.
    Returns the engines (None off the main rank) and each fold model's optimizer steps.
    """
    engines: list[Engine | None] = []
    steps: list[int] = []
    folds = run.cfg.relabel_folds
    for fold in range(folds):
        model = run.train(_pairs(run.train_set, labels, fold, folds), round_index,
                          run.out / f"round_{round_index}" / f"fold_{fold}" / "last.pt",
                          run.out / f"round_{round_index - 1}" / f"fold_{fold}" / "last.pt")
        engines.append(run.engine(model) if run.dist_info.is_main else None)
        steps.append(model.steps)
    return engines, steps


def _relabel(run: _Run, engines: list[Engine], folder: Path, *, write_masks: bool = False,
             agree_with: dict[str, Path] | None = None) -> RelabelResult:
    """:func:`~c2f.training.relabel.relabel` with this run's settings, into ``folder`` (labels/ ...)."""
    masks = run.cfg.masks
    return relabel(engines, run.train_set, folder, grabcut=run.cfg.round_grabcut,
                   grabcut_iterations=masks.grabcut_iterations, grabcut_max_side=masks.grabcut_max_side,
                   min_fg=masks.min_fg, max_fg=masks.max_fg, ignore_band=masks.ignore_band, agree_with=agree_with,
                   disagreement=run.cfg.round_disagreement, workers=masks.workers, write_masks=write_masks,
                   progress=run.progress)


def write_final_masks(run: _Run, checkpoint: Path) -> dict:
    """The deliverable: the last model's cleaned relabelling of every training image in OUT/masks/.

    Exactly the relabelling that would start another round (own classes only, GrabCut, the
    foreground-share filter), written as label PNGs (``labels/``) and 0/255 foreground masks
    (``masks/``); images the filter drops are listed with the reason in ``dropped.json``. With
    ground truth, ``quality.json`` scores the masks. ``summary.json`` is written last, so a resumed
    run redoes the folder only when it is incomplete or came from another checkpoint.
    """
    folder = run.out / MASKS_DIR
    summary_path = folder / "summary.json"
    made_by = checkpoint.relative_to(run.out).as_posix()
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("checkpoint") == made_by:
            return summary
    for stale in ("summary.json", "quality.json", "quality.txt"):
        (folder / stale).unlink(missing_ok=True)
    engine = Engine.open(checkpoint, run.device, batch_size=max(run.cfg.batch_size, 1))
    relabelled = _relabel(run, [engine], folder, write_masks=True)
    labels, rescued = relabelled.labels, len(relabelled.objectness_fallback)
    summary = {"checkpoint": made_by, "images": len(run.train_set.samples),
               "masks": len(labels), "dropped": len(run.train_set.samples) - len(labels),
               "objectness_fallback": rescued}
    if run.train_set.has_ground_truth and labels:  # nothing kept: nothing to score
        quality = score_label_maps(run.train_set, labels)
        (folder / "quality.json").write_text(json.dumps(quality, indent=2))
        (folder / "quality.txt").write_text(format_table(quality) + "\n")
        summary["quality"] = {"miou": quality["miou"], "fg_jaccard": quality["fg_jaccard"]}
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def _existing_labels(dataset: LabelledDataset, folder: Path) -> dict[str, Path]:
    found = {}
    for sample in dataset.samples:
        path = folder / f"{sample.key}.png"
        if path.exists():
            found[sample.key] = path
    return found


def _mask_stage_scores(dataset: LabelledDataset, out: Path) -> dict:
    """Quality of the coarse and GrabCut masks on the training images (the paper's Table I rows)."""
    if not dataset.has_ground_truth:
        return {}
    return {stage: mask_quality(dataset, out / MASK_STAGE_DIR, stage) for stage in ("coarse", "refined")}


def _summary_line(metrics: dict) -> str:
    parts = [f"round {metrics['round']}: {metrics['train_images']} images, {metrics['steps']} steps"]
    if "train_labels_quality" in metrics:
        parts.append(f"train-label mIoU {metrics['train_labels_quality']['miou']:.3f}")
    if "val" in metrics:
        parts.append(f"val mIoU {metrics['val']['miou']:.3f}, fg Jaccard {metrics['val']['fg_jaccard']:.3f}")
    return " | ".join(parts)
