"""The ``c2f`` command: a thin click layer, one module per subcommand, over library functions."""

from __future__ import annotations

import click

from c2f import __version__

from .options import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="c2f")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """c2f: pixel-accurate segmentation models from image-level labels.

    \b
    Start with `c2f demo`, which runs the whole method on generated data.
    """
    setup_logging(verbose)


def _register() -> None:
    from . import demo, evaluate, export, masks, segment, serve, train

    for module in (demo, masks, train, evaluate, export, segment, serve):
        cli.add_command(module.command)


_register()


if __name__ == "__main__":  # python -m c2f.cli.main (used under torchrun)
    cli()
