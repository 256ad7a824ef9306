"""Plots and a self-contained report of a finished `distilbench compare` run.

`make_plots(run_dir)` draws PNGs into RUN_DIR/plots/; `write_report(run_dir)` draws them too and writes
RUN_DIR/report.html (images inlined as data URIs, inline CSS: one file that reads offline) and
RUN_DIR/report.md (images by relative path). Everything is read back from the run directory's files.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.calibration import (
    BINS,
    TOLERANCE,
    apply_calibration,
    expected_calibration_error,
    reliability_curve,
)
from distilbench.evaluation.verdicts import baseline_table, difference_text, interval_text
from distilbench.runs import (
    RunDir,
    describe_checkpoint,
    kept_checkpoint,
    model_slug,
    read_json,
    write_bytes_atomic,
    write_text_atomic,
)

__all__ = ["make_plots", "write_report"]
log = logging.getLogger(__name__)

DPI = 100
SAMPLE_SIZE = 10  # test texts shown side by side
TOP_ERRORS = 5  # most confident errors per model
SAMPLE_SEED = 0
MAX_TEXT = 300  # characters of a text shown in a table
SETTINGS = (
    "epochs",
    "train_batch_size",
    "eval_batch_size",
    "learning_rate",
    "max_length",
    "precision",
    "backend",
    "seed",
    "head",
    "threshold_metric",
    "distill",
    "alpha",
    "temperature",
    "max_samples",
)
NOT_METRICS = {"loss", "eval_time_s", "samples", "samples_per_s", "best_epoch"}
TUNED = ("hamming_score", "hamming_loss", "exact_match", "f1_micro", "f1_macro")
TEXT_COLUMNS = {"text": str, "true": str, "predicted": str, "label": str}
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.wide{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}figure{margin:1em 0 2em}
figcaption{font-size:.9em;color:#555}img{max-width:100%;height:auto}
p.warn{background:#fdecea;border-left:5px solid #c62828;padding:.5em .8em;font-weight:600}"""


@dataclass
class ModelRun:
    """One model's results: its comparison row and the files in results/<slug>/."""

    row: dict
    slug: str
    training: dict
    test: dict
    predictions: pd.DataFrame | None


@dataclass
class Run:
    """Everything the plots and the report read from a run directory."""

    root: Path
    comparison: dict
    config: dict
    summary: dict
    models: list[ModelRun]
    bench: dict | None
    task: str
    labels: list[str]
    metric: str


@dataclass
class Plot:
    path: Path
    title: str
    caption: str
    section: str


def _read_json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def _read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV with text and label columns kept as strings ('NA' or '1' stay labels, '' stays empty)."""
    return pd.read_csv(path, keep_default_na=False, dtype=TEXT_COLUMNS) if path.is_file() else None


def load_run(run_dir: str | Path) -> Run:
    """Read a finished run; DistilbenchError if comparison.json (written last) is missing."""
    run = RunDir(run_dir)
    if not run.comparison_json.is_file():
        raise DistilbenchError(
            f"{run_dir} is not a finished distilbench run (no comparison.json): "
            "pass the --out directory of a completed `distilbench compare`"
        )
    comparison = read_json(run.comparison_json)
    config = yaml.safe_load(run.config.read_text(encoding="utf-8")) if run.config.is_file() else {}
    models = []
    for row in comparison["rows"]:
        slug = model_slug(row["model"])
        results = run.results(slug)
        models.append(
            ModelRun(
                row,
                slug,
                _read_json(results / "training_stats.json"),
                _read_json(results / "test_stats.json"),
                _read_csv(results / "test_predictions.csv"),
            )
        )
    return Run(
        run.root,
        comparison,
        config or {},
        _read_json(run.data / "summary.json"),
        models,
        _read_json(run.root / "bench.json") or None,
        comparison["task"],
        list(comparison["label_names"]),
        comparison["primary_metric"],
    )


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: no pyplot, so no global backend state in the caller's process."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    """PNG written to a temporary file beside `path`, then renamed, like every other run file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_bytes_atomic(path, buffer.getvalue())
    log.info("wrote %s", path)
    return path


def _finish(ax: Axes, xlabel: str, ylabel: str, legend: bool = True, **settings) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel, **settings)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def _label_matrix(column: pd.Series, labels: list[str]) -> np.ndarray:
    """0/1 matrix (n, L) from a column of '|'-joined label names ('' for none)."""
    sets = [set(value.split("|")) for value in column]
    return np.array([[name in chosen for name in labels] for chosen in sets], dtype=int).reshape(len(sets), -1)


def _probs(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return frame[[f"prob_{name}" for name in labels]].to_numpy(dtype=float)


def _thresholds(run: Run, model: ModelRun) -> np.ndarray:
    """The model's decision thresholds: the tuned ones (test stats, else the best checkpoint), else 0.5."""
    tuned = model.test.get("thresholds") or _read_json(RunDir(run.root).best_dir(model.slug) / "config.json").get(
        "distilbench", {}
    ).get("thresholds", {})
    return np.array([float(tuned.get(name, 0.5)) for name in run.labels])


def _epochs(model: ModelRun) -> tuple[pd.DataFrame, str, int | None]:
    """Per-epoch statistics, the validation metric that chose the best epoch, and that epoch."""
    metric = model.training.get("select_metric") or model.row.get("select_metric") or "loss"
    return pd.DataFrame(model.training["epochs"]), metric, model.training.get("best_epoch", model.row["best_epoch"])


def plot_training(model: ModelRun, path: Path) -> Plot:
    """Train/validation loss and the validation metric per epoch for one model, best epoch marked."""
    epochs, metric, best = _epochs(model)
    figure = _figure(8, 3.2)
    loss_ax, metric_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs["epoch"], epochs["train_loss"], "o-", label="train loss")
    loss_ax.plot(epochs["epoch"], epochs["val_loss"], "s-", label="validation loss")
    metric_ax.plot(epochs["epoch"], epochs[f"val_{metric}"], "o-", color="C2", label=f"validation {metric}")
    kept = kept_checkpoint({"best_epoch": best, **model.training})
    average = next((row for row in model.training.get("averages") or [] if row["checkpoint"] == kept), None)
    for ax, name in ((loss_ax, "loss"), (metric_ax, metric)):
        ax.axvline(best, ls="--", color="grey", label=f"best epoch ({best})")
        if average is not None:  # the kept checkpoint is an average of epochs: its validation score, across them
            ax.hlines(
                average[f"val_{name}"],
                average["epochs"][0],
                average["epochs"][-1],
                colors="C3",
                lw=2,
                label=describe_checkpoint(kept),
            )
        _finish(ax, "epoch", name, xticks=epochs["epoch"])
    figure.suptitle(model.row["model"], fontsize=10)
    tested = (
        f"the red bar is the kept {describe_checkpoint(kept)} (its validation score, drawn across the "
        "epochs averaged), whose checkpoint was tested"
        if average is not None
        else "whose checkpoint was tested"
    )
    return Plot(
        _save(figure, path),
        f"Training: {model.row['model']}",
        f"Loss per epoch (left) and validation {metric} (right); the dashed line is the best epoch, {tested}.",
        "Training",
    )


def plot_training_overlay(models: list[ModelRun], path: Path, what: str) -> Plot:
    """Every model on one axis: what='loss' (validation solid, train dashed) or the validation metric."""
    figure = _figure(6.5, 4)
    ax = figure.subplots()
    metric = _epochs(models[0])[1]
    column = "val_loss" if what == "loss" else f"val_{metric}"
    for i, model in enumerate(models):
        epochs, _, best = _epochs(model)
        ax.plot(epochs["epoch"], epochs[column], "o-", color=f"C{i}", label=model.row["model"])
        if what == "loss":
            ax.plot(epochs["epoch"], epochs["train_loss"], "--", color=f"C{i}", alpha=0.6)
        at_best = epochs[epochs["epoch"] == best]
        ax.plot(at_best["epoch"], at_best[column], "*", color=f"C{i}", ms=14, mec="black")
    if what == "loss":
        ax.plot([], [], "k-", label="validation")
        ax.plot([], [], "k--", alpha=0.6, label="train")
    name = "loss" if what == "loss" else metric
    _finish(
        ax,
        "epoch",
        name if what == "loss" else f"validation {metric}",
        xticks=sorted({e for m in models for e in _epochs(m)[0]["epoch"]}),
    )
    caption = "Validation loss (solid) and train loss (dashed)" if what == "loss" else f"Validation {metric}"
    return Plot(
        _save(figure, path),
        f"All models: {name} per epoch",
        caption + " per epoch for every model; a star marks each model's best epoch.",
        "Training",
    )


def plot_confusion(model: ModelRun, labels: list[str], path: Path) -> Plot:
    """Row-normalised test confusion matrix (rows: true class), values written in the cells."""
    counts = np.asarray(model.test["confusion_matrix"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(labels)
    side = min(3.5 + 0.45 * n, 12)
    figure = _figure(side + 1, side)
    ax = figure.subplots()
    figure.colorbar(ax.imshow(share, cmap="Blues", vmin=0, vmax=1), ax=ax, shrink=0.8)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 25:
        for (i, j), value in np.ndenumerate(share):
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black"
            )
    ax.set(xlabel="predicted", ylabel="true", title=model.row["model"])
    return Plot(
        _save(figure, path),
        f"Confusion matrix: {model.row['model']}",
        "Test split, each row divided by the number of texts of its true class.",
        "Test results per model",
    )


def plot_roc(run: Run, model: ModelRun, path: Path) -> Plot:
    """Per-label ROC curves from the test probabilities, each label's decision threshold marked."""
    truth, probs = _label_matrix(model.predictions["true"], run.labels), _probs(model.predictions, run.labels)
    thresholds = _thresholds(run, model)
    figure = _figure(6.5, 5)
    ax = figure.subplots()
    skipped = []
    for j, name in enumerate(run.labels):
        y, p = truth[:, j], probs[:, j]
        if np.unique(y).size < 2:
            skipped.append(name)
            continue
        fpr, tpr, _ = roc_curve(y, p)
        (line,) = ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        chosen = p >= thresholds[j]
        ax.plot(chosen[y == 0].mean(), chosen[y == 1].mean(), "o", color=line.get_color(), mec="black", ms=7)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    if skipped:
        ax.text(0.02, 0.97, "skipped: " + ", ".join(skipped), transform=ax.transAxes, fontsize=8, va="top")
    _finish(
        ax,
        "false positive rate",
        "true positive rate",
        legend=False,
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=model.row["model"],
    )
    ax.legend(fontsize=8, loc="lower right")
    note = f" Skipped (only one class in the test split): {', '.join(skipped)}." if skipped else ""
    return Plot(
        _save(figure, path),
        f"ROC curves: {model.row['model']}",
        "Per-label ROC curves on the test split; a dot marks the label's decision threshold "
        "(tuned on validation where thresholds were tuned, else 0.5)." + note,
        "Test results per model",
    )


def _grouped_bars(categories: list[str], series: dict[str, list[float]], ylabel: str, **settings) -> Figure:
    """One group of bars per category, one bar per series."""
    x = np.arange(len(categories))
    figure = _figure(min(4 + 0.7 * len(x), 12), 3.6)
    ax = figure.subplots()
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, categories, rotation=30, ha="right", fontsize=8)
    _finish(ax, "", ylabel, **settings)
    ax.xaxis.grid(False)
    return figure


def plot_per_label(run: Run, model: ModelRun, path: Path) -> Plot:
    """Test precision, recall and F1 per label (at the tuned thresholds where there are any)."""
    tuned = "at_tuned_thresholds" in model.test
    scores = (model.test["at_tuned_thresholds"] if tuned else model.test)["per_label"]
    figure = _grouped_bars(
        run.labels,
        {m: [scores[n][m] for n in run.labels] for m in ("precision", "recall", "f1")},
        "score",
        ylim=(0, 1.05),
        title=model.row["model"],
    )
    return Plot(
        _save(figure, path),
        f"Per-label scores: {model.row['model']}",
        f"Test precision, recall and F1 per label at {'the tuned thresholds' if tuned else 'threshold 0.5'}.",
        "Test results per model",
    )


def plot_label_counts(run: Run, path: Path) -> Plot:
    """Texts per class (or label) and split."""
    counts = _read_csv(run.root / "data" / "label_counts.csv")
    splits = [s for s in ("train", "val", "test") if s in counts.columns]
    figure = _grouped_bars(counts["label"].tolist(), {s: counts[s].tolist() for s in splits}, "texts")
    what = (
        "labels (a text may carry several; 'no label' counts texts with none)"
        if run.task == "multilabel"
        else "classes"
    )
    return Plot(_save(figure, path), "Texts per split", f"Counts of {what} in each split.", "Data")


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better), sorted by x."""
    front = [
        i for i, (x, y) in enumerate(points) if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i][0])


def _bench_points(run: Run) -> list[tuple[str, float, float]]:
    """(model / backend, samples per s, metric) from bench.json; the run's metric where bench has none."""
    by_slug = {m.slug: m.row["test"].get(run.metric) for m in run.models}
    points = []
    for result in (run.bench or {}).get("results", []):
        value = (result.get("test") or {}).get(run.metric, by_slug.get(result.get("model")))
        rate = (result.get("samples_per_s") or {}).get("median")
        if value is not None and rate:
            points.append((f"{result['model']} / {result.get('backend')}", float(rate), float(value)))
    return points


def _annotate(ax: Axes, points: list[tuple[str, float, float]]) -> None:
    for name, x, y in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.margins(x=0.25, y=0.15)


def _throughput(row: dict) -> float:
    """Samples per second: the run's speed measurement (bench protocol, median) where made, else the test pass."""
    return float((row.get("throughput") or {}).get("median") or row.get("eval_samples_per_s") or 0)


def _plain_log_axis(ax: Axes, rates: list[float]) -> None:
    """A log-scale x axis labelled with plain numbers (1,500 rather than 1.5x10^3): the powers of ten, and the
    ticks between them too when the rates span less than a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain if max(rates) < 10 * min(rates) else NullFormatter())


def plot_metric_vs_speed(run: Run, path: Path) -> Plot:
    """Test metric vs throughput with the Pareto front (of bench.json's model x backend points if present)."""
    figure = _figure(6.5, 4.2)
    ax = figure.subplots()
    points = [(m.row["model"], _throughput(m.row), float(m.row["test"][run.metric])) for m in run.models]
    bench = _bench_points(run)
    if any(p[1] > 0 for p in points + bench):  # a log axis cannot show a model without a measured rate
        points, bench = [p for p in points if p[1] > 0], [p for p in bench if p[1] > 0]
    ax.scatter(
        [p[1] for p in points],
        [p[2] for p in points],
        s=50,
        label="measured in the run",
        facecolors="none" if bench else "C0",
        edgecolors="C0",
    )
    if bench:
        ax.scatter([p[1] for p in bench], [p[2] for p in bench], s=50, marker="s", color="C1", label="bench.json")
    ranked = bench or points
    front = _pareto([(p[1], p[2]) for p in ranked])
    ax.plot(
        [ranked[i][1] for i in front],
        [ranked[i][2] for i in front],
        "o--",
        color="C3",
        ms=12,
        mfc="none",
        label="Pareto front",
    )
    _annotate(ax, ranked)
    rates = [p[1] for p in points + bench if p[1] > 0]
    logarithmic = bool(rates)  # models from TF-IDF to transformers span 1,000x
    if logarithmic:
        _plain_log_axis(ax, rates)
    _finish(ax, f"test samples per second{' (log scale)' if logarithmic else ''}", f"test {run.metric}")
    source = "bench.json (one point per model and backend)" if bench else "the run's measurements"
    return Plot(
        _save(figure, path),
        f"Test {run.metric} vs throughput",
        f"Up and to the right is better; the dashed line and the circled points are the Pareto front of {source}: "
        "the models no other model beats on both quality and speed. Throughput on a log scale.",
        "Quality, speed and size",
    )


def plot_metric_vs_size(run: Run, path: Path) -> Plot:
    """Test metric vs checkpoint size on disk."""
    figure = _figure(6.5, 4.2)
    ax = figure.subplots()
    points = [(m.row["model"], float(m.row["size_mb"]), float(m.row["test"][run.metric])) for m in run.models]
    ax.scatter([p[1] for p in points], [p[2] for p in points], s=50, c=[f"C{i}" for i in range(len(points))])
    _annotate(ax, points)
    _finish(ax, "checkpoint size (MB)", f"test {run.metric}", legend=False)
    return Plot(
        _save(figure, path),
        f"Test {run.metric} vs size",
        "Up and to the left is better: the best checkpoint's size on disk against the test metric.",
        "Quality, speed and size",
    )


def _truth(run: Run, frame: pd.DataFrame) -> np.ndarray:
    """The true labels of saved predictions: class indices, or a 0/1 matrix (n, L)."""
    if run.task == "multilabel":
        return _label_matrix(frame["true"], run.labels)
    index = {name: i for i, name in enumerate(run.labels)}
    return frame["true"].map(index).to_numpy(dtype=int)


def _has_probabilities(run: Run, model: ModelRun) -> bool:
    """Whether the model saved test probabilities (scores in [0, 1]) that a calibration can be read from."""
    if model.predictions is None:
        return False
    probs = _probs(model.predictions, run.labels)
    return bool(np.isfinite(probs).all() and probs.min() >= -TOLERANCE and probs.max() <= 1 + TOLERANCE)


def _calibration_inputs(run: Run, model: ModelRun) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The saved test labels and probabilities, and the probabilities after the model's calibration (fitted on
    validation, row["calibration"]) or None without one."""
    frame = model.predictions
    probs = _probs(frame, run.labels)
    calibration = model.row.get("calibration")
    return _truth(run, frame), probs, apply_calibration(run.task, probs, calibration) if calibration else None


def plot_reliability(run: Run, model: ModelRun, path: Path) -> Plot:
    """Reliability diagram: mean probability against the share right in equal-width bins, before and after the
    model's calibration, with each curve's expected calibration error."""
    labels, raw, calibrated = _calibration_inputs(run, model)
    figure = _figure(5.2, 4.6)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, probs, colour in (("raw", raw, "C0"), ("calibrated", calibrated, "C2")):
        if probs is None:
            continue
        curve = reliability_curve(run.task, labels, probs)
        ece = expected_calibration_error(run.task, labels, probs)
        total = sum(b["count"] for b in curve)
        ax.plot([b["confidence"] for b in curve], [b["accuracy"] for b in curve], "-", color=colour, alpha=0.7)
        ax.scatter(
            [b["confidence"] for b in curve],
            [b["accuracy"] for b in curve],
            s=[12 + 200 * b["count"] / total for b in curve],
            color=colour,
            label=f"{name} (ECE {ece:.3f})",
        )
    multiclass = run.task == "multiclass"
    _finish(
        ax,
        "predicted probability" + (" of the top class" if multiclass else " of a label"),
        "share right" if multiclass else "share of texts with the label",
        xlim=(-0.02, 1.03),
        ylim=(-0.02, 1.03),
        title=model.row["model"],
    )
    what = (
        "the top class's probability against how often the top class is right"
        if multiclass
        else "every label's probability (all labels pooled) against how often the label is present; the ECE "
        "is the mean of each label's own"
    )
    after = (
        " Green: after the temperature scaling fitted on validation."
        if calibrated is not None
        else " No calibration was fitted for this model."
    )
    return Plot(
        _save(figure, path),
        f"Reliability: {model.row['model']}",
        f"Test split, {BINS} equal-width bins: {what}; a dot's size is its share of the predictions, a calibrated "
        f"model lies on the diagonal.{after}",
        "Calibration",
    )


VERDICT_COLOURS = {"within": "C2", "worse": "C3", "inconclusive": "C1"}


def plot_forest(run: Run, path: Path) -> Plot | None:
    """Each model's difference to the reference in the primary metric, with its paired interval and the margin."""
    compared = [m.row for m in run.models if m.row.get("vs_reference") and m.row["vs_reference"].get("low") is not None]
    if not compared:
        return None
    margin = float(run.comparison.get("margin_points", 1.0))
    figure = _figure(6.5, 1.2 + 0.55 * len(compared))
    ax = figure.subplots()
    for i, row in enumerate(reversed(compared)):
        diff = row["vs_reference"]
        d, low, high = diff["difference_points"], diff["low"], diff["high"]
        ax.errorbar(
            [d],
            [i],
            xerr=[[d - low], [high - d]],
            fmt="o",
            capsize=4,
            color=VERDICT_COLOURS.get(diff["verdict"], "C0"),
            label=diff["verdict"],
        )
    ax.axvline(0, color="grey", lw=1)
    ax.axvline(-margin, color="C3", ls="--", lw=1, label=f"margin (-{margin:g} points)")
    ax.set_yticks(range(len(compared)), [row["model"] for row in reversed(compared)])
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
    ax.set_xlabel(f"test {run.metric} minus the reference's (points)")
    ax.grid(alpha=0.3)
    reference = run.comparison.get("reference", run.models[0].row["model"])
    return Plot(
        _save(figure, path),
        f"Difference to {reference}",
        f"Each model's test {run.metric} minus {reference}'s, in points, with its "
        f"{run.comparison.get('confidence', 0.95):.0%} paired bootstrap interval (over test examples, and over "
        "seeds where there are several). Within margin: the whole interval lies right of the dashed line; "
        "worse: left of it; inconclusive: across it.",
        "Verdicts",
    )


def _plots(run: Run) -> list[Plot]:
    folder = run.root / "plots"
    plots = [plot_label_counts(run, folder / "label-counts.png")]
    trained = [m for m in run.models if m.training.get("epochs")]
    plots += [plot_training(m, folder / f"training-{m.slug}.png") for m in trained]
    if trained:
        plots += [
            plot_training_overlay(trained, folder / "loss-all.png", "loss"),
            plot_training_overlay(trained, folder / "metric-all.png", "metric"),
        ]
    for model in run.models:
        if run.task == "multiclass" and "confusion_matrix" in model.test:
            plots.append(plot_confusion(model, run.labels, folder / f"confusion-{model.slug}.png"))
        if run.task == "multilabel" and model.predictions is not None:
            plots.append(plot_roc(run, model, folder / f"roc-{model.slug}.png"))
        if run.task == "multilabel" and "per_label" in model.test:
            plots.append(plot_per_label(run, model, folder / f"per-label-{model.slug}.png"))
    plots += [
        plot_reliability(run, m, folder / f"reliability-{m.slug}.png") for m in run.models if _has_probabilities(run, m)
    ]
    forest = plot_forest(run, folder / "forest.png")
    return (
        plots
        + ([forest] if forest else [])
        + [
            plot_metric_vs_speed(run, folder / "metric-vs-throughput.png"),
            plot_metric_vs_size(run, folder / "metric-vs-size.png"),
        ]
    )


def make_plots(run_dir: str | Path) -> list[Path]:
    """Draw every plot of a finished run into RUN_DIR/plots/; returns the PNG paths."""
    return [plot.path for plot in _plots(load_run(run_dir))]


# --------------------------------------------------------------------------- tables


def _layer_group(name: str) -> str:
    """'embeddings', 'layer N', 'pooler' or 'head' for a parameter name of any supported architecture."""
    match = re.search(r"(?:^|\.)layers?\.(\d+)\.", name)
    if match:
        return f"layer {match.group(1)}"
    return next((block for block in ("embeddings", "pooler") if block in name), "head")


def layer_counts(checkpoint: Path) -> dict[str, int]:
    """Parameters per layer from a checkpoint's safetensors headers (shapes only, no weights loaded)."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for file in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(str(file), framework="np") as handle:
            for key in handle.keys():
                group = _layer_group(key)
                counts[group] = counts.get(group, 0) + int(np.prod(handle.get_slice(key).get_shape()))
    return counts


def _group_order(group: str) -> tuple[int, int]:
    match = re.fullmatch(r"layer (\d+)", group)
    return (1, int(match.group(1))) if match else ({"embeddings": 0, "pooler": 2, "head": 3}.get(group, 4), 0)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}" if isinstance(value, (float, np.floating)) else str(value)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _names(value: str) -> str:
    return value.replace("|", ", ") or "none"


def _shown(row: pd.Series, labels: list[str]) -> str:
    """A prediction with the probability of each predicted label (the top one where none is predicted)."""
    names = [n for n in row["predicted"].split("|") if n]
    if names:
        return ", ".join(f"{n} ({row[f'prob_{n}']:.2f})" for n in names)
    top = max(labels, key=lambda n: row[f"prob_{n}"])
    return f"none (top: {top} {row[f'prob_{top}']:.2f})"


def comparison_tables(run: Run) -> list[tuple]:
    """Quality (with tuned-threshold metrics where there are any) and cost, one row per model."""
    metrics = [
        k for k, v in run.models[0].row["test"].items() if k not in NOT_METRICS and (v is None or isinstance(v, float))
    ]
    tuned = list(TUNED) if any(m.row.get("test_tuned") for m in run.models) else []
    quality = [
        [m.row["model"], describe_checkpoint(kept_checkpoint(m.row))]
        + [_fmt(m.row["test"].get(k)) for k in metrics]
        + [_fmt((m.row.get("test_tuned") or {}).get(k)) for k in tuned]
        for m in run.models
    ]
    cost = [
        [
            m.row["model"],
            f"{m.row['params'] / 1e6:.2f}",
            f"{m.row['size_mb']:.1f}",
            _fmt(m.row.get("train_time_s"), 1),
            _fmt(m.row.get("eval_time_s"), 2),
            _fmt(_throughput(m.row) or None, 1),
            _fmt((m.row.get("latency_ms") or {}).get("p50"), 1),
            _fmt(m.row.get("eval_speedup"), 2),
            _fmt(m.row.get("train_speedup"), 2),
            _fmt(m.row.get("precision")),
            _fmt(m.row.get("backend")),
        ]
        for m in run.models
    ]
    return [
        ("table", ["model", "tested checkpoint", *metrics, *(f"{k} (tuned)" for k in tuned)], quality),
        (
            "table",
            [
                "model",
                "params (M)",
                "size (MB)",
                "train time (s)",
                "eval time (s)",
                "samples/s",
                "latency p50 (ms)",
                "eval speed-up",
                "train speed-up",
                "precision",
                "backend",
            ],
            cost,
        ),
    ]


def verdict_blocks(run: Run) -> list[tuple]:
    """Warnings for models that learned nothing, intervals, differences to the reference and verdicts, and the
    trivial baselines (runs from before the verdicts have none of these: nothing is shown)."""
    rows = [m.row for m in run.models]
    if not any("test_ci" in row for row in rows):
        return []
    blocks: list[tuple] = []
    for row in rows:
        flags = row.get("learned_nothing") or {}
        for check in flags.get("checks", []):
            if check["learned_nothing"]:
                blocks.append(("warn", f"Learned nothing: {check['message']}."))
        for check in flags.get("tuned_checks", []):
            if check["learned_nothing"]:
                blocks.append(("warn", f"Tuned thresholds no better than a trivial baseline: {check['message']}."))
    seeds = run.comparison.get("seeds") or []
    confidence = f"{run.comparison.get('confidence', 0.95):.0%}"
    over_seeds = f", and over the {len(seeds)} seeds" if len(seeds) > 1 else ""
    margin = run.comparison.get("margin_points", 1.0)
    blocks.append(
        (
            "p",
            f"Test {run.metric} with its {confidence} bootstrap interval "
            f"({run.comparison.get('resamples')} resamples over the test examples{over_seeds}); each model "
            f"against {run.comparison.get('reference')} on the same test examples (paired bootstrap), with "
            f"a non-inferiority verdict at a margin of {margin:g} points.",
        )
    )
    table = []
    for row in rows:
        diff = row.get("vs_reference")
        spread = (row.get("test_spread") or {}).get(run.metric)
        p = None if not diff else diff.get("mcnemar_p")
        table.append(
            [
                row["model"],
                interval_text((row.get("test_ci") or {}).get(run.metric)),
                _fmt(spread["std"]) if spread else "–",
                difference_text(diff),
                diff["verdict"] if diff else "reference",
                "–" if p is None else f"{p:.3g}",
                "NO" if (row.get("learned_nothing") or {}).get("flag") else "yes",
                diff["message"] if diff else "",
            ]
        )
    blocks.append(
        (
            "table",
            [
                "model",
                f"{run.metric} [{confidence} CI]",
                "sd over seeds",
                "vs reference (points)",
                "verdict",
                "McNemar p",
                "beats baselines",
                "why",
            ],
            table,
        )
    )
    others = [m for m in ((run.comparison.get("baselines") or {}).get("baselines") or {})]
    if others:
        frame = baseline_table(run.comparison, run.task)
        blocks += [
            ("p", "Trivial baselines, from the training split's labels, scored like the models:"),
            ("table", list(frame.columns), frame.astype(str).values.tolist()),
        ]
    return blocks


def _temperatures(calibration: dict) -> str:
    values = [float(t) for t in calibration.get("temperature") or []]
    if len(values) > 6:
        return f"{min(values):.2f}–{max(values):.2f} ({len(values)} labels)"
    return ", ".join(f"{t:.2f}" for t in values) or "–"


def calibration_blocks(run: Run) -> list[tuple]:
    """Each model's expected calibration error on the test split, raw and after its calibration (temperature
    scaling fitted on validation, row["calibration"]) where it has one."""
    models = [m for m in run.models if _has_probabilities(run, m)]
    if not models:
        return []
    rows = []
    for model in models:
        labels, raw, calibrated = _calibration_inputs(run, model)
        calibration = model.row.get("calibration") or {}
        rows.append(
            [
                model.row["model"],
                _fmt(expected_calibration_error(run.task, labels, raw)),
                _fmt(None if calibrated is None else expected_calibration_error(run.task, labels, calibrated)),
                _temperatures(calibration) if calibration else "–",
                _fmt(calibration.get("fitted_on")),
            ]
        )
    what = (
        "the top class's probability against how often it is right (top-label ECE)"
        if run.task == "multiclass"
        else "each label's probability against how often the label is present, averaged over labels"
    )
    return [
        (
            "p",
            f"Expected calibration error (ECE) on the test split, {BINS} equal-width bins: {what}; 0 is perfectly "
            "calibrated. Calibrated: after temperature scaling fitted on the validation split (T > 1 softens an "
            "over-confident model); it changes no prediction.",
        ),
        ("table", ["model", "ECE (raw)", "ECE (calibrated)", "temperature", "fitted on (rows)"], rows),
    ]


SLICE_KINDS = {"class": "Per class", "label": "Per label", "length": "Per text length (characters)"}


def slice_blocks(run: Run) -> list[tuple]:
    """Per class (label) and per length bucket: every model's value with its interval and, against the reference,
    the paired difference and its verdict; warnings for slices outside the margin (nothing for older runs)."""
    rows = [m.row for m in run.models if m.row.get("slices")]
    if not rows:
        return []
    reference = run.comparison.get("reference")
    others = [row for row in rows if row["model"] != reference]
    margin = run.comparison.get("margin_points", 1.0)
    outside = (run.comparison.get("slices") or {}).get("outside_margin") or []
    blocks: list[tuple] = [("warn", f"Outside the margin on a slice: {item['message']}.") for item in outside]
    blocks.append(
        (
            "p",
            f"Each slice of the test split with the model's {run.comparison.get('confidence', 0.95):.0%} bootstrap "
            f"interval and, against {reference}, the paired difference in points with a verdict at the margin of "
            f"{margin:g} points. Recall of a class: accuracy on the texts of that class; F1 counts the texts of other "
            "classes predicted as it too. Intervals are not adjusted for the number of slices.",
        )
    )
    by_key = [{(e["kind"], e["name"], e["metric"]): e for e in row["slices"]} for row in rows]
    header = ["slice", "metric", "texts"] + [row["model"] for row in rows]
    header += [f"{row['model']} vs reference" for row in others] + [f"{row['model']} verdict" for row in others]
    for kind, title in SLICE_KINDS.items():
        keys = [(e["kind"], e["name"], e["metric"]) for e in rows[0]["slices"] if e["kind"] == kind]
        if not keys:
            continue
        table = []
        for key in keys:
            entries = [found.get(key) for found in by_key]
            against = [found.get(key) for row, found in zip(rows, by_key) if row["model"] != reference]
            table.append(
                [key[1], key[2], _fmt(entries[0]["rows"])]
                + [interval_text(e) for e in entries]
                + [difference_text((e or {}).get("vs_reference")) if e else "n/a" for e in against]
                + [((e or {}).get("vs_reference") or {}).get("verdict", "–") for e in against]
            )
        blocks += [("h3", title), ("table", header, table)]
    return blocks


def parameter_tables(run: Run) -> list[tuple]:
    """Parameters by block (from the comparison) and by layer (from each best checkpoint)."""
    blocks = [
        [m.row["model"]]
        + [_fmt(m.row.get("params_by_block", {}).get(b)) for b in ("embeddings", "encoder", "head", "total")]
        for m in run.models
    ]
    layers = {m.row["model"]: layer_counts(RunDir(run.root).best_dir(m.slug)) for m in run.models}
    groups = sorted({g for counts in layers.values() for g in counts}, key=_group_order)
    rows = [[g] + [_fmt(counts.get(g)) for counts in layers.values()] for g in groups]
    rows.append(["total"] + [_fmt(sum(counts.values()) or None) for counts in layers.values()])
    return [
        ("p", "By block (the encoder block includes a BERT pooler; the head is the classifier on top):"),
        ("table", ["model", "embeddings", "encoder", "head", "total"], blocks),
        ("p", "By layer, read from each best checkpoint's weights:"),
        ("table", ["group", *layers], rows),
    ]


def sample_table(run: Run) -> list[tuple]:
    """The same test texts (a fixed random choice) with every model's prediction beside the truth."""
    models = [m for m in run.models if m.predictions is not None]
    if not models:
        return [("p", "No test predictions were found.")]
    first = models[0].predictions
    chosen = sorted(
        np.random.default_rng(SAMPLE_SEED).choice(len(first), min(SAMPLE_SIZE, len(first)), replace=False).tolist()
    )
    rows = []
    for i in chosen:
        cells = [_short(first["text"].iloc[i]), _names(first["true"].iloc[i])]
        for m in models:
            same = len(m.predictions) == len(first) and m.predictions["text"].iloc[i] == first["text"].iloc[i]
            cells.append(_shown(m.predictions.iloc[i], run.labels) if same else "–")
        rows.append(cells)
    return [("table", ["text", "true", *(m.row["model"] for m in models)], rows)]


def _errors(frame: pd.DataFrame, run: Run) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per test text: is it wrong, how confident was the mistake, and what went wrong."""
    probs = _probs(frame, run.labels)
    if run.task == "multiclass":
        confidence = probs[np.arange(len(frame)), frame["predicted"].map(run.labels.index).to_numpy()]
        return (
            (frame["true"] != frame["predicted"]).to_numpy(),
            confidence,
            [f"{p} ({c:.2f})" for p, c in zip(frame["predicted"], confidence)],
        )
    truth, chosen = _label_matrix(frame["true"], run.labels), _label_matrix(frame["predicted"], run.labels)
    false_pos, missed = (chosen == 1) & (truth == 0), (chosen == 0) & (truth == 1)
    confidence = np.maximum(np.where(false_pos, probs, 0), np.where(missed, 1 - probs, 0)).max(axis=1)
    detail = [
        "; ".join(
            [f"wrongly {n} ({p[j]:.2f})" for j, n in enumerate(run.labels) if fp[j]]
            + [f"missed {n} ({p[j]:.2f})" for j, n in enumerate(run.labels) if ms[j]]
        )
        for p, fp, ms in zip(probs, false_pos, missed)
    ]
    return (false_pos | missed).any(axis=1), confidence, detail


def error_tables(run: Run) -> list[tuple]:
    """Per model, the wrong test predictions made with the highest confidence."""
    blocks: list[tuple] = []
    for model in (m for m in run.models if m.predictions is not None):
        frame = model.predictions
        wrong, confidence, detail = _errors(frame, run)
        order = [i for i in np.argsort(-confidence, kind="stable") if wrong[i]][:TOP_ERRORS]
        blocks.append(("h3", model.row["model"]))
        if run.task == "multiclass":
            columns = ["text", "true", "predicted (probability)"]
            rows = [[_short(frame["text"].iloc[i]), frame["true"].iloc[i], detail[i]] for i in order]
        else:
            columns = ["text", "true", "predicted", "errors (probability of the label)"]
            rows = [
                [
                    _short(frame["text"].iloc[i]),
                    _names(frame["true"].iloc[i]),
                    _names(frame["predicted"].iloc[i]),
                    detail[i],
                ]
                for i in order
            ]
        blocks.append(("table", columns, rows) if rows else ("p", "No errors on the test split."))
    return blocks


# --------------------------------------------------------------------------- the document


def overview(run: Run) -> list[tuple]:
    """What was run: data, labels, models and the main settings."""
    rows = run.comparison.get("rows_per_split") or run.summary.get("rows", {})
    dropped = {k: v for k, v in (run.summary.get("dropped") or {}).items() if v}
    facts = [
        f"Task: {run.task}; primary metric: {run.metric}",
        f"Data: {run.summary.get('source') or run.comparison.get('data')}",
        "Rows per split: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()),
        "Dropped rows: " + (", ".join(f"{k}: {v:,}" for k, v in dropped.items()) or "none"),
        f"Labels ({len(run.labels)}): " + ", ".join(run.labels),
    ]
    machine = run.comparison.get("machine") or {}
    if machine:
        facts.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None))
    models = [
        [
            m.row["model"],
            m.row.get("method", ""),
            ", ".join(f"{k} {v}" for k, v in (m.row.get("architecture") or {}).items()),
        ]
        for m in run.models
    ]
    settings = [[k, "–" if run.config[k] is None else str(run.config[k])] for k in SETTINGS if k in run.config]
    return [
        ("list", facts),
        ("table", ["model", "method", "architecture"], models),
        ("p", "Main settings (config.yaml holds them all):"),
        ("table", ["setting", "value"], settings),
    ]


def document(run: Run, plots: list[Plot]) -> list[tuple]:
    """The report as a list of blocks (kind, ...), rendered alike to HTML and Markdown."""
    blocks: list[tuple] = [
        ("h1", f"distilbench report: {run.root.name}"),
        ("h2", "What was run"),
        *overview(run),
        ("h2", "Comparison on the test split"),
        *comparison_tables(run),
    ]
    verdicts = verdict_blocks(run)
    if verdicts:
        blocks += [("h2", "Verdicts"), *verdicts, *(("figure", plot) for plot in plots if plot.section == "Verdicts")]
        plots = [plot for plot in plots if plot.section != "Verdicts"]
    slices = slice_blocks(run)
    if slices:
        blocks += [("h2", "Where the models lose"), *slices]
    before = {"Calibration": calibration_blocks(run)}  # tables shown above a section's plots
    for section in dict.fromkeys(plot.section for plot in plots):
        figures = [("figure", plot) for plot in plots if plot.section == section]
        blocks += [("h2", section), *before.get(section, []), *figures]
    why = (
        "the probability of the predicted class"
        if run.task == "multiclass"
        else "a wrongly predicted label's probability, or 1 − the probability of a missed label"
    )
    return blocks + [
        ("h2", "Parameters"),
        *parameter_tables(run),
        ("h2", "Sample test predictions"),
        ("p", "A fixed random sample of test texts; the probability of each predicted label in brackets."),
        *sample_table(run),
        ("h2", "Most confident errors"),
        ("p", f"Wrong test predictions ranked by {why}."),
        *error_tables(run),
    ]


def _cell(value: str) -> str:
    numeric = re.fullmatch(r"[-+]?[\d,]*\.?\d+", value) is not None
    return f'<td class="num">{html.escape(value)}</td>' if numeric else f"<td>{html.escape(value)}</td>"


def render_html(blocks: list[tuple], title: str) -> str:
    """One self-contained page: inline CSS, images as base64 data URIs, every text escaped."""
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>"
    ]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "warn":
            parts.append(f'<p class="warn">⚠ {html.escape(rest[0])}</p>')
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in rest[0]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in rest[0])
            body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rest[1])
            parts.append(f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif kind == "figure":
            plot = rest[0]
            data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(plot.title)}">'
                f"<figcaption><b>{html.escape(plot.title)}.</b> {html.escape(plot.caption)}</figcaption>"
                "</figure>"
            )
    return "\n".join(parts) + "\n</body></html>\n"


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def render_markdown(blocks: list[tuple], root: Path) -> str:
    """The same blocks as Markdown, images referenced relative to the run directory."""
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + _md(rest[0]))
        elif kind == "p":
            parts.append(_md(rest[0]))
        elif kind == "warn":
            parts.append(f"> **⚠ Warning:** {_md(rest[0])}")
        elif kind == "list":
            parts.append("\n".join(f"- {_md(item)}" for item in rest[0]))
        elif kind == "table":
            lines = ["| " + " | ".join(_md(h) for h in rest[0]) + " |", "|" + "---|" * len(rest[0])]
            parts.append("\n".join(lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rest[1]]))
        elif kind == "figure":
            plot = rest[0]
            parts.append(
                f"![{_md(plot.title)}]({plot.path.relative_to(root).as_posix()})\n\n"
                f"*{_md(plot.title)}.* {_md(plot.caption)}"
            )
    return "\n\n".join(parts) + "\n"


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Draw the plots, write RUN_DIR/report.html (self-contained) and RUN_DIR/report.md; return both paths."""
    run = load_run(run_dir)
    blocks = document(run, _plots(run))
    html_path, md_path = run.root / "report.html", run.root / "report.md"
    write_text_atomic(html_path, render_html(blocks, f"distilbench report: {run.root.name}"))
    write_text_atomic(md_path, render_markdown(blocks, run.root))
    log.info("wrote %s and %s", html_path, md_path)
    return html_path, md_path
