"""The verdict of a comparison, from the test predictions the run saved (one file per model and seed):

- a 95 % bootstrap interval on every headline test metric (over test examples, and over seeds with --seeds);
- the trivial baselines of the training split, with the same metrics and intervals;
- every model against the reference on the same test examples: the difference in the primary metric with a paired
  bootstrap interval, McNemar's exact test (multiclass), and a non-inferiority verdict against --margin;
- a loud flag on any model (or seed) that does not beat the best trivial baseline significantly.

The statistics themselves are in stats.py; this module only gathers a run's predictions and words the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import ExperimentConfig
from .metrics import label_array, primary_metric
from .runs import RunDir, model_slug, read_json
from .stats import (
    HEADLINE_METRICS,
    bootstrap_ci,
    bootstrap_ci_over_seeds,
    learned_nothing,
    mcnemar_exact,
    paired_difference,
    paired_difference_over_seeds,
    trivial_baseline_probs,
    trivial_baselines,
    verdict,
)

CONFIDENCE = 0.95
THRESHOLD_METRICS = ("hamming_score", "f1_micro", "f1_macro")  # those the decision thresholds change
ALPHA = 0.05  # one-sided level of "beats the best trivial baseline"


def result_dirs(run: RunDir, row: dict) -> list[Path]:
    """The results folder of each seed of a model: results/<model>/ for one seed, results/<model>/seed-<s>/ with
    several."""
    slug = model_slug(row["model"])
    if row.get("seeds"):
        return [run.results(f"{slug}/seed-{entry['seed']}") for entry in row["seeds"]]
    return [run.results(slug)]


def saved_probabilities(results: Path, label_names: list[str]) -> np.ndarray:
    """The test probabilities a model saved (results/.../test_predictions.csv, one prob_<label> column per label)."""
    frame = pd.read_csv(results / "test_predictions.csv", usecols=[f"prob_{name}" for name in label_names])
    return frame.to_numpy(dtype=float)


def saved_thresholds(results: Path, label_names: list[str]) -> np.ndarray | None:
    """The per-label thresholds tuned on validation that a multilabel model was tested with, if any."""
    stored = read_json(results / "test_stats.json").get("thresholds")
    return None if not stored else np.array([stored[name] for name in label_names], dtype=float)


def assess(rows: list[dict], config: ExperimentConfig, run: RunDir, splits: dict[str, pd.DataFrame],
           label_names: list[str]) -> dict:
    """Add `test_ci`, `learned_nothing` and (all but the reference) `vs_reference` to every row, and
    `test_tuned_ci` (the threshold metrics at the thresholds tuned on validation) to multilabel rows that have
    them; return the run-level part: reference, margin, metric and the baselines."""
    task, metric = config.task, primary_metric(config.task)
    labels = label_array(splits["test"], task, label_names)
    train_labels = label_array(splits["train"], task, label_names)
    options = dict(resamples=config.resamples, confidence=CONFIDENCE, seed=config.seed)
    baselines = trivial_baselines(task, train_labels, labels, label_names, **options)
    best_baseline = baselines["best"][metric]
    baseline_probs = trivial_baseline_probs(task, train_labels, len(labels), label_names)[best_baseline]
    baseline_text = baselines["baselines"][best_baseline]["description"]

    probs, thresholds = {}, {}
    for row in rows:
        dirs = result_dirs(run, row)
        probs[row["model"]] = [saved_probabilities(d, label_names) for d in dirs]
        thresholds[row["model"]] = [saved_thresholds(d, label_names) for d in dirs] if task == "multilabel" else []
        seeds = [entry["seed"] for entry in row.get("seeds") or [{"seed": row.get("seed")}]]
        several = len(dirs) > 1

        def interval(m: str, at: list | None = None, model_probs=probs[row["model"]]) -> dict:
            """m's interval for this model (over seeds with several), at per-seed thresholds or 0.5."""
            if several:
                return bootstrap_ci_over_seeds(task, labels, model_probs, label_names, m, thresholds=at, **options)
            first = at[0] if at else None
            return bootstrap_ci(task, labels, model_probs[0], label_names, m, thresholds=first, **options)

        row["test_ci"] = {m: interval(m) for m in HEADLINE_METRICS[task]}
        checks = []
        for seed, p in zip(seeds, probs[row["model"]]):
            name = f"{row['model']} (seed {seed})" if several else row["model"]
            check = learned_nothing(task, labels, p, baseline_probs, label_names, metric, ALPHA, model_name=name,
                                    baseline_name=baseline_text, resamples=config.resamples, seed=config.seed)
            checks.append({"seed": seed, **check})
        row["learned_nothing"] = {"flag": any(c["learned_nothing"] for c in checks), "baseline": best_baseline,
                                  "checks": checks}
        tuned = [(seed, p, t) for seed, p, t in zip(seeds, probs[row["model"]], thresholds[row["model"]])
                 if t is not None]
        if tuned and len(tuned) == len(dirs):  # what the saved model predicts with (predict, serve)
            at = [t for _, _, t in tuned]
            row["test_tuned_ci"] = {m: interval(m, at) for m in HEADLINE_METRICS[task] if m in THRESHOLD_METRICS}
        if tuned:  # thresholds tuned on validation can undo a model (G-mean on a model that learned little)
            tuned_checks = [{"seed": seed, **learned_nothing(
                task, labels, p, baseline_probs, label_names, metric, ALPHA,
                model_name=f"{row['model']} at its tuned thresholds" + (f" (seed {seed})" if several else ""),
                baseline_name=baseline_text, resamples=config.resamples, seed=config.seed, thresholds=t)}
                for seed, p, t in tuned]
            row["learned_nothing"]["tuned_thresholds_flag"] = any(c["learned_nothing"] for c in tuned_checks)
            row["learned_nothing"]["tuned_checks"] = tuned_checks

    reference = config.reference or config.models[0]
    ref_probs = probs[reference]
    for row in rows:
        if row["model"] == reference:
            row["vs_reference"] = None
            continue
        own = probs[row["model"]]
        if len(own) == 1 and len(ref_probs) == 1:
            difference = paired_difference(task, labels, ref_probs[0], own[0], label_names, metric, **options)
        else:
            difference = paired_difference_over_seeds(task, labels, ref_probs, own, label_names, metric, **options)
            if task == "multiclass":  # McNemar per pair of seeds (the i-th seed of each)
                tests = [mcnemar_exact(a.argmax(axis=1) == labels, b.argmax(axis=1) == labels)
                         for a, b in zip(ref_probs, own)]
                difference["mcnemar_p_per_seed"] = [t["mcnemar_p"] for t in tests]
                difference["discordant_per_seed"] = [t["discordant"] for t in tests]
        decided = verdict(difference, config.margin)
        row["vs_reference"] = {"reference": reference, **difference,
                               **{k: decided[k] for k in ("verdict", "margin_points", "examples_needed",
                                                          "more_examples", "seeds_needed", "message")}}
    return {"reference": reference, "margin_points": config.margin, "metric": metric, "confidence": CONFIDENCE,
            "resamples": config.resamples, "seeds": config.training_seeds(), "baselines": baselines}


def interval_text(ci: dict | None, digits: int = 4) -> str:
    """'0.9238 [0.9165, 0.9310]' (or the value alone where the interval is undefined)."""
    if not ci or ci.get("value") is None:
        return "n/a"
    value = f"{ci['value']:.{digits}f}"
    if ci.get("low") is None or ci.get("high") is None:
        return value
    return f"{value} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def difference_text(difference: dict | None) -> str:
    """'-0.80 [-1.31, -0.29]' points, or '(reference)'."""
    if difference is None:
        return "(reference)"
    if difference.get("difference_points") is None or difference.get("low") is None:
        return "n/a"
    return f"{difference['difference_points']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]"


def baseline_table(assessment: dict, task: str) -> pd.DataFrame:
    """The trivial baselines' headline metrics with their intervals, one row per baseline."""
    return pd.DataFrame([{"baseline": name, "what": entry["description"],
                          **{m: interval_text(entry["metrics"][m]) for m in HEADLINE_METRICS[task]}}
                         for name, entry in assessment["baselines"]["baselines"].items()])


def verdict_lines(rows: list[dict], assessment: dict) -> tuple[list[str], list[str]]:
    """(lines to print, warnings): each model's verdict against the reference (no lines when the reference is
    the only model), and every model or seed that did not beat the best trivial baseline (or whose tuned
    thresholds do not)."""
    lines, warnings = [], []
    if any(row.get("vs_reference") for row in rows):
        lines.append(f"verdicts against {assessment['reference']} (margin {assessment['margin_points']:g} points of "
                     f"{assessment['metric']}, {assessment['confidence']:.0%} paired bootstrap intervals):")
    for row in rows:
        difference = row.get("vs_reference")
        if difference is not None:
            extra = ""
            if difference.get("mcnemar_p") is not None:
                extra = f" (McNemar p = {difference['mcnemar_p']:.3g})"
            lines.append(f"  {row['model']}: {difference['verdict'].upper()}: {difference['message']}{extra}")
        flags = row.get("learned_nothing") or {}
        for check in flags.get("checks", []):
            if check["learned_nothing"]:
                warnings.append(f"LEARNED NOTHING: {check['message']}")
        for check in flags.get("tuned_checks", []):
            if check["learned_nothing"]:
                warnings.append(f"TUNED THRESHOLDS NO BETTER THAN A TRIVIAL BASELINE: {check['message']}")
    return lines, warnings
