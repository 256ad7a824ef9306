"""The ladder: how much accuracy each step down costs and how much speed it buys, on both thesis tasks.

    .venv/bin/python benchmarks/ladder.py [--tasks multiclass,multilabel] [--runs runs/benchmarks/ladder]

For each task, one `distilbench compare` of minilm-l6 (fine-tuned, the reference), tfidf and static:minilm-l6 on
the shared file (news headlines: 2 epochs; toxic comments: the defaults), on the same splits (12 % test, and a
validation split of about 3,000 headlines, which `benchmarks/cascade.py` uses as its calibration rows), with the
throughput of every model measured by `bench`'s protocol in the same run (warm-up, 5 alternating rounds,
median). A stopped run is resumed. Results: benchmarks/results/ladder.{json,md}, with the issue's targets
(headlines: tfidf >= 0.905 accuracy at >= 100x the reference's throughput, static >= 0.89 at >= 50x; toxic
comments: tfidf hamming score >= 0.91 and macro ROC-AUC >= 0.96) checked on this split's test rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, TASKS, results_dir, smoke_dir, smoke_model, smoke_tasks, write_result  # noqa: E402
from common import parser as common_parser

MODELS = ["minilm-l6", "tfidf", "static:minilm-l6"]
SETTINGS = {
    "multiclass": dict(epochs=2, test_size=0.12, val_size=0.1364),
    "multilabel": dict(test_size=0.12, val_size=0.1364),
}
# the targets, on held-out rows: (model, metric) -> (least metric, least throughput ratio to the reference)
TARGETS = {
    "multiclass": {("tfidf", "accuracy"): (0.905, 100.0), ("static:minilm-l6", "accuracy"): (0.89, 50.0)},
    "multilabel": {("tfidf", "hamming_score"): (0.91, None), ("tfidf", "roc_auc_macro"): (0.96, None)},
}


def run_task(task: str, runs: Path, smoke: bool) -> dict:
    """compare of the ladder on one task (resumed where a run was stopped); its rows as the result keeps them."""
    import distilbench as db

    out = runs / task
    settings = dict(SETTINGS[task], progress=False)
    if smoke:
        settings.update(epochs=1, max_length=16, resamples=100, test_size=0.25, val_size=0.25)
    start = time.perf_counter()
    resume = (out / "config.yaml").is_file() and not (out / "comparison.json").is_file()
    if not (out / "comparison.json").is_file():
        db.compare(
            TASKS[task]["data"],
            task=task,
            models=MODELS,
            out=out,
            resume=resume,
            **{k: v for k, v in TASKS[task].items() if k != "data"},
            **settings,
        )
    comparison = json.loads((out / "comparison.json").read_text())
    return {
        "run": str(out),
        "wall_s": time.perf_counter() - start,
        "rows_per_split": comparison["rows_per_split"],
        "metric": comparison["primary_metric"],
        "rows": [ladder_row(row, comparison["rows"][0]) for row in comparison["rows"]],
        "targets": targets_met(task, comparison["rows"]),
    }


def ladder_row(row: dict, reference: dict) -> dict:
    """What the ladder table shows of a comparison row."""
    return {
        "model": row["model"],
        "method": row["method"],
        "params": row["params"],
        "size_mb": row["size_mb"],
        "train_time_s": row["train_time_s"],
        "test": row["test"],
        "test_ci": row.get("test_ci"),
        "vs_reference": row.get("vs_reference"),
        "throughput": row["throughput"],
        "throughput_ratio": row["throughput"]["median"] / reference["throughput"]["median"],
        "latency_ms": row.get("latency_ms"),
        "calibration_error": row.get("calibration_error"),
    }


def targets_met(task: str, rows: list[dict]) -> list[dict]:
    """Each target of the issue for this task, with the measured value and whether it is met."""
    by_model = {row["model"]: row for row in rows}
    reference = rows[0]["throughput"]["median"]
    checked = []
    for (model, metric), (least, speed) in TARGETS[task].items():
        if model not in by_model:
            continue
        value = by_model[model]["test"].get(metric)
        ratio = by_model[model]["throughput"]["median"] / reference
        met = value is not None and value >= least and (speed is None or ratio >= speed)
        checked.append(
            {
                "model": model,
                "metric": metric,
                "value": value,
                "least": least,
                "ratio": ratio,
                "least_ratio": speed,
                "met": bool(met),
            }
        )
    return checked


def markdown(report: dict) -> str:
    """The detailed view: one table per task."""
    parts = []
    for task, result in report["tasks"].items():
        metric = result["metric"]
        lines = [
            f"## {task}: {result['rows_per_split']}",
            "",
            f"| model | {metric} [95% CI] | vs reference, points [95% CI] | verdict | rows/s | vs reference | MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            ci = (row.get("test_ci") or {}).get(metric) or {}
            vs = row.get("vs_reference") or {}
            lines.append(
                f"| {row['model']} | {row['test'][metric]:.4f} [{ci.get('low', float('nan')):.4f}, "
                f"{ci.get('high', float('nan')):.4f}] | "
                + (f"{vs['difference_points']:+.2f} [{vs['low']:+.2f}, {vs['high']:+.2f}]" if vs else "—")
                + f" | {vs.get('verdict', 'reference')} | {row['throughput']['median']:.0f} | "
                f"{row['throughput_ratio']:.1f}x | {row['size_mb']:.1f} |"
            )
        for target in result["targets"]:
            speed = f" at >= {target['least_ratio']:.0f}x" if target["least_ratio"] else ""
            lines.append(
                f"\ntarget {target['model']} {target['metric']} >= {target['least']}{speed}: "
                f"{target['value']:.4f} at {target['ratio']:.1f}x, {'met' if target['met'] else 'NOT met'}"
            )
        parts.append("\n".join(lines))
    return "# The ladder\n\n" + "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--tasks", default="multiclass,multilabel", help="comma-separated: multiclass, multilabel")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks" / "ladder"), help="the runs' folder")
    args = parser.parse_args(argv)
    if args.smoke:
        TASKS.update(smoke_tasks())
        MODELS[:] = [str(smoke_model()), "tfidf", f"static:{smoke_model()}"]
        args.runs, args.tasks = str(smoke_dir() / "ladder"), "multiclass"
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    report = {"models": MODELS, "tasks": {task: run_task(task, Path(args.runs), args.smoke) for task in tasks}}
    path = write_result(results_dir(args.smoke) / "ladder.json", report, markdown(report))
    print(markdown(report))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
