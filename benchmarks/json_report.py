"""How every benchmark hands over its figures: one JSON document on stdout, and the same in a file if asked."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], out: Path | None = None) -> None:
    """Print ``report`` as indented JSON; also write it to ``out`` (parent folders created) when given,
    and say so on stderr, where the scripts' progress goes."""
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr, flush=True)
    print(text, flush=True)
