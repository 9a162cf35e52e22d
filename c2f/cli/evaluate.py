"""``c2f evaluate``: mIoU, per-class IoU, pixel accuracy and foreground Jaccard of a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import layout_option, model_options, open_engine, progress_option, refine_options


@click.command("evaluate")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=".pt checkpoint or .onnx export.")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A run folder: evaluate every round's checkpoint and plot mIoU per round.")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="Images with ground-truth masks.")
@layout_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where to write JSON and PNGs.")
@click.option("--compare-crf", is_flag=True, help="Report with and without CRF.")
@click.option("--known-labels", is_flag=True,
              help="Restrict each prediction to its image's own labels (as c2f segment --labels-from does): "
                   "the score of label-aware segmentation.")
@refine_options
@model_options
@progress_option
def command(
    model_path: Path | None, run_dir: Path | None, data: Path, layout: str, out: Path | None, compare_crf: bool,
    known_labels: bool, crf: bool, grabcut: bool, batch_size: int, keep_aspect: bool, device: str, threads: int | None, progress: bool,
) -> None:
    """Score a model (or every round of a run) on a dataset with ground truth.

    \b
    Examples:
      c2f evaluate --model model.onnx --data voc_val/ --crf
      c2f evaluate --run runs/photos --data photos_val/ --out runs/photos/eval
      c2f evaluate --model model.onnx --data voc_val/ --known-labels --grabcut
    """
    from c2f.data.layouts import load_dataset
    from c2f.training.evaluate import evaluate_engine, format_table, plot_rounds, write_report

    if (model_path is None) == (run_dir is None):
        raise click.UsageError("give exactly one of --model or --run")
    dataset = load_dataset(data, layout)
    models = [model_path] if model_path else sorted(run_dir.glob("round_*/checkpoint.pt"), key=lambda p: int(p.parent.name[6:]))
    if not models:
        raise click.ClickException(f"no round_*/checkpoint.pt under {run_dir}")
    out = out or (run_dir / "evaluation" if run_dir else Path(model_path).with_suffix("").parent / "evaluation")
    rounds = []
    for path in models:
        engine = open_engine(path, device=device, threads=threads, batch_size=batch_size, keep_aspect=keep_aspect)
        view = dataset.to_foreground() if engine.info.task == "foreground" else dataset
        _check_classes(engine.info.class_names, view.class_names, path)
        if known_labels and engine.info.task == "foreground":
            raise click.UsageError("--known-labels applies to semantic models; a foreground model has no classes")
        settings = [False, True] if compare_crf else [crf]
        for use_crf in settings:
            metrics = evaluate_engine(engine, view, crf=use_crf, grabcut=grabcut, progress=progress,
                                      known_labels=known_labels)
            name = f"{path.parent.name if run_dir else path.stem}{'_crf' if use_crf else ''}"
            write_report(metrics, out, name)
            click.echo(f"\n{name} ({metrics['images']} images)\n{format_table(metrics)}")
            _warn_skipped(metrics, out / f"{name}.json")
            if not use_crf or not compare_crf:
                rounds.append({"round": len(rounds) + 1, "val": metrics})
    if run_dir:
        summary = {"rounds": rounds}
        (out / "rounds.json").write_text(json.dumps(summary, indent=2))
        plot_rounds(summary, out / "rounds.png")
        click.echo(f"\nper-round plot: {out / 'rounds.png'}")


def _warn_skipped(metrics: dict, report: Path) -> None:
    """One line on stderr when unreadable images (or ground-truth masks) were left out of the score."""
    skipped = metrics.get("skipped_images", [])
    if skipped:
        click.echo(f"warning: skipped {len(skipped)} unreadable image(s) or mask(s), e.g. {skipped[0]['path']} "
                   f"({skipped[0]['reason']}); all listed under skipped_images in {report}: fix or remove them "
                   "to score every image", err=True)


def _check_classes(model_classes: list[str], data_classes: list[str], model: Path) -> None:
    """Refuse to score a semantic model on data with another number of classes, naming both lists.

    (A foreground model is scored on the data's foreground, which always has its two classes.)
    """
    if len(model_classes) != len(data_classes):
        raise click.ClickException(
            f"the model {model} has {len(model_classes)} classes ({_shown(model_classes)}) but the data has "
            f"{len(data_classes)} ({_shown(data_classes)}); evaluate it on data labelled with the model's classes"
        )


def _shown(names: list[str], limit: int = 8) -> str:
    """The first ``limit`` names, then how many more."""
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
