"""The README's demo (`make demo`): runs it, keeps what it prints, with the stamp, in benchmarks/results/demo.json.

    .venv/bin/python benchmarks/demo.py      # 10-20 min on 2 CPU cores; then benchmarks/render.py

Runs `distilbench compare --config configs/demo.yaml --out runs/demo --overwrite` (the built-in BBC News data,
minilm-l6 against its 3-layer student) in this process and stores its printed table. `benchmarks/render.py`
puts that output into the README's `demo` block, so the README shows what the current version prints.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, command_line, parser, results_dir, smoke_data, smoke_dir, smoke_model, write_result  # noqa: E402

DEMO = ["compare", "--config", "configs/demo.yaml", "--out", "runs/demo", "--overwrite"]


def smoke_command() -> list[str]:
    """The demo's command on the smoke model and rows: one epoch, one model, no speed measurement."""
    return [
        "compare",
        "--data",
        str(smoke_data("multiclass")),
        "--label-column",
        "category",
        "--models",
        str(smoke_model()),
        "--epochs",
        "1",
        "--no-speed",
        "--no-progress",
        "--resamples",
        "100",
        "--out",
        str(smoke_dir() / "demo-run"),
        "--overwrite",
    ]


def run_demo(command: list[str]) -> tuple[str, float]:
    """Runs a distilbench command in this process; returns what it printed and its wall time."""
    from distilbench.cli import main as distilbench_main

    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        try:
            distilbench_main(command)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                sys.stdout.write(printed.getvalue())
                raise
    return printed.getvalue(), time.perf_counter() - start


def printed_table(output: str) -> str:
    """The part of compare's output that the README shows: the table, the baselines and the verdicts (from the
    table's header line to the line naming the results file)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split()[:1] == ["model"]), 0)
    end = next((i for i, line in enumerate(lines) if line.startswith("results:")), len(lines))
    return "\n".join(lines[start:end]).strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    command = smoke_command() if args.smoke else DEMO
    if not args.smoke:
        os.chdir(ROOT)  # the demo's config and run directory are relative to the repository
    output, wall = run_demo(command)
    report = {
        "config": "configs/demo.yaml" if not args.smoke else "smoke",
        "output": printed_table(output),
        "wall_s": wall,
    }
    shown = "distilbench " + " ".join(DEMO) if not args.smoke else command_line(argv and [sys.argv[0], *argv])
    path = write_result(results_dir(args.smoke) / "demo.json", report, command=shown)
    print(output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
