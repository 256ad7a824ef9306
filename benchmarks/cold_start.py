"""Issue 39's cold-start target: `distilbench predict` on an exported bundle against `transformers.pipeline` on the
same checkpoint, whole processes, one text each.

    .venv/bin/python benchmarks/cold_start.py --checkpoint runs/demo/models/minilm-l6/best [--rounds 5]
        [--runtime-venv DIR]   # (a) in the runtime-only install: benchmarks/runtime_env.py --venv DIR makes it

The bundle is made once beforehand (`distilbench export --model CHECKPOINT --out BUNDLE`; an existing BUNDLE with a
model.onnx is reused). Each round then starts two fresh processes, in alternating order (bundle first in even
rounds, pipeline first in odd ones) so drift hits both alike, and times each from start to exit:
  (a) `distilbench predict --model BUNDLE --input - --no-progress` with the text on stdin, JSON lines on stdout;
      run through a two-line wrapper around distilbench's entry point that reports, at exit, whether torch was
      imported (the runtime path for bundles must not import it); with --runtime-venv, in that environment
      (`pip install distilbench` without extras: no torch, transformers, scikit-learn or pyarrow there at all),
      else in this one;
  (b) `python -c "from transformers import pipeline; p = pipeline('text-classification', model=CHECKPOINT);
      print(p(TEXT))"`.
One untimed warm-up round first (--warmup), so both start from the same warm file cache. Reports each kind's wall
time (median, min, max over --rounds), the ratio of the medians (b)/(a) (the target is >= 10x), the labels both
gave, and whether (a) imported torch. Results: benchmarks/results/cold_start.json (rendered by render.py's
`cold-start` block).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PREDICT_WRAPPER,
    ROOT,
    command_line,
    export_bundle,
    results_dir,
    runtime_python,
    shown_path,
    smoke_checkpoint,
    smoke_dir,
    torch_imported,
    write_result,
)
from common import parser as common_parser  # noqa: E402

TEXT = "Bank shares rise as quarterly profits beat forecasts"
DEFAULT_BUNDLE = ROOT / "runs" / "cold-start" / "bundle"


def bundle_command(bundle: Path, python: str = sys.executable) -> list[str]:
    """(a): distilbench predict on the bundle, one text from stdin, JSON lines on stdout, run by `python`."""
    predict = ["predict", "--model", str(bundle), "--input", "-", "--no-progress"]
    return [python, "-c", PREDICT_WRAPPER, *predict]


def pipeline_command(checkpoint: Path, text: str) -> list[str]:
    """(b): transformers.pipeline loading the checkpoint and classifying the text."""
    code = (
        "from transformers import pipeline; "
        f"p = pipeline('text-classification', model={str(checkpoint)!r}); print(p({text!r}))"
    )
    return [sys.executable, "-c", code]


def run_timed(command: list[str], stdin: str | None) -> tuple[float, subprocess.CompletedProcess]:
    """Runs a whole process; returns its wall time (start to exit) and the finished process. Fails on a non-zero
    exit with what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} ... exited {done.returncode}:\n{done.stderr[-2000:]}")
    return wall, done


def bundle_label(done: subprocess.CompletedProcess) -> tuple[str, bool]:
    """The label (a) predicted and whether it imported torch (from the wrapper's line on stderr)."""
    record = json.loads(done.stdout.strip().splitlines()[-1])
    imported = torch_imported(done.stderr)
    if imported is None:
        raise SystemExit(f"the predict wrapper did not report torch's import:\n{done.stderr[-2000:]}")
    return record["label"], imported


def pipeline_label(done: subprocess.CompletedProcess) -> str:
    """The label (b) printed (`[{'label': ..., 'score': ...}]`)."""
    import ast

    return ast.literal_eval(done.stdout.strip().splitlines()[-1])[0]["label"]


def measure(checkpoint: Path, bundle: Path, text: str, rounds: int, warmup: int, python: str) -> dict:
    """`warmup` untimed rounds, then `rounds` rounds of both kinds in alternating order; walls and labels."""
    kinds = {"bundle": bundle_command(bundle, python), "pipeline": pipeline_command(checkpoint, text)}
    walls: dict[str, list[float]] = {"bundle": [], "pipeline": []}
    labels: dict[str, set] = {"bundle": set(), "pipeline": set()}
    torch_imported = []
    for round_ in range(warmup + rounds):
        order = ["bundle", "pipeline"] if round_ % 2 == 0 else ["pipeline", "bundle"]
        for kind in order:
            wall, done = run_timed(kinds[kind], text + "\n" if kind == "bundle" else None)
            if kind == "bundle":
                label, imported = bundle_label(done)
                torch_imported.append(imported)
            else:
                label = pipeline_label(done)
            labels[kind].add(label)
            if round_ >= warmup:
                walls[kind].append(wall)
            print(f"round {round_ - warmup + 1 if round_ >= warmup else 'warm-up'}: {kind} {wall:.2f} s ({label})")
    return {"walls": walls, "labels": {k: sorted(v) for k, v in labels.items()}, "torch_imported": any(torch_imported)}


def as_given(path: Path) -> str:
    """A path as the user named it (links such as `best` kept), relative to the repository where it lies inside."""
    path = Path(path)
    absolute = path if path.is_absolute() else ROOT / path
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else str(path)


def summary(walls: list[float]) -> dict:
    """Median, min and max of a kind's wall times, with every value."""
    return {"median": statistics.median(walls), "min": min(walls), "max": max(walls), "values": walls}


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--checkpoint", help="fine-tuned checkpoint directory (RUN/models/<model>/best); required")
    parser.add_argument(
        "--bundle",
        help=f"the exported bundle (made from --checkpoint unless it holds a model.onnx; default: "
        f"{shown_path(DEFAULT_BUNDLE)})",
    )
    parser.add_argument("--text", default=TEXT, help="the one text both classify (default: %(default)r)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, one process of each kind (5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (1)")
    parser.add_argument(
        "--runtime-venv",
        help="run (a) with this environment's python: the runtime-only install (make it with "
        "benchmarks/runtime_env.py --venv DIR); default: this interpreter",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        checkpoint, bundle = smoke_checkpoint(), smoke_dir() / "cold-start-bundle"
        args.rounds, args.warmup = 2, 0
    elif not args.checkpoint:
        parser.error("--checkpoint is required (e.g. runs/demo/models/minilm-l6/best, made by `make demo`)")
    else:
        checkpoint, bundle = Path(args.checkpoint), Path(args.bundle) if args.bundle else DEFAULT_BUNDLE
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"{checkpoint} is not a checkpoint directory (no config.json): pass --checkpoint")
    exported_now = export_bundle(checkpoint, bundle)
    python = runtime_python(args.runtime_venv)
    found = measure(checkpoint, bundle, args.text, args.rounds, args.warmup, python)
    bundle_wall, pipeline_wall = summary(found["walls"]["bundle"]), summary(found["walls"]["pipeline"])
    report = {
        "checkpoint": as_given(checkpoint),
        "checkpoint_resolved": shown_path(checkpoint),  # `best` is a link to the best epoch
        "bundle": as_given(bundle),
        "bundle_exported_by_this_run": exported_now,
        # where (a) ran: the runtime-only install (pip install distilbench, no extras) or this full environment
        "bundle_environment": "runtime-only install" if args.runtime_venv else "full install (.venv)",
        "text": args.text,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "bundle_predict_s": bundle_wall,
        "pipeline_s": pipeline_wall,
        "ratio": pipeline_wall["median"] / bundle_wall["median"],
        "labels": found["labels"],
        "bundle_imported_torch": found["torch_imported"],
        "commands": {
            "bundle": "distilbench predict --model BUNDLE --input - --no-progress (text on stdin)",
            "pipeline": "python -c \"from transformers import pipeline; p = pipeline('text-classification', "
            'model=CHECKPOINT); print(p(TEXT))"',
        },
    }
    path = write_result(results_dir(args.smoke) / "cold_start.json", report, command=command_line())
    print(
        f"bundle {bundle_wall['median']:.2f} s, pipeline {pipeline_wall['median']:.2f} s (medians of {args.rounds}): "
        f"{report['ratio']:.1f}x; torch imported by the bundle's process: {found['torch_imported']}"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
