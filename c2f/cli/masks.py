"""``c2f masks``: the mask stage alone (coarse masks -> GrabCut -> label maps), cached and resumable."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import layout_option, progress_option


@click.command("masks")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True)
@layout_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--generator", default="saliency", show_default=True, help="saliency, folder, box.")
@click.option("--generator-root", type=click.Path(exists=True, file_okay=False), default=None, help="Mask folder for the folder generator.")
@click.option("--grabcut/--no-grabcut", default=True, show_default=True)
@click.option("--grabcut-iterations", type=int, default=5, show_default=True)
@click.option("--crf/--no-crf", default=False, show_default=True)
@click.option("--ignore-band", type=int, default=0, show_default=True, help="Pixels of 255 (ignore) on each side of mask edges.")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes.")
@progress_option
def command(
    data: Path, layout: str, out: Path, generator: str, generator_root: str | None, grabcut: bool,
    grabcut_iterations: int, crf: bool, ignore_band: int, workers: int, progress: bool,
) -> None:
    """Make training label maps from image-level labels; rerun to resume after a kill.

    \b
    Example:
      c2f masks --data photos/ --out runs/masks --workers 2
      c2f masks --data voc10-coseg/ --out runs/sal --generator folder   # the dataset's saliency maps
    """
    from c2f.data.layouts import load_dataset
    from c2f.masks import mask_quality, run_mask_stage

    dataset = load_dataset(data, layout)
    options = {"root": generator_root} if generator_root else {}
    result = run_mask_stage(
        dataset, out, generator=generator, grabcut=grabcut, grabcut_iterations=grabcut_iterations, crf=crf,
        ignore_band=ignore_band, workers=workers, progress=progress, **options,
    )
    report = {"summary": result.summary}
    if dataset.has_ground_truth:
        report["quality"] = {stage: mask_quality(dataset, result, stage) for stage in ("coarse", "refined", "labels")}
        for stage, scores in report["quality"].items():
            click.echo(f"{stage:<8} mIoU {scores['miou']:.3f}  fg Jaccard {scores['fg_jaccard']:.3f}")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    click.echo(f"labels in {out / 'labels'}; summary in {out / 'summary.json'}")
