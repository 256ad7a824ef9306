"""One ladder model (tfidf, static:<teacher>) in a comparison: trained on the run's training split, calibrated
and (multilabel) given thresholds on its validation split, tested on its test split, and written as the same
files a fine-tuned transformer leaves (val/test predictions, test_stats.json, row.json), so the verdicts, the
speed rounds and the report treat it like any other model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilbench.core.console import say
from distilbench.evaluation.calibration import fit_calibration
from distilbench.evaluation.metrics import (
    compute_metrics,
    label_array,
    primary_metric,
    summary_metrics,
    tune_thresholds,
)
from distilbench.experiments.evaluate import predictions_frame, tested_metrics
from distilbench.models.ladder import LadderSpec
from distilbench.runs import write_csv_atomic, write_json_atomic
from distilbench.runtime.light import load_text_model, model_size_mb, read_manifest, update_manifest
from distilbench.training.ladder import LadderData, LadderModel, train_ladder_model

if TYPE_CHECKING:
    import pandas as pd

    from distilbench.experiments.compare import ModelJob

TRAINED = "trained"  # the folder of a ladder model under models/<slug>/ (best points at it)


def run_ladder_model(job: ModelJob, spec: LadderSpec, splits: dict[str, pd.DataFrame], label_names: list[str]) -> dict:
    """Train, calibrate, test and describe one ladder model; returns its comparison row (also row.json)."""
    from distilbench.experiments.compare import link_best

    config = job.config
    if spec.kind == "cascade":
        return run_cascade_model(job, spec, splits, label_names)
    say(f"\n== {job.shown}: {spec.kind} model")
    data = LadderData(
        config.task,
        label_names,
        splits["train"]["text"].tolist(),
        label_array(splits["train"], config.task, label_names),
        splits["val"]["text"].tolist(),
        label_array(splits["val"], config.task, label_names),
    )
    trained_dir = job.run.model_dir(job.slug) / TRAINED
    trained = train_ladder_model(spec, data, trained_dir, config.seed, job.progress)
    best = job.run.best_dir(job.slug)
    link_best(best, trained_dir)
    say(f"  trained in {trained.train_time_s:.1f} s")
    model = load_text_model(best)  # loaded once: validation and test use its probabilities before calibration
    thresholds, val_metrics = calibrate_on_validation(job, model, splits["val"], data)
    test_stats = test_ladder_model(job, model, splits["test"], label_names, thresholds)
    row = ladder_row(job, trained, best, test_stats, val_metrics)
    write_json_atomic(job.results / "row.json", row)
    return row


def calibrate_on_validation(job: ModelJob, model, val: pd.DataFrame, data: LadderData) -> tuple[np.ndarray, dict]:
    """Predict the validation split (val_predictions.csv), fit the probability calibration on it and, for
    multilabel, tune the per-label thresholds; both are saved in the model's manifest. Returns the thresholds
    and the validation metrics."""
    config = job.config
    probs = model.raw_probabilities(data.val_texts)
    thresholds = np.full(len(data.label_names), 0.5)
    fields = {"calibration": fit_calibration(config.task, data.val_labels, probs)}
    if config.task == "multilabel":
        thresholds = tune_thresholds(data.val_labels, probs, config.threshold_metric)
        fields.update(thresholds=[float(t) for t in thresholds], threshold_metric=config.threshold_metric)
    update_manifest(model.path.resolve(), **fields)
    write_csv_atomic(
        job.results / "val_predictions.csv",
        predictions_frame(val, config.task, data.label_names, data.val_labels, probs, thresholds),
    )
    return thresholds, summary_metrics(compute_metrics(config.task, data.val_labels, probs, data.label_names))


def test_ladder_model(job: ModelJob, model, test: pd.DataFrame, label_names: list[str], thresholds: np.ndarray) -> dict:
    """Metrics with intervals on the test split (test_predictions.csv, test_stats.json), the probabilities
    before calibration, as a transformer's are reported."""
    config = job.config
    texts = test["text"].tolist()
    start = time.perf_counter()
    probs = getattr(model, "raw_probabilities", model.probabilities)(texts)  # a cascade has no calibration
    seconds = time.perf_counter() - start
    labels = label_array(test, config.task, label_names)
    stats = tested_metrics(config.task, labels, probs, label_names, thresholds, config.resamples, config.seed)
    stats.update(
        {
            "eval_time_s": seconds,
            "samples": len(texts),
            "samples_per_s": len(texts) / seconds if seconds > 0 else None,
            "backend": model.kind,
            "device": "cpu",
            "model": job.spec,
            "checkpoint": str(model.path),
        }
    )
    write_csv_atomic(
        job.results / "test_predictions.csv",
        predictions_frame(test, config.task, label_names, labels, probs, thresholds),
    )
    write_json_atomic(job.results / "test_stats.json", stats)
    say(f"  test {primary_metric(config.task)} {stats[primary_metric(config.task)]:.4f}")
    return stats


def ladder_row(job: ModelJob, trained: LadderModel, best: Path, test_stats: dict, val: dict) -> dict:
    """The comparison row of a ladder model, with the fields a fine-tuned transformer's row has."""
    return {
        "model": job.spec,
        "seed": job.config.seed,
        "method": trained.method,
        "teacher": None,
        "architecture": trained.architecture,
        "params": trained.params,
        "params_by_block": {"total": trained.params},
        "size_mb": model_size_mb(best),
        "best_epoch": None,
        "kept": TRAINED,
        "select_metric": primary_metric(job.config.task),
        "val": val,
        "test": summary_metrics(test_stats),
        "test_tuned": summary_metrics(test_stats["at_tuned_thresholds"])
        if "at_tuned_thresholds" in test_stats
        else None,
        "train_time_s": trained.train_time_s,
        "eval_time_s": test_stats["eval_time_s"],
        "eval_samples_per_s": test_stats["samples_per_s"],
        "precision": "fp32",
        "backend": trained.kind,
        "backend_choice": None,
        "checkpoint": str(best),
        "calibration": read_manifest(best).get("calibration"),
    }


def run_cascade_model(job: ModelJob, spec: LadderSpec, splits: dict[str, pd.DataFrame], label_names: list[str]) -> dict:
    """`cascade:A+B`: the cascade of models this run trained (the same seed's), its thresholds chosen on the run's
    validation split (at most 0.5 points lost, 95 % confidence), then tested like any model."""
    from distilbench.evaluation.cascade import CascadeTarget
    from distilbench.experiments.cascade import CascadeRun, build_cascade
    from distilbench.experiments.compare import link_best
    from distilbench.runs import model_slug, read_json

    config = job.config
    say(f"\n== {job.shown}: cascade of {' -> '.join(spec.stages)}")
    seed_part = job.slug[len(model_slug(job.spec)) :]  # '/seed-<s>' for one of several seeds
    slugs = [model_slug(stage) + seed_part for stage in spec.stages]
    stage_rows = [read_json(job.run.results(slug) / "row.json") for slug in slugs]
    trained_dir = job.run.model_dir(job.slug) / TRAINED
    start = time.perf_counter()
    rows = CascadeRun(
        batch_size=config.eval_batch_size, max_length=config.max_length, device=config.device, measure_speed=False
    )
    stages = [str(job.run.best_dir(slug).resolve()) for slug in slugs]
    report = build_cascade(stages, trained_dir, config, CascadeTarget(), rows, overwrite=True)
    best = job.run.best_dir(job.slug)
    link_best(best, trained_dir)
    val = splits["val"]
    val_labels = label_array(val, config.task, label_names)
    model = load_text_model(best)
    probs = model.probabilities(val["text"].tolist())
    write_csv_atomic(
        job.results / "val_predictions.csv",
        predictions_frame(val, config.task, label_names, val_labels, probs, model.thresholds),
    )
    test_stats = test_ladder_model(job, model, splits["test"], label_names, model.thresholds)
    trained = LadderModel(
        "cascade",
        cascade_method(spec, report),
        sum(int(row["params"]) for row in stage_rows),
        time.perf_counter() - start,
        {"model_type": "cascade", "layers": 0, "hidden_size": None, "stages": list(spec.stages)},
    )
    val_metrics = summary_metrics(compute_metrics(config.task, val_labels, probs, label_names))
    row = ladder_row(job, trained, best, test_stats, val_metrics)
    row.update(size_mb=sum(r["size_mb"] for r in stage_rows), calibration=None, cascade=report["choice"])
    write_json_atomic(job.results / "row.json", row)
    return row


def cascade_method(spec: LadderSpec, report: dict) -> str:
    """How the cascade was made, for its row: each stage and its confidence threshold."""
    chosen = report["choice"]["stages"]
    parts = [
        f"{name} (threshold {stage['threshold']:.3f})" if stage.get("threshold") is not None else name
        for name, stage in zip(spec.stages, [*chosen, {}])
    ]
    guaranteed = "certified" if report["choice"].get("guaranteed") else "nothing certified: all rows to the last"
    return f"cascade {' -> '.join(parts)}, at most 0.5 points lost with 95 % confidence ({guaranteed})"
