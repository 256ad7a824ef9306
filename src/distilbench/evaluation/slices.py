"""Where a model loses: results per class (multiclass), per label (multilabel) and per text length, each with a
bootstrap interval, and every model against the reference on the same slice with a paired interval and a
non-inferiority verdict at the run's margin (issue 38, part 4).

A student can be within the margin overall and far outside it on one class: the overall accuracy averages the
classes by their share of the test rows, so a small class can lose many points and move the average little.

The slices, on the test split:
- class c (multiclass): `recall`, the accuracy on the rows whose true class is c, and `f1`, class c's F1 over all
  rows (its precision counts the rows of other classes predicted as c);
- label l (multilabel): `f1`, the label's F1 at 0.5 (the threshold of the overall verdict), and `roc_auc`;
- text length: the primary metric (accuracy, hamming score) on each quarter of the test rows by length in
  characters (quartiles of the test texts; buckets named by the lengths they hold).

Every number comes from stats.py (bootstrap_ci, paired_difference and their over-seeds forms, verdict), on the
slice turned into a problem those functions know: a class's F1 is the F1 of a one-label problem "is it c", a
slice of rows is the same task on those rows. The intervals are not adjusted for the number of slices: with
many slices, one may fall outside by chance, which is why a slice is flagged only when its whole interval lies
beyond the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distilbench.evaluation.metrics import primary_metric
from distilbench.evaluation.stats import (
    bootstrap_ci,
    bootstrap_ci_over_seeds,
    paired_difference,
    paired_difference_over_seeds,
    verdict,
)

__all__ = ["Slice", "SliceSettings", "define_slices", "length_buckets", "slice_results", "slice_warning_text"]

LENGTH_BUCKETS = 4  # quartiles
MAX_CLASS_SLICES = 50  # the most frequent test classes, beyond which the cost and the table grow too long
MIN_ROWS = 2  # a bootstrap needs two rows
VALUE_DIGITS = 4
POINT_DIGITS = 2


@dataclass(frozen=True)
class Slice:
    """A part of the test split and the metric read on it: kind ("class", "label" or "length"), name (the class or
    label, or the range of lengths), metric, the test rows it holds (None: all rows; the metric picks out its
    class or label) and the column of that class or label."""

    kind: str
    name: str
    metric: str
    rows: np.ndarray | None
    column: int | None = None

    @property
    def title(self) -> str:
        """'class health recall', 'length 12–40 chars accuracy'."""
        return f"{self.kind} {self.name} {self.metric}"


@dataclass(frozen=True)
class SliceSettings:
    """How the slices are compared: the reference model, the margin in points, bootstrap resamples, confidence and
    the seed of the resampling (those of the overall verdict)."""

    reference: str
    margin: float = 1.0
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 42


def length_buckets(texts, buckets: int = LENGTH_BUCKETS) -> list[dict]:
    """Test rows split by text length in characters at the quantiles of the lengths (quartiles by default): one
    dict per non-empty bucket with `name` ('12–40 chars'), `low` and `high` (the shortest and longest length in
    it) and `rows` (indices). Ties at a cut stay together, so buckets may hold unequal shares; at most `buckets`."""
    lengths = np.array([len(str(t)) for t in texts], dtype=int)
    if lengths.size == 0:
        return []
    cuts = np.unique(np.quantile(lengths, np.arange(1, buckets) / buckets, method="inverted_cdf"))
    index = np.searchsorted(cuts, lengths, side="left")  # bucket i: cuts[i-1] < length <= cuts[i]
    out = []
    for b in range(cuts.size + 1):
        rows = np.flatnonzero(index == b)
        if rows.size:
            low, high = int(lengths[rows].min()), int(lengths[rows].max())
            name = f"{low}–{high} chars" if low != high else f"{low} char{'s' if low != 1 else ''}"
            out.append({"name": name, "low": low, "high": high, "rows": rows})
    return out


def _class_slices(labels: np.ndarray, label_names: list[str]) -> tuple[list[Slice], list[str]]:
    """Recall and F1 of each class present in the test split (the MAX_CLASS_SLICES most frequent), and the classes
    left out."""
    support = np.bincount(labels.astype(int), minlength=len(label_names))
    present = [c for c in np.argsort(-support, kind="stable") if support[c] >= MIN_ROWS]
    kept = sorted(present[:MAX_CLASS_SLICES])
    left_out = [label_names[c] for c in range(len(label_names)) if c not in kept]
    slices = []
    for c in kept:
        slices.append(Slice("class", label_names[c], "recall", np.flatnonzero(labels == c), c))
        slices.append(Slice("class", label_names[c], "f1", None, c))
    return slices, left_out


def define_slices(task: str, labels: np.ndarray, label_names: list[str], texts=None) -> tuple[list[Slice], dict]:
    """The slices of a test split and what describes them: ({"length_buckets": [{name, low, high, rows}],
    "classes_left_out": [...]}) (length buckets only when the texts are given)."""
    labels = np.asarray(labels)
    info: dict = {"length_buckets": [], "classes_left_out": []}
    if task == "multiclass":
        slices, info["classes_left_out"] = _class_slices(labels, label_names)
    else:
        slices = [
            Slice("label", name, metric, None, j) for j, name in enumerate(label_names) for metric in ("f1", "roc_auc")
        ]
    if texts is not None:
        metric = primary_metric(task)
        for bucket in length_buckets(texts):
            if bucket["rows"].size >= MIN_ROWS:
                slices.append(Slice("length", bucket["name"], metric, bucket["rows"]))
                described = {k: bucket[k] for k in ("name", "low", "high")}
                info["length_buckets"].append(described | {"rows": int(bucket["rows"].size)})
    return slices, info


def _one_label(name: str, truth: np.ndarray, scores: list[np.ndarray], metric: str):
    """A one-label multilabel problem whose macro F1 (or ROC-AUC) is that label's. The column is given twice:
    scikit-learn reads a single 0/1 column as a binary task and would average F1 over its two classes."""
    return "multilabel", truth[:, [0, 0]], [s[:, [0, 0]] for s in scores], [name, f"{name} (again)"], metric


def _problem(task: str, piece: Slice, labels: np.ndarray, probs: list[np.ndarray], label_names: list[str]):
    """The slice as a problem stats.py knows: (task, labels, probabilities per seed, label names, metric)."""
    if piece.kind == "label":
        metric = "f1_macro" if piece.metric == "f1" else "roc_auc_macro"
        if metric == "roc_auc_macro":  # one column is enough: ROC-AUC is computed label by label
            return "multilabel", labels[:, [piece.column]], [p[:, [piece.column]] for p in probs], [piece.name], metric
        return _one_label(piece.name, labels[:, [piece.column]], [p[:, [piece.column]] for p in probs], metric)
    if piece.kind == "class" and piece.metric == "f1":  # one label: "is it class c", predicted when the argmax is c
        truth = (labels == piece.column).astype(float)[:, None]
        chosen = [(p.argmax(axis=1) == piece.column).astype(float)[:, None] for p in probs]
        return _one_label(piece.name, truth, chosen, "f1_macro")
    rows = piece.rows
    metric = "accuracy" if piece.kind == "class" else piece.metric  # recall of c: accuracy on the rows of class c
    return task, labels[rows], [p[rows] for p in probs], label_names, metric


def _round(value, digits: int):
    return None if value is None else round(float(value), digits)


def _interval(problem, settings: SliceSettings) -> dict:
    task, labels, probs, names, metric = problem
    common = dict(resamples=settings.resamples, confidence=settings.confidence, seed=settings.seed)
    if len(probs) == 1:
        ci = bootstrap_ci(task, labels, probs[0], names, metric, **common)
    else:
        ci = bootstrap_ci_over_seeds(task, labels, probs, names, metric, **common)
    return {k: _round(ci[k], VALUE_DIGITS) for k in ("value", "low", "high")}


def _difference(reference, own, settings: SliceSettings) -> dict:
    """The paired difference (own - reference, points) on one slice, with its verdict at the margin."""
    task, labels, ref_probs, names, metric = reference
    own_probs = own[2]
    common = dict(resamples=settings.resamples, confidence=settings.confidence, seed=settings.seed)
    if len(ref_probs) == 1 and len(own_probs) == 1:
        diff = paired_difference(task, labels, ref_probs[0], own_probs[0], names, metric, **common)
    else:
        diff = paired_difference_over_seeds(task, labels, ref_probs, own_probs, names, metric, **common)
    decided = verdict(diff, settings.margin)
    return {
        **{k: _round(diff[k], POINT_DIGITS) for k in ("difference_points", "low", "high")},
        "verdict": decided["verdict"],
    }


def slice_results(
    task: str,
    labels: np.ndarray,
    probs: dict[str, list[np.ndarray]],
    label_names: list[str],
    settings: SliceSettings,
    texts=None,
) -> tuple[dict[str, list[dict]], dict]:
    """Every model's results on every slice, and against the reference on the same slice.

    probs: each model's test probabilities, one array per seed (the reference among them). Returns (per model a
    list of {"kind", "name", "metric", "rows", "value", "low", "high", "vs_reference"}, where vs_reference is
    {"difference_points", "low", "high", "verdict"} or None for the reference; and the run-level part:
    {"length_buckets", "classes_left_out", "outside_margin": the slices whose whole interval lies beyond the
    margin, as dicts with model, kind, name, metric, difference and message}). Values are rounded to 4 decimals,
    points to 2.
    """
    labels = np.asarray(labels)
    slices, info = define_slices(task, labels, label_names, texts)
    results: dict[str, list[dict]] = {model: [] for model in probs}
    outside = []
    for piece in slices:
        problems = {model: _problem(task, piece, labels, p, label_names) for model, p in probs.items()}
        for model, problem in problems.items():
            against = None
            if model != settings.reference and settings.reference in problems:
                against = _difference(problems[settings.reference], problem, settings)
            rows = labels.shape[0] if piece.rows is None else int(piece.rows.size)
            entry = {"kind": piece.kind, "name": piece.name, "metric": piece.metric, "rows": rows}
            results[model].append(entry | _interval(problem, settings) | {"vs_reference": against})
            if against and against["verdict"] == "worse":
                outside.append({"model": model, **{k: entry[k] for k in ("kind", "name", "metric")}, **against})
    for item in outside:
        item["message"] = slice_warning_text(item, settings.margin)
    return results, info | {"outside_margin": outside}


def slice_warning_text(item: dict, margin: float) -> str:
    """'student: class health recall -3.1 points [-4.9, -1.2], outside the 1-point margin'."""
    span = f"{item['difference_points']:+.1f} points [{item['low']:+.1f}, {item['high']:+.1f}]"
    where = f"{item['kind']} {item['name']} {item['metric']}"
    return f"{item['model']}: {where} {span}, outside the {margin:g}-point margin"
