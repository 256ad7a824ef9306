"""`distilbench evaluate`: a saved model's metrics on any data source. An exported bundle is tested here with
onnxruntime and numpy alone (no torch, no transformers); a checkpoint goes to compare.evaluate.

The task data's reading and the tested metrics live here (compare imports them), so that testing a bundle does
not import the training side of compare.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilbench.core.console import DistilbenchError, say
from distilbench.data import datasets as datalib
from distilbench.evaluation.metrics import compute_metrics, label_array, summary_metrics
from distilbench.evaluation.stats import HEADLINE_METRICS, bootstrap_ci
from distilbench.runs import write_json_atomic
from distilbench.runtime.bundle import is_exported_model

if TYPE_CHECKING:
    import pandas as pd

    from distilbench.config import ExperimentConfig


def load_task_data(source: str, config: ExperimentConfig, label_names: list[str] | None = None):
    """Read a source into a cleaned task frame; returns (frame, label_names, dropped counts). With
    `label_names` (the training labels: validation/test files, evaluate) the frame has exactly those labels,
    and a label outside them is an error."""
    raw = datalib.read_source(source, config.text_column)
    frame, names = datalib.to_task_frame(
        raw,
        config.task,
        text_column=config.text_column,
        label_column=config.label_column,
        label_columns=config.label_columns,
        label_separator=config.label_separator,
        label_names=label_names,
    )
    dropped = dict(frame.attrs.get("dropped", {}))
    frame, cleaned = datalib.clean_texts(frame, max_chars=config.max_chars)
    dropped.update(cleaned)
    return frame, names, dropped


def tested_metrics(
    task: str,
    labels: np.ndarray,
    probs: np.ndarray,
    label_names: list[str],
    thresholds: np.ndarray,
    resamples: int | None = None,
    seed: int = 0,
) -> dict:
    """The metrics of predicted `probs`; for multilabel with tuned `thresholds`, also the metrics at them; with
    `resamples`, each headline metric's 95 % bootstrap interval (`seed`: the resampling's)."""
    stats = compute_metrics(task, labels, probs, label_names)
    if task == "multilabel" and not np.allclose(thresholds, 0.5):
        stats["thresholds"] = dict(zip(label_names, thresholds.tolist()))
        stats["at_tuned_thresholds"] = compute_metrics(task, labels, probs, label_names, thresholds)
    if resamples is not None:
        stats["intervals"] = {
            m: bootstrap_ci(task, labels, probs, label_names, m, resamples=resamples, seed=seed)
            for m in HEADLINE_METRICS[task]
        }
    return stats


def predictions_frame(
    frame,
    task: str,
    label_names: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray | float = 0.5,
) -> "pd.DataFrame":
    """Texts with true and predicted labels and every probability, one row per text."""
    import pandas as pd

    out = pd.DataFrame({"text": frame["text"].to_numpy()})
    if task == "multiclass":
        out["true"] = [label_names[i] for i in labels]
        out["predicted"] = [label_names[i] for i in probs.argmax(axis=1)]
    else:
        out["true"] = ["|".join(n for n, v in zip(label_names, row) if v) for row in labels]
        limits = np.broadcast_to(np.asarray(thresholds, dtype=float), (len(label_names),))
        out["predicted"] = ["|".join(n for n, v, t in zip(label_names, row, limits) if v >= t) for row in probs]
    for i, name in enumerate(label_names):  # unrounded: the intervals and verdicts are computed from this file,
        out[f"prob_{name}"] = probs[:, i]  # and rounding tied a confident model's tiny scores (ROC-AUC -0.004)
    return out


def evaluate(
    model_dir: str,
    source: str,
    config: ExperimentConfig,
    out: str | None,
    progress: bool = True,
    check_fp32: bool = False,
) -> dict:
    """Test a saved model on any data source; write the metrics JSON to `out`. An exported bundle runs its own
    graph here, without torch; a checkpoint is tested by compare.evaluate (`check_fp32`: also with
    torch-fp32, and the agreement reported)."""
    from distilbench.runtime.light import is_text_model

    if not is_exported_model(model_dir) and not is_text_model(model_dir):
        from distilbench.experiments import compare

        return compare.evaluate(model_dir, source, config, out, progress, check_fp32)
    if check_fp32:
        raise DistilbenchError(
            f"{model_dir} is an exported or tfidf/static/cascade model: it has no torch-fp32 to check against; "
            "evaluate the checkpoint it came from with --check-fp32"
        )
    test = test_text_model if is_text_model(model_dir) else test_bundle
    stats = test(model_dir, source, config, progress)
    if out:
        write_json_atomic(Path(out), stats)
    summary = summary_metrics(stats)
    say(", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float)))
    return stats


def labelled_frame(source: str, config: ExperimentConfig, task: str, label_names: list[str]):
    """The task frame of `source` with the model's labels (the rows dropped said), and its label array."""
    config.task = task
    frame, _, dropped = load_task_data(source, config, label_names)
    for reason, count in dropped.items():
        if count:
            say(f"dropped {count} rows: {reason}")
    return frame, label_array(frame, task, label_names)


def run_fields(model_dir: str, source: str, task: str, seconds: float, samples: int) -> dict:
    """What a bundle's or a light model's test stats say besides the metrics: time, rate, device, model, data."""
    return {
        "eval_time_s": seconds,
        "samples": samples,
        "samples_per_s": samples / seconds if seconds > 0 else None,
        "device": "cpu",
        "model": str(model_dir),
        "data": source,
        "task": task,
    }


def test_bundle(model_dir: str, source: str, config: ExperimentConfig, progress: bool) -> dict:
    """Metrics of an exported bundle on `source` (its own graph, the one inference loop, its thresholds), with
    95 % intervals, as compare.test_model reports a checkpoint's."""
    from distilbench.runtime.batching import backend_logits, logits_to_probs, loss_from_logits
    from distilbench.runtime.onnx_backend import load_exported
    from distilbench.runtime.predict import stored_thresholds

    runtime, exported = load_exported(model_dir, config.backend)
    task, label_names = exported.task, exported.label_names
    frame, labels = labelled_frame(source, config, task, label_names)
    texts = frame["text"].tolist()
    logits, seconds = backend_logits(
        runtime,
        exported.tokenizer,
        texts,
        batch_size=config.eval_batch_size,
        max_length=config.max_length,
        progress=progress,
        desc="evaluate",
    )
    probs = logits_to_probs(task, logits)
    thresholds = stored_thresholds(exported.config, label_names)
    stats = tested_metrics(task, labels, probs, label_names, thresholds, config.resamples, config.seed)
    stats.update(
        loss=loss_from_logits(task, logits, labels), **run_fields(model_dir, source, task, seconds, len(frame))
    )
    stats["backend"] = runtime.name
    return stats


def test_text_model(model_dir: str, source: str, config: ExperimentConfig, progress: bool) -> dict:
    """Metrics of a tfidf, static or cascade model on `source` with 95 % intervals, its probabilities as
    `predict` gives them (calibrated) and its thresholds; a cascade also reports the rows each stage answered."""
    import time

    from distilbench.runtime.light import load_text_model

    model = load_text_model(model_dir)
    task, label_names = model.task, model.label_names
    frame, labels = labelled_frame(source, config, task, label_names)
    start = time.perf_counter()
    probs = model.probabilities(frame["text"].tolist())
    seconds = time.perf_counter() - start
    stats = tested_metrics(task, labels, probs, label_names, model.thresholds, config.resamples, config.seed)
    stats.update(run_fields(model_dir, source, task, seconds, len(frame)))
    stats["backend"] = model.kind
    if getattr(model, "stage_counts", None) is not None:
        stats["stage_counts"] = list(model.stage_counts)
    return stats
