"""``c2f serve``: a convenience over ``bentoml serve`` for the c2f service."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def _package_parent() -> Path:
    """The directory that holds this c2f package (a clone's root, or site-packages)."""
    import c2f

    return Path(c2f.__file__).resolve().parent.parent


@click.command("serve")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="ONNX export to serve.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--keep-aspect/--square", default=False, show_default=True,
              help="Pad images into the model's square input without distortion, or resize them to it as in training.")
def command(model: Path, host: str, port: int, keep_aspect: bool) -> None:
    """Serve a model over HTTP (/segment, /foreground, /metadata) with BentoML.

    SIGTERM, SIGINT (Ctrl+C) or SIGHUP stops the server and all its processes: it gets 5 s to
    stop on its own (finishing requests in flight), then whatever is left is killed.

    \b
    Example:
      c2f serve --model model.onnx --port 3000
      curl -F image=@photo.jpg http://127.0.0.1:3000/segment -o mask.png
    """
    from c2f.serving.process import run_supervised

    env = {**os.environ, "C2F_MODEL": str(model.resolve()), "C2F_KEEP_ASPECT": str(int(keep_aspect)),
           "BENTOML_DO_NOT_TRACK": "True"}
    # BentoML puts its working directory (default: the cwd) first on sys.path, in the server and in
    # every worker, so a folder named c2f in the cwd (e.g. the parent of a clone) would be imported
    # instead of this package. Serve from the directory that holds this package: there "c2f" is this
    # one. The cwd also becomes that directory, so `python -m` puts no other folder first either.
    root = _package_parent()
    args = [sys.executable, "-m", "bentoml", "serve", "c2f.serving.service:Segmenter", "--host", host,
            "--port", str(port), "--working-dir", str(root)]
    # Not `subprocess.call` (SIGTERM to this process left the server running) and not an exec into
    # `bentoml serve` (its workers run in their own sessions and a busy one delays the stop for as
    # long as its request takes): run_supervised forwards the stop and kills what is left after 5 s.
    # See c2f/serving/process.py.
    raise SystemExit(run_supervised(args, env=env, cwd=root, name="server"))
