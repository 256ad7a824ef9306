"""Per-label decision thresholds tuned on validation by each criterion, scored on the test split.

    .venv/bin/python benchmarks/threshold_criteria.py [--runs runs/benchmarks] [--markdown]

A measurement on predictions that already exist: the multilabel runs of `benchmarks/verdicts.py` (toxic
comments, `minilm-l6` and its student, seeds 42-44; each setting's run under runs/benchmarks/verdicts-multilabel*/)
saved every model's validation and test probabilities (`results/<model>/seed-N/{val,test}_predictions.csv`).
For each, the thresholds are tuned on the validation probabilities by each of distilbench's criteria
(`metrics.tune_thresholds`: calibrated, gmean, f1) and applied to the test probabilities; 0.5 is the untuned
control. Nothing is trained or run through a model; a few seconds.

Results: benchmarks/results/threshold_criteria.{json,md}, with the machine.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, parser, results_dir, write_result  # noqa: E402

CRITERIA = ("0.5", "calibrated", "gmean", "f1")
METRICS = ("hamming_score", "f1_micro", "f1_macro")


def read_predictions(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(path, keep_default_na=False)
    labels = np.array([[float(n in str(t).split("|")) for n in names] for t in frame["true"]])
    return labels, frame[[f"prob_{n}" for n in names]].to_numpy(dtype=float)


def measure(run: Path) -> dict:
    """{model: {criterion: {seed: test metrics}}} for one run directory."""
    from distilbench.evaluation.metrics import compute_metrics, tune_thresholds

    names = json.loads((run / "data" / "summary.json").read_text())["label_names"]
    found = {}
    for seed_dir in sorted(run.glob("results/*/seed-*")):
        model = seed_dir.parent.name
        val_labels, val_probs = read_predictions(seed_dir / "val_predictions.csv", names)
        test_labels, test_probs = read_predictions(seed_dir / "test_predictions.csv", names)
        for criterion in CRITERIA:
            thresholds = 0.5 if criterion == "0.5" else tune_thresholds(val_labels, val_probs, criterion)
            metrics = compute_metrics("multilabel", test_labels, test_probs, names, thresholds)
            found.setdefault(model, {}).setdefault(criterion, {})[seed_dir.name] = {m: metrics[m] for m in METRICS}
    return found


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores; saved predictions of benchmarks/verdicts.py "
        f"(toxic comments, validation 501 / test 1,251 comments, seeds 42-44); {report['wall_s']:.0f} s.",
        "",
        "Test metrics, mean over seeds (min-max), at thresholds tuned on validation by each criterion:",
        "",
        "| run (settings) | model | thresholds | " + " | ".join(METRICS) + " |",
        "|" + " --- |" * (3 + len(METRICS)),
    ]
    for run, models in report["runs"].items():
        for model, criteria in models.items():
            for criterion, seeds in criteria.items():
                cells = [
                    f"{statistics.fmean(s[m] for s in seeds.values()):.4f} "
                    f"({min(s[m] for s in seeds.values()):.4f}-{max(s[m] for s in seeds.values()):.4f})"
                    for m in METRICS
                ]
                lines.append(f"| {run} | {model} | {criterion} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__)
    args_parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks"))
    args_parser.add_argument("--markdown", action="store_true", help="only write the table again from the JSON")
    args = args_parser.parse_args(argv)
    if args.smoke:  # the predictions of verdicts.py's smoke run
        from verdicts import smoke_runs

        args.runs = str(smoke_runs())
    path = results_dir(args.smoke) / "threshold_criteria.json"
    if args.markdown:
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return 0

    from distilbench.runtime.machine import machine_info

    started = time.perf_counter()
    runs = sorted(p for p in Path(args.runs).glob("verdicts-multilabel*") if (p / "data" / "summary.json").is_file())
    report = {"machine": machine_info(), "runs": {run.name: measure(run) for run in runs}}
    report["wall_s"] = time.perf_counter() - started
    write_result(path, report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
