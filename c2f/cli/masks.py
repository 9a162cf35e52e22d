"""``c2f masks``: the mask stage alone (coarse masks -> GrabCut -> label maps), cached and resumable."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from .options import (generator_name_option, generator_option, layout_option, progress_option, ray_option, ray_or_exit,
                      workers_type)


@click.command("masks")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True)
@layout_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@generator_name_option(
    "saliency",
    "Coarse masks: saliency, folder, box, ufs (student of a saliency teacher, trained here), "
    "cam (class activation maps of a classifier fine-tuned on the labels).",
)
@click.option("--generator-root", type=click.Path(exists=True, file_okay=False), default=None, help="Mask folder for the folder generator.")
@generator_option
@click.option("--grabcut/--no-grabcut", default=True, show_default=True)
@click.option("--grabcut-iterations", type=int, default=None,
              help="GrabCut iterations [default: c2f.MaskConfig's]")
@click.option("--crf/--no-crf", default=False, show_default=True)
@click.option("--ignore-band", type=int, default=0, show_default=True, help="Pixels of 255 (ignore) on each side of mask edges.")
@click.option("--workers", type=workers_type, default=1, show_default=True, help="Processes.")
@progress_option
@ray_option
def command(
    data: Path, layout: str, out: Path, generator: str, generator_root: str | None,
    generator_options: dict[str, Any] | None, grabcut: bool, grabcut_iterations: int | None, crf: bool, ignore_band: int,
    workers: int, progress: bool, ray_address: str | None,
) -> None:
    """Make training label maps from image-level labels; rerun to resume after a kill.

    Learned generators (ufs, cam) train once on the whole data set; their weights are cached in
    OUT/generators, so a rerun reuses them. With ground truth, the mask quality of each stage and
    of a whole-box baseline is printed and saved in OUT/report.json.

    \b
    Example:
      c2f masks --data photos/ --out runs/masks --workers 2
      c2f masks --data voc10-coseg/ --out runs/sal --generator folder   # the dataset's saliency maps
      c2f masks --data photos/ --out runs/ufs --generator ufs --generator-option epochs=20
      c2f masks --data /shared/photos --out /shared/runs/masks --ray auto   # images as Ray tasks
    """
    from c2f.data.layouts import load_dataset
    from c2f.masks import MaskConfig, mask_quality, run_mask_stage
    from c2f.masks.quality import box_baseline_quality

    if ray_address is not None:
        ray_or_exit()
    options = dict(generator_options or {})
    if generator_root:
        options["root"] = generator_root
    try:
        config = MaskConfig(generator=generator, generator_options=options, grabcut=grabcut, crf=crf,
                            ignore_band=ignore_band, workers=workers).updated(grabcut_iterations=grabcut_iterations)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    dataset = load_dataset(data, layout)
    with ExitStack() as stack:
        runner = None
        if ray_address is not None:  # each image a Ray task; journal, resume and summary stay here
            from c2f.distributed import connected
            from c2f.distributed.ray_masks import ray_runner

            runner = ray_runner(stack.enter_context(connected(ray_address, progress=progress)))
        result = run_mask_stage(dataset, out, config, progress=progress, runner=runner)
    report: dict[str, Any] = {"summary": result.summary}
    if dataset.has_ground_truth:
        refined_name = "+".join(["GrabCut"] * grabcut + ["CRF"] * crf) or "refined (= coarse)"
        rows = {"whole box": box_baseline_quality(dataset), f"coarse ({generator})": mask_quality(dataset, result, "coarse"),
                refined_name: mask_quality(dataset, result, "refined"), "labels": mask_quality(dataset, result, "labels")}
        report["quality"] = {"box_baseline": rows["whole box"], "coarse": rows[f"coarse ({generator})"],
                             "refined": rows[refined_name], "labels": rows["labels"], "refined_name": refined_name}
        width = max(map(len, rows))
        click.echo(f"{'masks':<{width}}  mIoU   fg Jaccard")
        for name, scores in rows.items():
            click.echo(f"{name:<{width}}  {scores['miou']:.3f}  {scores['fg_jaccard']:.3f}")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    counts = result.summary["counts"]
    click.echo(f"{counts['total']} images: {counts['done']} processed now, {counts['skipped_cached']} reused from "
               f"an earlier run, {counts['failed']} failed; {counts['labelled']} labelled, {counts['dropped']} dropped")
    click.echo(f"labels in {out / 'labels'}; summary in {out / 'summary.json'}")
