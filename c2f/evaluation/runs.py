"""Scoring saved models: one model file, or every round of a training run.

A run folder holds one ``round_<n>/checkpoint.pt`` per recursive round (see
:mod:`c2f.training.recursive`); this module is the one place that reads that layout for evaluation.
Each model gets ``<name>.json`` and ``<name>_confusion.png`` in the output folder; a run also gets
``rounds.json`` and ``rounds.png`` (mIoU per round).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from c2f.data.datasets import LabelledDataset
from c2f.inference import Engine

from .plots import plot_rounds, write_report
from .scoring import evaluate_engine

ROUND_CHECKPOINTS = "round_*/checkpoint.pt"

OpenEngine = Callable[[Path], Engine]
Report = Callable[[str, dict, Path], None]
"""Called after each scored model with its report name, its metrics and the JSON it was written to."""


class ClassMismatchError(ValueError):
    """The model's classes are not the data's: its scores would mean nothing."""


class NoRoundsError(FileNotFoundError):
    """A run folder without any round checkpoint."""


class KnownLabelsError(ValueError):
    """``known_labels`` asked of a foreground model, which has no classes to restrict to."""


def round_number(checkpoint: Path) -> int:
    """The round of ``round_<n>/checkpoint.pt``."""
    return int(checkpoint.parent.name[len("round_"):])


def round_checkpoints(run_dir: Path) -> list[Path]:
    """A run's round checkpoints in round order (round_10 after round_9)."""
    return sorted(Path(run_dir).glob(ROUND_CHECKPOINTS), key=round_number)


def default_out(model_path: Path | None = None, run_dir: Path | None = None) -> Path:
    """Where reports go unless told: ``<run>/evaluation``, or ``evaluation`` beside the model file."""
    if run_dir is not None:
        return Path(run_dir) / "evaluation"
    return Path(model_path).with_suffix("").parent / "evaluation"


def check_classes(model_classes: list[str], data_classes: list[str], model: Path) -> None:
    """Refuse to score a semantic model on data with another number of classes, naming both lists.

    (A foreground model is scored on the data's foreground, which always has its two classes.)
    """
    if len(model_classes) != len(data_classes):
        raise ClassMismatchError(
            f"the model {model} has {len(model_classes)} classes ({_shown(model_classes)}) but the data has "
            f"{len(data_classes)} ({_shown(data_classes)}); evaluate it on data labelled with the model's classes"
        )


def _shown(names: list[str], limit: int = 8) -> str:
    """The first ``limit`` names, then how many more."""
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def evaluate_models(
    models: Sequence[Path],
    names: Sequence[str],
    dataset: LabelledDataset,
    out: Path,
    *,
    open_engine: OpenEngine = Engine.open,
    crf: bool = False,
    compare_crf: bool = False,
    grabcut: bool = False,
    known_labels: bool = False,
    progress: bool = True,
    on_report: Report | None = None,
) -> list[dict]:
    """Score each model (a foreground model on the data's foreground) and write its report.

    With ``compare_crf`` each model is scored without and with the CRF (reports ``<name>`` and
    ``<name>_crf``), otherwise with ``crf`` as given. Returns one ``{"round", "val"}`` entry per model,
    ``val`` being its scores without the CRF when both were made.
    """
    rounds: list[dict] = []
    for path, name in zip(models, names):
        engine = open_engine(path)
        view = dataset.to_foreground() if engine.info.task == "foreground" else dataset
        check_classes(engine.info.class_names, view.class_names, path)
        if known_labels and engine.info.task == "foreground":
            raise KnownLabelsError("--known-labels applies to semantic models; a foreground model has no classes")
        for use_crf in [False, True] if compare_crf else [crf]:
            metrics = evaluate_engine(engine, view, crf=use_crf, grabcut=grabcut, progress=progress,
                                      known_labels=known_labels)
            report = f"{name}_crf" if use_crf else name
            write_report(metrics, out, report)
            if on_report is not None:
                on_report(report, metrics, out / f"{report}.json")
            if not use_crf or not compare_crf:
                rounds.append({"round": len(rounds) + 1, "val": metrics})
    return rounds


def evaluate_run(run_dir: Path, dataset: LabelledDataset, out: Path | None = None, **options) -> dict:
    """Score every round's checkpoint of a run; writes ``rounds.json`` and ``rounds.png`` beside the reports.

    ``options`` are :func:`evaluate_models`' keywords. Returns the summary ``{"rounds": [...]}``.
    Raises :class:`NoRoundsError` when the folder has no round checkpoint.
    """
    models = round_checkpoints(run_dir)
    if not models:
        raise NoRoundsError(f"no {ROUND_CHECKPOINTS} under {run_dir}")
    out = out or default_out(run_dir=run_dir)
    rounds = evaluate_models(models, [path.parent.name for path in models], dataset, out, **options)
    summary = {"rounds": rounds}
    (out / "rounds.json").write_text(json.dumps(summary, indent=2))
    plot_rounds(summary, out / "rounds.png")
    return summary
