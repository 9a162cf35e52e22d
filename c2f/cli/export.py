"""``c2f export``: checkpoint -> ONNX with metadata and a printed parity check."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="ONNX file to write.")
@click.option(
    "--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Folder of real images for the parity check (default: generated test images).",
)
def command(checkpoint: Path, output: Path, images: Path | None) -> None:
    """Export a trained checkpoint to ONNX (dynamic batch, height and width; opset 17).

    \b
    Example:
      c2f export runs/voc/round_5/checkpoint.pt -o voc.onnx --images data/val
    """
    from c2f.data.io import IMAGE_EXTENSIONS, read_image
    from c2f.export import export_onnx

    samples = None
    if images is not None:
        files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:8]
        samples = [read_image(p) for p in files] or None
    parity = export_onnx(checkpoint, output, samples)
    click.echo(f"wrote {output}")
    click.echo(f"parity vs torch: {parity}")
