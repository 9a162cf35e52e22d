"""Option decorators shared by several commands, so each option is defined (and documented) once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

if TYPE_CHECKING:
    from c2f.inference import Engine

Decorator = Callable[[Callable], Callable]

# The names of c2f.data.layouts.LAYOUTS, spelt out so that the CLI imports without numpy and OpenCV;
# tests/test_cli_errors.py checks that the two agree.
LAYOUT_NAMES = ("images-masks", "images-masks-flat", "class-folder", "list-file", "voc2012", "oxford-pet",
                "object-discovery")


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
    "--layout", type=click.Choice(["auto", *LAYOUT_NAMES]), default="auto", show_default=True,
    help="Dataset layout (auto: detected from the folder).",
)
ray_option = click.option(
    "--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
    help="Run on a Ray cluster: ADDRESS (e.g. 10.0.0.5:6379 or auto), or a local one when none is given "
         "(put --ray after INPUT_DIR, or write --ray=ADDRESS). Needs pip install \"c2f[ray]\"; every node "
         "must see the model, input and output at the same paths.",
)
workers_type = click.IntRange(min=1)
"""``--workers``-like counts: at least one (0 would mean no one does the work)."""


def _check_generator(_ctx: click.Context, _param: click.Parameter, name: str | None) -> str | None:
    """Refuse an unknown coarse mask generator before any work, naming the valid ones.

    Not a ``click.Choice``: generators are a registry that plugins extend, read when the command runs.
    """
    if name is None:
        return None
    from c2f.masks.generators import generator_names

    valid = generator_names()
    if name not in valid:
        raise click.BadParameter(f"unknown generator {name!r}; valid: {', '.join(valid)}")
    return name


def generator_name_option(default: str | None, help_text: str) -> Decorator:
    """``--generator``, checked against the registered coarse mask generators when the command runs."""
    return click.option("--generator", default=default, show_default=default is not None, callback=_check_generator,
                        help=help_text)


def open_engine(model: Path, param_hint: str = "'--model'", **options: Any) -> "Engine":
    """``Engine.open`` with a wrong model file as a one-line usage error instead of a traceback."""
    from c2f.inference import Engine, ModelFileError

    try:
        return Engine.open(model, **options)
    except ModelFileError as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from None


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


def ray_or_exit() -> None:
    """Stop with a one-line error naming the extra when Ray is not installed."""
    from c2f.distributed import RayMissingError, require_ray

    try:
        require_ray()
    except RayMissingError as error:
        raise click.ClickException(str(error)) from None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
