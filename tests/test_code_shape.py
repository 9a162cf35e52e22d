"""Code-shape rules of the package, checked on its source."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "c2f"
MAX_POSITIONAL = 8


def _is_click_command(node: ast.FunctionDef) -> bool:
    """Decorated with click's command/option decorators: its parameters are the command's options."""
    return any("click" in ast.unparse(d) or ast.unparse(d).endswith(".command()") for d in node.decorator_list)


def test_no_function_takes_more_than_eight_positional_parameters():
    wide = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_click_command(node):
                positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(positional) > MAX_POSITIONAL:
                    wide.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({len(positional)})")
    assert not wide, "make these parameters keyword-only: " + ", ".join(wide)
