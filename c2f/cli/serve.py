"""``c2f serve``: a convenience over ``bentoml serve`` for the c2f service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click


@click.command("serve")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="ONNX export to serve.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--keep-aspect/--square", default=False, show_default=True,
              help="Pad images into the model's square input without distortion, or resize them to it as in training.")
def command(model: Path, host: str, port: int, keep_aspect: bool) -> None:
    """Serve a model over HTTP (/segment, /foreground, /metadata) with BentoML.

    \b
    Example:
      c2f serve --model model.onnx --port 3000
      curl -F image=@photo.jpg http://127.0.0.1:3000/segment -o mask.png
    """
    env = {**os.environ, "C2F_MODEL": str(model.resolve()), "C2F_KEEP_ASPECT": str(int(keep_aspect)),
           "BENTOML_DO_NOT_TRACK": "True"}
    args = [sys.executable, "-m", "bentoml", "serve", "c2f.serving.service:Segmenter", "--host", host, "--port", str(port)]
    raise SystemExit(subprocess.call(args, env=env))
