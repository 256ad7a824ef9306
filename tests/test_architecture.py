"""The shape of the code, checked: imports point down the stages, and no function is longer than a screen.

The layers, from the bottom (docs/architecture.md): a module may import its own package and the layers below it,
never one above, so a deployed model never imports training code and nothing imports the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "distilbench"
LAYERS = [
    {"core"},
    {"runs"},
    {"data"},
    {"models"},
    {"evaluation"},
    {"runtime"},
    {"config"},
    {"training", "benchmarking"},
    {"reporting"},
    {"serving"},
    {"experiments"},
    {"api", "__init__"},
    {"cli", "__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
MAX_FUNCTION_LINES = 80
IMPORT = re.compile(r"^\s*from distilbench(?:\.(\w+))?[.\w]* import (\w+)", re.M)


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_every_stage_is_in_a_layer():
    units = {_unit(path) for path in PACKAGE.rglob("*.py")} - {"py"}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to LAYERS here and in docs/architecture.md"


def test_imports_point_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        here = _unit(path)
        for match in IMPORT.finditer(path.read_text(encoding="utf-8")):
            target = match.group(1) or match.group(2)
            if target not in RANK or target == here:
                continue  # `from distilbench import __version__`, or the module's own package
            if RANK[target] > RANK[here]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not upward, "imports must point down the layers:\n" + "\n".join(sorted(upward))


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into named steps:\n" + "\n".join(sorted(long))
