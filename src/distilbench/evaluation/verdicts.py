"""The verdict of a comparison, from the test predictions the run saved (one file per model and seed):

- a 95 % bootstrap interval on every headline test metric (over test examples, and over seeds with --seeds);
- the trivial baselines of the training split, with the same metrics and intervals;
- every model against the reference on the same test examples: the difference in the primary metric with a paired
  bootstrap interval, McNemar's exact test (multiclass), and a non-inferiority verdict against --margin;
- a loud flag on any model (or seed) that does not beat the best trivial baseline significantly;
- the same per class (per label) and per text length, with every model against the reference on each slice
  (slices.py): a model within the margin overall can be far outside it on one class.

The statistics themselves are in stats.py; this module only gathers a run's predictions and words the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.calibration import BINS, apply_calibration, expected_calibration_error
from distilbench.evaluation.metrics import label_array, primary_metric
from distilbench.evaluation.slices import SliceSettings, slice_results
from distilbench.evaluation.stats import (
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
from distilbench.runs import RunDir, model_slug, read_json

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


@dataclass(frozen=True)
class VerdictOptions:
    """What the verdicts of a run need from its settings: the task, the reference model, the margin in points of
    the primary metric, bootstrap resamples, the seed of the resampling and the training seeds."""

    task: str
    reference: str
    margin: float = 1.0
    resamples: int = 1000
    seed: int = 42
    seeds: tuple[int, ...] = (42,)


def assess(
    rows: list[dict], options: VerdictOptions, run: RunDir, splits: dict[str, pd.DataFrame], label_names: list[str]
) -> dict:
    """Add `test_ci`, `learned_nothing`, (all but the reference) `vs_reference`, `calibration_error` (test ECE,
    raw and after the row's `calibration` where it has one) and `slices` (per class or label and per length
    bucket, slices.py) to every row, and `test_tuned_ci` (the threshold metrics at the thresholds
    tuned on validation) to multilabel rows that have them; return the run-level part: reference, margin, metric,
    the baselines and `slices` (the length buckets, and the slices outside the margin with their warnings)."""
    task, metric = options.task, primary_metric(options.task)
    labels = label_array(splits["test"], task, label_names)
    train_labels = label_array(splits["train"], task, label_names)
    baselines = trivial_baselines(task, train_labels, labels, label_names, **_bootstrap(options))
    best_baseline = baselines["best"][metric]
    baseline = _Baseline(
        best_baseline,
        baselines["baselines"][best_baseline]["description"],
        trivial_baseline_probs(task, train_labels, len(labels), label_names)[best_baseline],
    )
    probs = {row["model"]: _assess_row(row, options, run, labels, label_names, baseline) for row in rows}
    for row in rows:
        row["vs_reference"] = _against_reference(row, probs, options, labels, label_names)
        row["calibration_error"] = _calibration_error(row, task, labels, probs[row["model"]])
    texts = splits["test"]["text"].tolist() if "text" in splits["test"].columns else None
    settings = SliceSettings(options.reference, options.margin, options.resamples, CONFIDENCE, options.seed)
    per_model, slices = slice_results(task, labels, probs, label_names, settings, texts)
    for row in rows:
        row["slices"] = per_model[row["model"]]
    return {
        "reference": options.reference,
        "margin_points": options.margin,
        "metric": metric,
        "confidence": CONFIDENCE,
        "resamples": options.resamples,
        "seeds": list(options.seeds),
        "baselines": baselines,
        "slices": slices,
    }


@dataclass(frozen=True)
class _Baseline:
    """The best trivial baseline a model must beat: its name, its description and its test probabilities."""

    name: str
    description: str
    probs: np.ndarray


def _bootstrap(options: VerdictOptions) -> dict:
    return dict(resamples=options.resamples, confidence=CONFIDENCE, seed=options.seed)


def _assess_row(
    row: dict, options: VerdictOptions, run: RunDir, labels: np.ndarray, label_names: list[str], baseline: _Baseline
) -> list[np.ndarray]:
    """One model's intervals and learned-nothing checks (per seed, and at its tuned thresholds); returns its
    test probabilities, one array per seed."""
    task, metric = options.task, primary_metric(options.task)
    dirs = result_dirs(run, row)
    model_probs = [saved_probabilities(d, label_names) for d in dirs]
    thresholds = [saved_thresholds(d, label_names) for d in dirs] if task == "multilabel" else []
    seeds = [entry["seed"] for entry in row.get("seeds") or [{"seed": row.get("seed")}]]
    several = len(dirs) > 1

    def interval(m: str, at: list | None = None) -> dict:
        """m's interval for this model (over seeds with several), at per-seed thresholds or 0.5."""
        if several:
            return bootstrap_ci_over_seeds(
                task, labels, model_probs, label_names, m, thresholds=at, **_bootstrap(options)
            )
        return bootstrap_ci(
            task, labels, model_probs[0], label_names, m, thresholds=at[0] if at else None, **_bootstrap(options)
        )

    def check(seed, p, name: str, at=None) -> dict:
        return {
            "seed": seed,
            **learned_nothing(
                task,
                labels,
                p,
                baseline.probs,
                label_names,
                metric,
                ALPHA,
                model_name=name,
                baseline_name=baseline.description,
                resamples=options.resamples,
                seed=options.seed,
                thresholds=at,
            ),
        }

    row["test_ci"] = {m: interval(m) for m in HEADLINE_METRICS[task]}
    checks = [
        check(seed, p, f"{row['model']} (seed {seed})" if several else row["model"])
        for seed, p in zip(seeds, model_probs)
    ]
    row["learned_nothing"] = {
        "flag": any(c["learned_nothing"] for c in checks),
        "baseline": baseline.name,
        "checks": checks,
    }
    tuned = [(seed, p, t) for seed, p, t in zip(seeds, model_probs, thresholds) if t is not None]
    if tuned and len(tuned) == len(dirs):  # what the saved model predicts with (predict, serve)
        at = [t for _, _, t in tuned]
        row["test_tuned_ci"] = {m: interval(m, at) for m in HEADLINE_METRICS[task] if m in THRESHOLD_METRICS}
    if tuned:  # thresholds tuned on validation can undo a model (G-mean on a model that learned little)
        tuned_checks = [
            check(seed, p, f"{row['model']} at its tuned thresholds" + (f" (seed {seed})" if several else ""), t)
            for seed, p, t in tuned
        ]
        row["learned_nothing"]["tuned_thresholds_flag"] = any(c["learned_nothing"] for c in tuned_checks)
        row["learned_nothing"]["tuned_checks"] = tuned_checks
    return model_probs


def _calibration_error(row: dict, task: str, labels: np.ndarray, model_probs: list[np.ndarray]) -> dict:
    """The model's expected calibration error on the test split (mean over seeds), raw and, where the row holds a
    calibration fitted on validation (`calibration`, or one per seed in `seeds`), after it."""
    seeds = row.get("seeds") or [{}]
    calibrations = [entry.get("calibration") or row.get("calibration") for entry in seeds]
    if len(calibrations) != len(model_probs):
        calibrations = [row.get("calibration")] * len(model_probs)
    try:
        raw = [expected_calibration_error(task, labels, p) for p in model_probs]
        after = [
            expected_calibration_error(task, labels, apply_calibration(task, p, c))
            for p, c in zip(model_probs, calibrations)
            if c
        ]
    except DistilbenchError as exc:  # scores that are not probabilities: no ECE, and the verdicts go on
        return {"bins": BINS, "ece": None, "ece_calibrated": None, "note": str(exc)}
    return {
        "bins": BINS,
        "ece": round(float(np.mean(raw)), 4),
        "ece_calibrated": round(float(np.mean(after)), 4) if after and len(after) == len(raw) else None,
    }


def _against_reference(
    row: dict, probs: dict[str, list[np.ndarray]], options: VerdictOptions, labels: np.ndarray, label_names: list[str]
) -> dict | None:
    """The paired difference of a model against the reference, with McNemar per seed pair and the verdict."""
    if row["model"] == options.reference:
        return None
    task, metric = options.task, primary_metric(options.task)
    ref_probs, own = probs[options.reference], probs[row["model"]]
    if len(own) == 1 and len(ref_probs) == 1:
        difference = paired_difference(task, labels, ref_probs[0], own[0], label_names, metric, **_bootstrap(options))
    else:
        difference = paired_difference_over_seeds(
            task, labels, ref_probs, own, label_names, metric, **_bootstrap(options)
        )
        if task == "multiclass":  # McNemar per pair of seeds (the i-th seed of each)
            tests = [
                mcnemar_exact(a.argmax(axis=1) == labels, b.argmax(axis=1) == labels) for a, b in zip(ref_probs, own)
            ]
            difference["mcnemar_p_per_seed"] = [t["mcnemar_p"] for t in tests]
            difference["discordant_per_seed"] = [t["discordant"] for t in tests]
    decided = verdict(difference, options.margin)
    return {
        "reference": options.reference,
        **difference,
        **{
            k: decided[k]
            for k in ("verdict", "margin_points", "examples_needed", "more_examples", "seeds_needed", "message")
        },
    }


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
    return pd.DataFrame(
        [
            {
                "baseline": name,
                "what": entry["description"],
                **{m: interval_text(entry["metrics"][m]) for m in HEADLINE_METRICS[task]},
            }
            for name, entry in assessment["baselines"]["baselines"].items()
        ]
    )


def verdict_lines(rows: list[dict], assessment: dict) -> tuple[list[str], list[str]]:
    """(lines to print, warnings): each model's verdict against the reference (no lines when the reference is
    the only model), with a line more for a model that is not worse overall but worse than the margin on some
    slice (class, label or length bucket), and every model or seed that did not beat the best trivial baseline
    (or whose tuned thresholds do not)."""
    lines, warnings = [], []
    outside = (assessment.get("slices") or {}).get("outside_margin") or []
    if any(row.get("vs_reference") for row in rows):
        lines.append(
            f"verdicts against {assessment['reference']} (margin {assessment['margin_points']:g} points of "
            f"{assessment['metric']}, {assessment['confidence']:.0%} paired bootstrap intervals):"
        )
    for row in rows:
        difference = row.get("vs_reference")
        if difference is not None:
            extra = ""
            if difference.get("mcnemar_p") is not None:
                extra = f" (McNemar p = {difference['mcnemar_p']:.3g})"
            lines.append(f"  {row['model']}: {difference['verdict'].upper()}: {difference['message']}{extra}")
            mine = [item for item in outside if item["model"] == row["model"]]
            if mine and difference.get("verdict") != "worse":
                lines.append(_slice_line(row["model"], difference["verdict"], mine, assessment["margin_points"]))
        flags = row.get("learned_nothing") or {}
        for check in flags.get("checks", []):
            if check["learned_nothing"]:
                warnings.append(f"LEARNED NOTHING: {check['message']}")
        for check in flags.get("tuned_checks", []):
            if check["learned_nothing"]:
                warnings.append(f"TUNED THRESHOLDS NO BETTER THAN A TRIVIAL BASELINE: {check['message']}")
    return lines, warnings


SLICES_NAMED = 5  # slices named in a verdict line; the rest are counted


def _slice_line(model: str, overall: str, items: list[dict], margin: float) -> str:
    """'  student: within the margin overall, but worse than the margin on 1 slice: class health recall -3.1 points
    [-4.9, -1.2]'."""
    named = "; ".join(
        f"{i['kind']} {i['name']} {i['metric']} {i['difference_points']:+.1f} points "
        f"[{i['low']:+.1f}, {i['high']:+.1f}]"
        for i in items[:SLICES_NAMED]
    )
    more = f"; and {len(items) - SLICES_NAMED} more" if len(items) > SLICES_NAMED else ""
    status = "within the margin overall" if overall == "within" else f"{overall} overall"
    count = f"{len(items)} slice{'s' if len(items) > 1 else ''}"
    return f"  {model}: {status}, but worse than the {margin:g}-point margin on {count}: {named}{more}"
