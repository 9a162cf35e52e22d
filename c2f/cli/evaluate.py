"""``c2f evaluate``: mIoU, per-class IoU, pixel accuracy and foreground Jaccard of a model."""

from __future__ import annotations

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
    from c2f.evaluation import (
        ClassMismatchError, KnownLabelsError, NoRoundsError, default_out, evaluate_models, evaluate_run, format_table,
    )

    if (model_path is None) == (run_dir is None):
        raise click.UsageError("give exactly one of --model or --run")
    dataset = load_dataset(data, layout)
    out = out or default_out(model_path=model_path, run_dir=run_dir)

    def report(name: str, metrics: dict, path: Path) -> None:
        click.echo(f"\n{name} ({metrics['images']} images)\n{format_table(metrics)}")
        _warn_skipped(metrics, path)

    options = dict(
        open_engine=lambda path: open_engine(path, device=device, threads=threads, batch_size=batch_size,
                                             keep_aspect=keep_aspect),
        crf=crf, compare_crf=compare_crf, grabcut=grabcut, known_labels=known_labels, progress=progress,
        on_report=report,
    )
    try:
        if run_dir:
            evaluate_run(run_dir, dataset, out, **options)
            click.echo(f"\nper-round plot: {out / 'rounds.png'}")
        else:
            evaluate_models([model_path], [model_path.stem], dataset, out, **options)
    except (NoRoundsError, ClassMismatchError) as error:
        raise click.ClickException(str(error)) from None
    except KnownLabelsError as error:
        raise click.UsageError(str(error)) from None


def _warn_skipped(metrics: dict, report: Path) -> None:
    """One line on stderr when unreadable images (or ground-truth masks) were left out of the score."""
    skipped = metrics.get("skipped_images", [])
    if skipped:
        click.echo(f"warning: skipped {len(skipped)} unreadable image(s) or mask(s), e.g. {skipped[0]['path']} "
                   f"({skipped[0]['reason']}); all listed under skipped_images in {report}: fix or remove them "
                   "to score every image", err=True)
