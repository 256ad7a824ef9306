"""Cascades with a guarantee: tfidf answers what it is sure of, minilm-l6 the rest, on both thesis tasks.

    .venv/bin/python benchmarks/cascade.py [--tasks multiclass,multilabel] [--runs runs/benchmarks/ladder]

Reads the runs of benchmarks/ladder.py (run first; the same --runs) and for each task builds the cascade
tfidf -> minilm-l6 with `distilbench cascade`: the threshold chosen on the run's validation split (about 3,000
headlines that neither model trained on) so that, with 95 % confidence, it loses at most 0.5 points of the
primary metric against minilm-l6 alone (`--objective cost`), and once more for the best validation metric
(`--objective accuracy`, no guarantee). Reported on the run's test split: the share of rows tfidf answered, the
cascade's metric against minilm-l6's with a paired 95 % interval, whether the guarantee held, the throughput of
both (rows/s, median of 3 rounds) and, for the guaranteed cascade, whole `distilbench predict` processes on the
test texts with the cascade and with minilm-l6 alone (median of 3, alternating): once with the run's checkpoints,
once deployed (minilm-l6 exported with `--quantize auto`, the cascade built on that bundle; no torch). The curve
(share, metric and p-value against the threshold) is kept for the plot. Results:
benchmarks/results/cascade.{json,md}; the issue's targets: tfidf answers >= 85 % of the headlines, the cascade
within 0.5 points, predict >= 5x faster.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, TOXIC_LABELS, results_dir, smoke_dir, write_result  # noqa: E402
from common import parser as common_parser

ROUNDS = 3


def cascade_of(run: Path, objective: str, out: Path) -> dict:
    """`distilbench cascade` of the run's tfidf and its reference model, as the Python API gives it."""
    import distilbench as db

    comparison = json.loads((run / "comparison.json").read_text())
    big = comparison["rows"][0]["checkpoint"]
    small = next(row["checkpoint"] for row in comparison["rows"] if row["model"] == "tfidf")
    result = db.cascade(small, big, out=out, max_loss=0.5, confidence=0.95, objective=objective, overwrite=True)
    return {"objective": objective, "small": small, "big": big, "dir": str(out), **summary(result)}


def summary(result: dict) -> dict:
    """The numbers the table shows of a cascade's result (cascade.json)."""
    test, speed = result["test"], result.get("speed") or {}
    return {"test": test, "speed": speed, "curve": result["choice"]}


def predict_seconds(model: str, texts_file: Path, out: Path) -> float:
    """Wall seconds of a whole `distilbench predict` process on the texts."""
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "distilbench",
            "predict",
            "--model",
            model,
            "--input",
            str(texts_file),
            "--output",
            str(out),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def whole_process(cascade_dir: str, big: str, run: Path, work: Path) -> dict:
    """`distilbench predict` with the cascade and with the big model alone on the test texts, alternating."""
    import pandas as pd

    texts_file = work / "test-texts.csv"
    pd.read_csv(run / "data" / "test.csv")[["text"]].to_csv(texts_file, index=False)
    times = {"cascade": [], "big": []}
    for _ in range(ROUNDS):
        times["cascade"].append(predict_seconds(cascade_dir, texts_file, work / "cascade.jsonl"))
        times["big"].append(predict_seconds(big, texts_file, work / "big.jsonl"))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"rounds": ROUNDS, "seconds": times, "median_s": medians, "ratio": medians["big"] / medians["cascade"]}


def bundle_cascade(task: str, run: Path, cost: dict, work: Path) -> dict:
    """The deployed form: minilm-l6 exported as a bundle (`--quantize auto`: the fastest backend auto finds that a
    bundle can hold), the cascade of tfidf and that bundle chosen on the same validation rows, and whole predict
    processes of both, neither importing torch."""
    import distilbench as db

    bundle = work / f"{task}-big-bundle"
    if not (bundle / "export.json").is_file():
        db.export(cost["big"], bundle, quantize="auto")
    labels = {"label_column": "label"} if task == "multiclass" else {"label_columns": TOXIC_LABELS}
    out = work / f"{task}-bundle-cascade"
    splits = {"data": run / "data" / "val.csv", "test_data": run / "data" / "test.csv"}
    result = db.cascade(cost["small"], bundle, out=out, overwrite=True, **splits, **labels)
    backend = json.loads((bundle / "export.json").read_text()).get("backend")
    predict = whole_process(str(out), str(bundle), run, work)
    return {"bundle": str(bundle), "backend": backend, **summary(result), "predict": predict}


def run_task(task: str, runs: Path, work: Path) -> dict:
    run = runs / task
    if not (run / "comparison.json").is_file():
        raise SystemExit(f"no ladder run at {run}: run benchmarks/ladder.py --runs {runs} first")
    cost = cascade_of(run, "cost", work / f"{task}-cost")
    accuracy = cascade_of(run, "accuracy", work / f"{task}-accuracy")
    return {
        "run": str(run),
        "cost": cost,
        "accuracy": accuracy,
        "predict": whole_process(cost["dir"], cost["big"], run, work),
        "bundles": bundle_cascade(task, run, cost, work),
    }


def markdown(report: dict) -> str:
    lines = ["# Cascades tfidf -> minilm-l6", ""]
    for task, result in report["tasks"].items():
        lines += [
            f"## {task}",
            "",
            "| objective | tfidf answers | cascade | big alone | difference, points [95% CI] "
            "| guarantee | rows/s cascade / big |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("cost", "accuracy"):
            entry = result[name]
            test, speed = entry["test"], entry["speed"]
            low, high = test["interval_points"]
            metrics = f"{test['cascade_metric']:.4f} | {test['big_metric']:.4f}"
            lines.append(
                f"| {name} | {100 * test['shares'][0]:.1f} % | {metrics} | "
                f"{test['difference_points']:+.2f} [{low:+.2f}, {high:+.2f}] | "
                f"{'held' if test.get('guarantee_held') else 'not held' if name == 'cost' else 'none asked'} | "
                f"{speed.get('cascade_rows_per_s', 0):.0f} / {speed.get('big_rows_per_s', 0):.0f} |"
            )
        for name, predict in (("checkpoints", result["predict"]), ("bundles", result["bundles"]["predict"])):
            lines.append(
                f"\n`distilbench predict` on the test texts with {name}, whole process (median of "
                f"{predict['rounds']}): cascade {predict['median_s']['cascade']:.2f} s, minilm-l6 alone "
                f"{predict['median_s']['big']:.2f} s, {predict['ratio']:.1f}x"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--tasks", default="multiclass,multilabel", help="comma-separated: multiclass, multilabel")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks" / "ladder"), help="the ladder runs")
    args = parser.parse_args(argv)
    if args.smoke:
        import ladder

        ladder.main(["--smoke"])
        args.runs, args.tasks = str(smoke_dir() / "ladder"), "multiclass"
        global ROUNDS
        ROUNDS = 1
    work = Path(args.runs) / "cascades"
    work.mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    report = {"tasks": {task: run_task(task, Path(args.runs), work) for task in tasks}}
    path = write_result(results_dir(args.smoke) / "cascade.json", report, markdown(report))
    print(markdown(report))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
