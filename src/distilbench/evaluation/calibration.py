"""Calibrated probabilities: expected calibration error, reliability curves and temperature scaling.

A model is calibrated when, of the texts it gives a probability of 0.8, about 80 % are right. Fine-tuned
transformers are usually over-confident, and models of other kinds (TF-IDF with logistic regression, static
embeddings) err either way, so a cascade or a user who reads the probabilities needs them put right.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") divides the model's logits by
one number T fitted on the validation split by minimising the negative log-likelihood: T > 1 softens an
over-confident model, T < 1 sharpens an under-confident one. The models here save probabilities, not logits, so
the logits are taken back from them: log p for multiclass (softmax(log p) = p, so softmax(log p / T) is the
scaled model) and logit(p) per label for multilabel, with one temperature per label. Dividing by a positive
number keeps the order of the classes and of each label's scores, so argmax never changes, and a multilabel
threshold t mapped to sigmoid(logit(t) / T) keeps every decision (`calibrate_thresholds`).

The negative log-likelihood is convex in 1 / T (a log-sum-exp, or a softplus, of a linear function of it, minus a
linear function), so a bounded scalar search (scipy.optimize.minimize_scalar) finds the global minimum.
"""

from __future__ import annotations

import numpy as np

from distilbench.core.console import DistilbenchError

# numpy alone on the prediction path (apply_calibration, calibrate_thresholds): predict and serve load this module
# on an exported bundle, where scipy and scikit-learn would cost half a second of start-up; the fit imports scipy
TASKS = ("multiclass", "multilabel")  # as evaluation.metrics.TASKS, without importing scikit-learn


def expit(x: np.ndarray) -> np.ndarray:
    """The logistic sigmoid, stable for large |x|."""
    return np.exp(-np.logaddexp(0.0, -x))


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


__all__ = [
    "apply_calibration",
    "calibrate_thresholds",
    "expected_calibration_error",
    "fit_calibration",
    "reliability_curve",
]

BINS = 15
METHOD = "temperature"
CLIP = 1e-12  # probabilities of exactly 0 or 1 have no finite logit
TOLERANCE = 1e-5  # how far outside [0, 1] a probability may lie from rounding (it is clipped)
INVERSE_TEMPERATURE_BOUNDS = (0.05, 20.0)  # T from 0.05 to 20


def _check(task: str, labels: np.ndarray | None, probs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Validated float probabilities (n, K or L) and labels (class ids (n,), or 0/1 (n, L))."""
    if task not in TASKS:
        raise DistilbenchError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        what = "classes" if task == "multiclass" else "labels"
        raise DistilbenchError(f"probabilities must be a non-empty (rows, {what}) array, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < -TOLERANCE or probs.max() > 1 + TOLERANCE:
        raise DistilbenchError("probabilities must be finite numbers between 0 and 1")
    probs = np.clip(probs, 0.0, 1.0)  # float32 rounding can leave a probability a hair above 1
    if labels is None:
        return None, probs
    labels = np.asarray(labels)
    expected = (probs.shape[0],) if task == "multiclass" else probs.shape
    if labels.shape != expected:
        raise DistilbenchError(f"labels of shape {labels.shape} do not match probabilities of shape {probs.shape}")
    if task == "multiclass":
        labels = labels.astype(int)
        if labels.min() < 0 or labels.max() >= probs.shape[1]:
            raise DistilbenchError(f"class ids must lie in 0..{probs.shape[1] - 1}")
    else:
        labels = labels.astype(float)
    return labels, probs


def _outcomes(task: str, labels: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(confidence, outcome) pairs to bin: multiclass, the top probability and whether its class is right;
    multilabel, each label's probability and whether the label is present (one pair per label)."""
    if task == "multiclass":
        return [(probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float))]
    return [(probs[:, j], labels[:, j]) for j in range(probs.shape[1])]


def _bins(confidence: np.ndarray, outcome: np.ndarray, bins: int) -> list[dict]:
    """Equal-width bins (lower, upper] of [0, 1] (0 falls in the first): the non-empty ones, with their count, mean
    confidence and mean outcome."""
    if bins < 1:
        raise DistilbenchError(f"bins must be at least 1, got {bins}")
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf = np.bincount(index, weights=confidence, minlength=bins)
    hits = np.bincount(index, weights=outcome, minlength=bins)
    return [
        {
            "lower": b / bins,
            "upper": (b + 1) / bins,
            "count": int(counts[b]),
            "confidence": float(conf[b] / counts[b]),
            "accuracy": float(hits[b] / counts[b]),
        }
        for b in range(bins)
        if counts[b]
    ]


def _ece(confidence: np.ndarray, outcome: np.ndarray, bins: int) -> float:
    n = confidence.shape[0]
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in _bins(confidence, outcome, bins)))


def expected_calibration_error(task: str, labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: sum over equal-width bins of (share of rows in the bin) x |accuracy - mean
    confidence| (0 is perfectly calibrated, lower is better).

    Multiclass: top-label ECE (Guo et al. 2017): the confidence is the top probability and a row is right when
    its argmax is the true class. Multilabel: the mean over labels of each label's binary ECE, which bins the
    label's probability and compares it with how often the label is present.
    """
    labels, probs = _check(task, labels, probs)
    return float(np.mean([_ece(conf, outcome, bins) for conf, outcome in _outcomes(task, labels, probs)]))


def reliability_curve(
    task: str, labels: np.ndarray, probs: np.ndarray, bins: int = BINS, *, label: int | None = None
) -> list[dict]:
    """The points of a reliability diagram: one dict per non-empty equal-width bin (lower, upper], with `lower`,
    `upper`, `count`, `confidence` (mean probability in the bin) and `accuracy` (share right, or share of rows
    with the label). A calibrated model's points lie on the diagonal.

    Multiclass: the top-label probabilities (the bins of expected_calibration_error). Multilabel: every label's
    probabilities pooled into one diagram, or the label with index `label` alone.
    """
    labels, probs = _check(task, labels, probs)
    pairs = _outcomes(task, labels, probs)
    if task == "multilabel" and label is not None:
        if not 0 <= label < len(pairs):
            raise DistilbenchError(f"label index {label} out of range 0..{len(pairs) - 1}")
        pairs = [pairs[label]]
    return _bins(np.concatenate([c for c, _ in pairs]), np.concatenate([o for _, o in pairs]), bins)


# --------------------------------------------------------------------------- temperature scaling


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, CLIP, 1.0))


def _logits(probs: np.ndarray) -> np.ndarray:
    return logit(np.clip(probs, CLIP, 1.0 - CLIP))


def _multiclass_nll(log_probs: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """Mean negative log-likelihood of softmax(beta x log p); beta = 1 / T."""
    return float(-log_softmax(beta * log_probs, axis=1)[np.arange(labels.size), labels].mean())


def _binary_nll(logits: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """Mean binary cross-entropy of sigmoid(beta x logit p): softplus(z) - y z."""
    z = beta * logits
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def _fit_inverse_temperature(nll) -> float:
    """The beta = 1 / T in INVERSE_TEMPERATURE_BOUNDS that minimises a convex nll(beta)."""
    from scipy import optimize

    result = optimize.minimize_scalar(nll, bounds=INVERSE_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(result.x)


def fit_calibration(task: str, labels: np.ndarray, probs: np.ndarray) -> dict:
    """Temperature scaling fitted on held-out rows (the validation split): the temperatures that minimise the
    negative log-likelihood of the rescaled probabilities.

    Multiclass: one temperature T, the model becoming softmax(log p / T). Multilabel: one temperature per label,
    each label becoming sigmoid(logit(p) / T); a label with a single class in these rows keeps T = 1 and is
    listed in `not_fitted`. Temperatures lie in [0.05, 20]; probabilities of exactly 0 or 1 are clipped to
    1e-12 from the ends. Returns a JSON-ready dict: {"method": "temperature", "task", "temperature": [T, ...],
    "fitted_on": rows, "nll_before", "nll_after", "ece_before", "ece_after"} (NLL per row; multilabel: averaged
    over labels), and "not_fitted" (label indices) for multilabel. apply_calibration takes it.
    """
    labels, probs = _check(task, labels, probs)
    if task == "multiclass":
        log_probs = _log_probs(probs)
        beta = _fit_inverse_temperature(lambda b: _multiclass_nll(log_probs, labels, b))
        betas, not_fitted = [beta], None
        nll_before, nll_after = _multiclass_nll(log_probs, labels, 1.0), _multiclass_nll(log_probs, labels, beta)
    else:
        logits = _logits(probs)
        betas, not_fitted = [], []
        for j in range(probs.shape[1]):
            if np.unique(labels[:, j]).size < 2:
                betas.append(1.0)
                not_fitted.append(j)
            else:
                betas.append(_fit_inverse_temperature(lambda b, j=j: _binary_nll(logits[:, j], labels[:, j], b)))
        nll_before = float(np.mean([_binary_nll(logits[:, j], labels[:, j], 1.0) for j in range(len(betas))]))
        nll_after = float(np.mean([_binary_nll(logits[:, j], labels[:, j], b) for j, b in enumerate(betas)]))
    calibration = {
        "method": METHOD,
        "task": task,
        "temperature": [1.0 / b for b in betas],
        "fitted_on": int(probs.shape[0]),
        "nll_before": nll_before,
        "nll_after": nll_after,
    }
    if not_fitted is not None:
        calibration["not_fitted"] = not_fitted
    calibration["ece_before"] = expected_calibration_error(task, labels, probs)
    calibration["ece_after"] = expected_calibration_error(task, labels, apply_calibration(task, probs, calibration))
    return calibration


def _temperatures(task: str, calibration: dict, width: int) -> np.ndarray:
    """The temperatures of a calibration dict, checked against the task and the number of classes or labels."""
    if calibration.get("method") != METHOD:
        raise DistilbenchError(f"unknown calibration method {calibration.get('method')!r}; expected {METHOD!r}")
    if calibration.get("task", task) != task:
        raise DistilbenchError(f"a calibration fitted for a {calibration['task']} task cannot apply to a {task} task")
    temperatures = np.asarray(calibration.get("temperature"), dtype=float).ravel()
    expected = 1 if task == "multiclass" else width
    if temperatures.size != expected:
        raise DistilbenchError(
            f"the calibration holds {temperatures.size} temperatures; a {task} model with {width} "
            f"{'classes' if task == 'multiclass' else 'labels'} needs {expected}"
        )
    if not np.all(np.isfinite(temperatures)) or temperatures.min() <= 0:
        raise DistilbenchError("calibration temperatures must be positive numbers")
    return temperatures


def apply_calibration(task: str, probs: np.ndarray, calibration: dict | None) -> np.ndarray:
    """The probabilities after temperature scaling (fit_calibration's dict); unchanged without one (None).

    Multiclass: softmax(log p / T) (rows sum to 1, the argmax is unchanged); multilabel: sigmoid(logit(p) / T_j)
    per label (map the decision thresholds with calibrate_thresholds to keep every decision).
    """
    if calibration is None:
        return probs
    _, probs = _check(task, None, probs)
    temperatures = _temperatures(task, calibration, probs.shape[1])
    if task == "multiclass":
        return np.exp(log_softmax(_log_probs(probs) / temperatures[0], axis=1))
    return expit(_logits(probs) / temperatures)


def calibrate_thresholds(task: str, thresholds, calibration: dict | None):
    """Multilabel decision thresholds moved by the calibration's transform, sigmoid(logit(t) / T_j), so that a
    calibrated probability crosses its threshold exactly where the raw one did: every decision stays the same.

    `thresholds` is one number or one per label; returns one per label (an array). Multiclass decisions (argmax)
    need no threshold, and without a calibration (None) thresholds are returned unchanged.
    """
    if calibration is None or task == "multiclass":
        return thresholds
    values = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if np.any((values < 0) | (values > 1)):
        raise DistilbenchError("thresholds must lie between 0 and 1")
    temperatures = _temperatures(task, calibration, len(calibration.get("temperature") or []))
    if values.size not in (1, temperatures.size):
        raise DistilbenchError(f"{values.size} thresholds for {temperatures.size} labels")
    return expit(_logits(np.broadcast_to(values, temperatures.shape)) / temperatures)
