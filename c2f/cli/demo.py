"""``c2f demo``: run the complete pipeline on generated data in a few minutes."""

from __future__ import annotations

from pathlib import Path

import click

from .options import progress_option


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("c2f-demo"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images-per-class", type=int, default=40, show_default=True)
@click.option("--epochs", type=int, default=None, help="Epochs per round (default 10).")
@progress_option
def command(out: Path, seed: int, images_per_class: int, epochs: int | None, progress: bool) -> None:
    """Generate a labelled data set and run coarse masks -> GrabCut -> 2 rounds -> ONNX -> segment.

    Rerunning with the same --out resumes and reuses what is done.

    \b
    Example:
      c2f demo --out c2f-demo
    """
    from c2f.demo import format_demo_table, run_demo

    results = run_demo(out, seed=seed, images_per_class=images_per_class, epochs=epochs, progress=progress)
    click.echo("\n" + format_demo_table(results))
    parity = results["onnx_parity"]
    click.echo(
        f"\nONNX parity: max |logit diff| {parity['max_abs_logit_diff']:.2e}, "
        f"argmax agreement {parity['argmax_agreement']:.4%}"
    )
    click.echo(f"segmented folder: {out / 'segmented'} ({results['segmented']['done']} images)")
    click.echo(f"all results: {out / 'demo_results.json'}  ({results['seconds']} s)")
