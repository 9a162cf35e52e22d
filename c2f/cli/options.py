"""Option decorators shared by several commands, so each option is defined (and documented) once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Callable

import click

Decorator = Callable[[Callable], Callable]


def _compose(*decorators: Decorator) -> Decorator:
    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where to run; auto picks CUDA when available.",
)
threads_option = click.option("--threads", type=int, default=None, help="CPU threads for the model (default: all).")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
layout_option = click.option(
    "--layout", default="auto", show_default=True,
    help="Dataset layout: auto, images-masks, images-masks-flat, class-folder, list-file, voc2012, oxford-pet, object-discovery.",
)


def parse_key_values(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs -> a dict; values are JSON when they parse (2, true, [1, 2]), else strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _parse_generator_options(_ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        return parse_key_values(pairs) or None
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


generator_option = click.option(
    "--generator-option", "generator_options", multiple=True, metavar="KEY=VALUE", callback=_parse_generator_options,
    help="Coarse mask generator option, repeatable; VALUE is parsed as JSON when it can be "
         "(e.g. epochs=10, teacher_options='{\"method\": \"adaptive\"}', fraction=0.6).",
)
refine_options = _compose(
    click.option("--crf/--no-crf", default=False, show_default=True, help="Sharpen predictions with a dense CRF."),
    click.option("--grabcut/--no-grabcut", default=False, show_default=True, help="Re-cut the predicted foreground with GrabCut."),
)
model_options = _compose(
    click.option("--batch-size", type=int, default=8, show_default=True, help="Images per model call."),
    click.option(
        "--keep-aspect/--square", default=False, show_default=True,
        help="Fit images into the model's square input without distortion (padding), or resize them to it as in training.",
    ),
    device_option,
    threads_option,
)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
