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
@click.option("--fp16", is_flag=True, help="Also write OUTPUT-fp16.onnx (float16 weights, for GPUs) and its parity.")
def command(checkpoint: Path, output: Path, images: Path | None, fp16: bool) -> None:
    """Export a trained checkpoint to ONNX (dynamic batch, height and width; opset 17).

    \b
    Example:
      c2f export runs/voc/round_5/checkpoint.pt -o voc.onnx --images data/val
      c2f export runs/voc/round_5/checkpoint.pt -o voc.onnx --fp16   # + voc-fp16.onnx for GPUs

    int8 is not offered: static int8 quantisation of these models agreed with fp32 on only about 92%
    of pixels and was not faster on CPU (benchmarks/README.md).
    """
    from c2f.data.io import IMAGE_EXTENSIONS, read_image
    from c2f.export import export_fp16, export_onnx

    samples = None
    if images is not None:
        files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:8]
        samples = [read_image(p) for p in files] or None
    parity = export_onnx(checkpoint, output, samples)
    click.echo(f"wrote {output}")
    click.echo(f"parity vs torch: {parity}")
    if fp16:
        half = output.with_name(f"{output.stem}-fp16.onnx")
        click.echo(f"wrote {half}\nparity vs fp32 export: {export_fp16(output, half, samples)}")
