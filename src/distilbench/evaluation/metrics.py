"""Evaluation metrics for multiclass and multilabel classifiers, computed from numpy arrays.

Every dict returned here is JSON-serialisable (plain Python numbers, lists and None).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from distilbench.core.console import DistilbenchError

TASKS = ("multiclass", "multilabel")
THRESHOLD_CRITERIA = ("calibrated", "gmean", "f1")
DEFAULT_THRESHOLD = 0.5

_NON_SCALAR_KEYS = ("per_class", "per_label", "confusion_matrix", "notes")


@contextmanager
def _quiet_sklearn() -> Iterator[None]:
    """Silence sklearn's undefined-metric warnings; zero_division=0 already decides those cases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        yield


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DistilbenchError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")


def _as_2d_pair(y_true: np.ndarray, y_pred: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check two (n, L) arrays agree in shape and are non-empty."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise DistilbenchError(
            f"{what}: expected two 2-D arrays of the same shape, got {y_true.shape} and {y_pred.shape}"
        )
    if y_true.shape[0] == 0:
        raise DistilbenchError(f"{what}: no samples to evaluate")
    return y_true, y_pred


def _check_label_names(n_columns: int, label_names: list[str], what: str) -> None:
    if n_columns != len(label_names):
        raise DistilbenchError(
            f"{what}: probabilities have {n_columns} columns but there are {len(label_names)} label names"
        )


def hamming_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Per-sample Jaccard |true ∩ pred| / |true ∪ pred|, 1.0 when both sets are empty, averaged over
    samples (the thesis's 'hamming score')."""
    y_true, y_pred = _as_2d_pair(y_true, y_pred, "hamming_score")
    t = y_true.astype(bool)
    p = y_pred.astype(bool)
    inter = np.logical_and(t, p).sum(axis=1)
    union = np.logical_or(t, p).sum(axis=1)
    per_sample = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(per_sample.mean())


def _scores_by_name(names: list[str], precision, recall, f1, support) -> dict:
    """scikit-learn's per-class arrays as {name: {precision, recall, f1, support}}."""
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class scores and confusion matrix; prediction is the argmax of probs.

    Macro/weighted F1 follow sklearn's default and average over classes seen in labels or predictions;
    per_class and the confusion matrix cover every name in label_names.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    if probs.ndim != 2 or labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise DistilbenchError(
            f"multiclass metrics: expected labels (n,) and probs (n, K), got {labels.shape} and {probs.shape}"
        )
    if labels.shape[0] == 0:
        raise DistilbenchError("multiclass metrics: no samples to evaluate")
    n_classes = probs.shape[1]
    _check_label_names(n_classes, label_names, "multiclass metrics")
    labels = labels.astype(int)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DistilbenchError(
            f"multiclass metrics: label ids must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    preds = probs.argmax(axis=1)
    class_ids = list(range(n_classes))

    with _quiet_sklearn():
        precision, recall, f1, support = precision_recall_fscore_support(
            labels, preds, labels=class_ids, average=None, zero_division=0
        )
        result = {
            "accuracy": float(accuracy_score(labels, preds)),
            "f1_macro": float(f1_score(labels, preds, average="macro", zero_division=0)),
            "f1_weighted": float(f1_score(labels, preds, average="weighted", zero_division=0)),
        }
    result["per_class"] = _scores_by_name(label_names, precision, recall, f1, support)
    result["confusion_matrix"] = confusion_matrix(labels, preds, labels=class_ids).astype(int).tolist()
    return result


def _thresholds_array(thresholds: float | np.ndarray, n_labels: int) -> np.ndarray:
    """Broadcast a scalar or per-label threshold to shape (L,)."""
    thr = np.asarray(thresholds, dtype=float)
    if thr.ndim == 0:
        return np.full(n_labels, float(thr))
    if thr.shape != (n_labels,):
        raise DistilbenchError(f"expected a single threshold or one per label ({n_labels}), got shape {thr.shape}")
    return thr


def multilabel_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    label_names: list[str],
    thresholds: float | np.ndarray = 0.5,
) -> dict:
    """Hamming score/loss, exact match, F1, per-label scores and ROC-AUC; a label is predicted when
    prob >= its threshold."""
    labels, probs = _as_2d_pair(labels, probs, "multilabel metrics")
    n_labels = probs.shape[1]
    _check_label_names(n_labels, label_names, "multilabel metrics")
    labels = labels.astype(int)
    preds = (probs >= _thresholds_array(thresholds, n_labels)).astype(int)

    notes: list[str] = []
    aucs: list[float | None] = []
    # one label column reads as a binary task to scikit-learn (scores per class 0 and 1): score its 1s alone
    columns = dict(labels=[1]) if n_labels == 1 else {}
    flat = (labels[:, 0], preds[:, 0]) if n_labels == 1 else (labels, preds)
    with _quiet_sklearn():
        precision, recall, f1, support = precision_recall_fscore_support(
            *flat, average=None, zero_division=0, **columns
        )
        for j, name in enumerate(label_names):
            if np.unique(labels[:, j]).size < 2:
                aucs.append(None)
                notes.append(f"ROC-AUC skipped for {name!r}: only one class in this split")
            else:
                aucs.append(float(roc_auc_score(labels[:, j], probs[:, j])))
        result: dict = {
            "hamming_score": hamming_score(labels, preds),
            "hamming_loss": float(hamming_loss(labels, preds)),
            "exact_match": float(accuracy_score(labels, preds)),
            "f1_micro": float(f1_score(*flat, average="micro", zero_division=0, **columns)),
            "f1_macro": float(f1_score(*flat, average="macro", zero_division=0, **columns)),
        }
    result["per_label"] = _scores_by_name(label_names, precision, recall, f1, support)
    for name, value in zip(label_names, aucs):
        result["per_label"][name]["roc_auc"] = value
    present = [a for a in aucs if a is not None]
    result["roc_auc_macro"] = float(np.mean(present)) if present else None
    result["notes"] = notes
    return result


def compute_metrics(
    task: str,
    labels: np.ndarray,
    probs: np.ndarray,
    label_names: list[str],
    thresholds: float | np.ndarray = 0.5,
) -> dict:
    """Dispatch on task 'multiclass' / 'multilabel'; unknown task -> DistilbenchError. Thresholds
    apply to multilabel only."""
    _check_task(task)
    if task == "multiclass":
        return multiclass_metrics(labels, probs, label_names)
    return multilabel_metrics(labels, probs, label_names, thresholds)


def primary_metric(task: str) -> str:
    """'accuracy' for multiclass, 'hamming_score' for multilabel: the default metric for choosing the
    best epoch and for the headline of comparisons."""
    _check_task(task)
    return "accuracy" if task == "multiclass" else "hamming_score"


def summary_metrics(metrics: dict) -> dict:
    """Only the scalar entries of a metrics dict (drop per_class/per_label/confusion_matrix/notes), for
    tables and per-epoch stats."""
    return {
        key: value
        for key, value in metrics.items()
        if key not in _NON_SCALAR_KEYS and (value is None or isinstance(value, (int, float)))
    }


def _calibrated_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The probability at which the label becomes more likely than not on validation: Platt scaling (a logistic
    regression of the label on the logit of the model's probability, scikit-learn's), solved for 0.5. A model
    whose probabilities are calibrated keeps 0.5; one that over-predicts a label gets a higher threshold. A
    fit without a positive slope (scores that do not rank the label) keeps 0.5."""
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(scores.astype(float), 1e-7, 1 - 1e-7)
    logits = np.log(clipped / (1 - clipped))[:, None]
    fit = LogisticRegression().fit(logits, y)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if slope <= 0:
        return DEFAULT_THRESHOLD
    return float(1.0 / (1.0 + np.exp(intercept / slope)))


def _best_threshold(y: np.ndarray, scores: np.ndarray, criterion: str) -> float:
    """Threshold maximising the criterion for one label with both classes present."""
    if criterion == "calibrated":
        return _calibrated_threshold(y, scores)
    if criterion == "gmean":
        fpr, tpr, thr = roc_curve(y, scores)
        objective = np.sqrt(tpr * (1.0 - fpr))
    else:
        precision, recall, thr = precision_recall_curve(y, scores)
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        denom = precision + recall
        objective = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(objective))
    if objective[best] <= 0 or not np.isfinite(thr[best]):
        return DEFAULT_THRESHOLD
    return float(thr[best])


def tune_thresholds(labels: np.ndarray, probs: np.ndarray, criterion: str = "gmean") -> np.ndarray:
    """Per-label decision thresholds from validation data.

    'calibrated': where the label's Platt-scaled probability crosses 0.5 (_calibrated_threshold); 'gmean':
    the maximum of G-mean sqrt(tpr * (1 - fpr)) on the ROC curve (the thesis's criterion); 'f1': the maximum of
    F1 on the precision-recall curve. A label with a single class keeps 0.5. Returns a float array (L,).
    """
    if criterion not in THRESHOLD_CRITERIA:
        raise DistilbenchError(
            f"unknown threshold criterion {criterion!r}; expected one of: {', '.join(THRESHOLD_CRITERIA)}"
        )
    labels, probs = _as_2d_pair(labels, probs, "tune_thresholds")
    labels = labels.astype(int)
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD, dtype=float)
    for j in range(probs.shape[1]):
        if np.unique(labels[:, j]).size < 2:
            continue
        out[j] = _best_threshold(labels[:, j], probs[:, j], criterion)
    return out


def label_array(frame, task: str, label_names: list[str]) -> np.ndarray:
    """Labels of a task frame as model targets: class indices, or an (n, L) float 0/1 matrix."""
    if task == "multiclass":
        index = {name: i for i, name in enumerate(label_names)}
        unknown = sorted(set(frame["label"].astype(str)) - set(index))
        if unknown:
            raise DistilbenchError(
                f"labels not known to the model: {', '.join(unknown[:5])}; it knows {', '.join(label_names)}"
            )
        return frame["label"].astype(str).map(index).to_numpy(dtype=np.int64)
    missing = [name for name in label_names if name not in frame.columns]
    if missing:
        raise DistilbenchError(f"label columns missing from the data: {', '.join(missing)}")
    return frame[label_names].to_numpy(dtype=np.float32)
