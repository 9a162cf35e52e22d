"""``c2f segment``: segment a folder tree of images with an ONNX model or a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import model_options, progress_option, refine_options


@click.command("segment")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help=".onnx export or .pt checkpoint.")
@click.option(
    "--format", "formats", multiple=True, default=("label",), show_default=True,
    type=click.Choice(["label", "mask", "cutout", "overlay"]), help="Outputs per image (repeatable).",
)
@click.option("--include", multiple=True, default=("*",), show_default=True, help="Glob of files to take (repeatable).")
@click.option("--exclude", multiple=True, default=(), help="Glob of files to leave out (repeatable).")
@click.option("--workers", type=int, default=2, show_default=True, help="Threads decoding and writing images.")
@refine_options
@model_options
@progress_option
def command(
    input_dir: Path, out_dir: Path, model: Path, formats: tuple[str, ...], include: tuple[str, ...],
    exclude: tuple[str, ...], workers: int, crf: bool, grabcut: bool, batch_size: int, keep_aspect: bool, device: str, threads: int | None,
    progress: bool,
) -> None:
    """Segment every image under INPUT_DIR, mirroring the tree into --out.

    Already segmented images are skipped, so an interrupted run continues where it stopped; unreadable
    files are listed in OUT/report.json and skipped.

    \b
    Example:
      c2f segment photos/ -o masks/ --model model.onnx --format label --format overlay --crf
    """
    from c2f.inference import Engine
    from c2f.inference.folder import segment_folder

    engine = Engine.open(model, device=device, threads=threads, batch_size=batch_size, keep_aspect=keep_aspect)
    report = segment_folder(engine, input_dir, out_dir, formats, include, exclude, crf, grabcut, progress, workers)
    click.echo(json.dumps(report.to_dict() | {"failed": len(report.failed)}))
    for path, reason in report.failed:
        click.echo(f"skipped {path}: {reason}", err=True)
