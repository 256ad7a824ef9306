"""Uncertainty for test metrics: bootstrap intervals, paired comparisons, non-inferiority verdicts and
trivial baselines (issue 15, "Verdicts you can trust").

Everything takes the inputs of metrics.compute_metrics (labels, probabilities, label names, thresholds) and
returns JSON-serialisable dicts. Intervals come from scipy.stats.bootstrap over the indices of test examples:
each metric is turned into a vectorised function of an index array (B, m) -> (B,), so one call scores a whole
batch of resamples, and the same index rows score both models of a paired comparison.

Differences are in points of the metric (100 x the difference of two values in [0, 1]), higher is better.

Why the percentile interval by default (BCa on request): BCa corrects the percentile interval for bias and
skewness, which matters for small test sets and metrics near 0 or 1, but it needs a jackknife, n more evaluations
of the metric (5x the work of 1,000 resamples at n = 5,000, and 60x for a 63,000-example toxic-comments test set),
and it is undefined when some resamples have no value or the bootstrap distribution is constant (a constant
predictor's ROC-AUC, 100 % accuracy). At the test sizes this tool sees (hundreds to tens of thousands) both
intervals agree to resampling noise, and the percentile interval of accuracy at n = 400 covers ~95 % (tested).
BCa falls back to percentile, and says so in "method", whenever it is undefined.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.metrics import TASKS, compute_metrics, primary_metric

CI_METHODS = ("percentile", "BCa")
# Metrics with an interval; all are higher-is-better (hamming_loss is left out for that reason: use hamming_score).
INTERVAL_METRICS = {
    "multiclass": ("accuracy", "f1_macro", "f1_weighted"),
    "multilabel": ("hamming_score", "exact_match", "f1_micro", "f1_macro", "roc_auc_macro"),
}
HEADLINE_METRICS = {
    "multiclass": ("accuracy", "f1_macro"),
    "multilabel": ("hamming_score", "f1_micro", "f1_macro", "roc_auc_macro"),
}
VERDICTS = ("within", "worse", "inconclusive")
# Index entries per resampling batch: keeps the (batch, n) index and weight matrices to tens of MB.
_BATCH_ELEMENTS = 2_000_000

MetricFunction = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------------------------
# Metrics as vectorised functions of resampled example indices
# ---------------------------------------------------------------------------------------------------------------


def _check_metric(task: str, metric: str | None) -> str:
    if task not in TASKS:
        raise DistilbenchError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    metric = metric or primary_metric(task)
    if metric not in INTERVAL_METRICS[task]:
        raise DistilbenchError(
            f"no interval for metric {metric!r} on a {task} task; expected one of: {', '.join(INTERVAL_METRICS[task])}"
        )
    return metric


def _check_method(method: str) -> str:
    if method not in CI_METHODS:
        raise DistilbenchError(f"unknown interval method {method!r}; expected one of: {', '.join(CI_METHODS)}")
    return method


def _resample_weights(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n examples occurs in each row of idx (B, m): an (n, B) float matrix (examples on rows,
    so matrix products and per-example gathers read contiguous memory)."""
    rows = idx.shape[0]
    flat = (idx * rows + np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(n, rows).astype(float)


def _f1_from_counts(tp: np.ndarray, true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 = 2tp / (true + pred) per column, 0 where nothing is true or predicted (sklearn's zero_division=0),
    and the mask of columns where it is defined."""
    denom = true + pred
    defined = denom > 0
    return np.divide(2.0 * tp, denom, out=np.zeros_like(denom), where=defined), defined


def _roc_auc_columns(labels: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Per-label ROC-AUC of weighted resamples, weights (n, B) -> (B, L), NaN where a label has one class.

    AUC is the Mann-Whitney statistic: the weighted share of (positive, negative) pairs ranked correctly, ties
    counting one half. Examples are sorted by score once; a resample only changes the weights, so each label costs
    a row gather and a cumulative sum of the negatives' weights (examples on rows keeps both contiguous).
    """
    prepared = []
    for j in range(labels.shape[1]):
        order = np.argsort(probs[:, j], kind="stable")
        scores = probs[order, j]
        new_group = np.r_[True, scores[1:] != scores[:-1]]
        group = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        ends = np.r_[starts[1:], scores.size] - 1
        ties = None if starts.size == scores.size else (starts[group], ends[group])
        prepared.append((order, labels[order, j].astype(bool), ties))

    def auc(weights: np.ndarray) -> np.ndarray:
        out = np.empty((weights.shape[1], len(prepared)))
        for j, (order, positive, ties) in enumerate(prepared):
            w = weights[order]
            neg = np.where(positive[:, None], 0.0, w)
            neg_up_to = np.cumsum(neg, axis=0)
            if ties is None:
                credit = neg_up_to - 0.5 * neg  # negatives strictly below, plus half of the example itself if tied
            else:
                first, last = ties  # each example's group of equal scores, in sorted positions
                below = neg_up_to[first] - neg[first]
                credit = below + 0.5 * (neg_up_to[last] - below)
            pos_w = w[positive]
            right = (pos_w * credit[positive]).sum(axis=0)
            pairs = pos_w.sum(axis=0) * neg_up_to[-1]
            out[:, j] = np.divide(right, pairs, out=np.full_like(right, np.nan), where=pairs > 0)
        return out

    return auc


def _metric_function(
    task: str, metric: str, labels: np.ndarray, probs: np.ndarray, thresholds: float | np.ndarray | None
) -> MetricFunction:
    """The metric of the examples idx (B, m) -> (B,), equal to compute_metrics on labels[idx], probs[idx] row by row.

    Degenerate resamples follow compute_metrics: multiclass macro/weighted F1 average over the classes present in
    the resample's labels or predictions (sklearn's default); multilabel macro F1 counts a label with nothing true
    and nothing predicted as 0 (zero_division=0); macro ROC-AUC skips labels with a single class in the resample
    and is NaN when every label has one class (that resample is then dropped, see _interval).
    """
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    n = labels.shape[0]

    if task == "multiclass":
        preds = probs.argmax(axis=1)
        correct = (preds == labels).astype(float)
        if metric == "accuracy":
            return lambda idx: correct[idx].mean(axis=-1)
        eye = np.eye(probs.shape[1])
        columns = np.hstack([eye[labels] * correct[:, None], eye[labels], eye[preds]])  # tp, true, predicted

        def f1(idx: np.ndarray) -> np.ndarray:
            tp, true, pred = np.split(_resample_weights(idx, n).T @ columns, 3, axis=1)
            scores, present = _f1_from_counts(tp, true, pred)
            if metric == "f1_macro":
                return (scores * present).sum(axis=1) / present.sum(axis=1)
            return (scores * true).sum(axis=1) / true.sum(axis=1)  # f1_weighted: support-weighted

        return f1

    thr = 0.5 if thresholds is None else thresholds
    preds = (probs >= np.broadcast_to(np.asarray(thr, dtype=float), (probs.shape[1],))).astype(int)
    if metric == "hamming_score":
        inter = np.logical_and(labels, preds).sum(axis=1)
        union = np.logical_or(labels, preds).sum(axis=1)
        per_example = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
        return lambda idx: per_example[idx].mean(axis=-1)
    if metric == "exact_match":
        exact = (labels == preds).all(axis=1).astype(float)
        return lambda idx: exact[idx].mean(axis=-1)
    if metric == "roc_auc_macro":
        auc = _roc_auc_columns(labels, probs)

        def roc_auc_macro(idx: np.ndarray) -> np.ndarray:
            per_label = auc(_resample_weights(idx, n))
            defined = ~np.isnan(per_label)
            total = np.where(defined, per_label, 0.0).sum(axis=1)
            count = defined.sum(axis=1)
            return np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0)

        return roc_auc_macro
    columns = np.hstack([labels * preds, labels, preds]).astype(float)  # tp, true, predicted per label

    def f1(idx: np.ndarray) -> np.ndarray:
        tp, true, pred = np.split(_resample_weights(idx, n).T @ columns, 3, axis=1)
        if metric == "f1_macro":
            return _f1_from_counts(tp, true, pred)[0].mean(axis=1)
        return _f1_from_counts(tp.sum(axis=1), true.sum(axis=1), pred.sum(axis=1))[0]  # f1_micro

    return f1


def _on_index_rows(fn: MetricFunction) -> Callable:
    """Adapt fn to scipy.stats.bootstrap's vectorised calling convention (any leading axes, resampled axis last)."""

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx)
        return fn(idx.reshape(-1, idx.shape[-1])).reshape(idx.shape[:-1])

    return statistic


def _point_value(task: str, metric: str, labels, probs, label_names, thresholds) -> float | None:
    """The value the tool reports (compute_metrics), which also validates the inputs."""
    thr = 0.5 if thresholds is None else thresholds
    value = compute_metrics(task, labels, probs, label_names, thr)[metric]
    return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------------------------------


def _interval(
    data: tuple[np.ndarray, ...],
    statistic: Callable,
    *,
    resamples: int,
    confidence: float,
    method: str,
    seed: int,
    alternative: str = "two-sided",
) -> dict:
    """scipy.stats.bootstrap on index samples, with resamples whose metric is undefined (NaN) dropped.

    BCa needs every resample and every jackknife value; when some are NaN, or the bootstrap distribution is
    constant (a constant predictor's ROC-AUC), BCa is undefined and the percentile interval of the defined
    resamples is returned instead, and 'method' says so.
    """
    if not 0 < confidence < 1:
        raise DistilbenchError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise DistilbenchError(f"resamples must be at least 1, got {resamples}")
    batch = max(1, _BATCH_ELEMENTS // max(len(d) for d in data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)  # handled below
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN statistics of degenerate resamples
        result = sps.bootstrap(
            data,
            statistic,
            n_resamples=resamples,
            batch=batch,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            method=method,
            alternative=alternative,
            rng=np.random.default_rng(seed),
        )
    distribution = np.asarray(result.bootstrap_distribution, dtype=float)
    undefined = int(np.isnan(distribution).sum())
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    used = method
    if undefined or math.isnan(low) or math.isnan(high):
        used = "percentile"
        defined = distribution[~np.isnan(distribution)]
        tail = (1 - confidence) / 2 if alternative == "two-sided" else 1 - confidence
        if defined.size == 0:
            low = high = math.nan
        else:
            low = float(np.quantile(defined, tail)) if alternative != "less" else -math.inf
            high = float(np.quantile(defined, 1 - tail)) if alternative != "greater" else math.inf
    return {"low": low, "high": high, "method": used, "undefined_resamples": undefined}


def _finite_or_none(x: float | None) -> float | None:
    """A bound for JSON: None for an undefined (NaN) or absent (infinite, one-sided) bound."""
    return None if x is None or not math.isfinite(x) else float(x)


def bootstrap_ci(
    task: str,
    labels: np.ndarray,
    probs: np.ndarray,
    label_names: list[str],
    metric: str | None = None,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    thresholds: float | np.ndarray | None = None,
    method: str = "percentile",
) -> dict:
    """Confidence interval for a test metric by bootstrap over test examples (scipy.stats.bootstrap).

    value is exactly compute_metrics' number; the interval is the percentile interval by default ('BCa' on
    request, see the module docstring for why). Resamples where the metric is undefined
    (macro ROC-AUC when every label has one class) are dropped and counted in undefined_resamples; when the value
    itself is undefined, value/low/high are None. Returns {"metric", "value", "low", "high", "confidence",
    "resamples", "method", "undefined_resamples", "n_examples"}.
    """
    metric = _check_metric(task, metric)
    _check_method(method)
    value = _point_value(task, metric, labels, probs, label_names, thresholds)
    n = int(np.asarray(labels).shape[0])
    out = {
        "metric": metric,
        "value": value,
        "low": None,
        "high": None,
        "confidence": confidence,
        "resamples": resamples,
        "method": method,
        "undefined_resamples": 0,
        "n_examples": n,
    }
    if value is None:
        return out
    statistic = _on_index_rows(_metric_function(task, metric, labels, probs, thresholds))
    ci = _interval((np.arange(n),), statistic, resamples=resamples, confidence=confidence, method=method, seed=seed)
    out.update(
        low=_finite_or_none(ci["low"]),
        high=_finite_or_none(ci["high"]),
        method=ci["method"],
        undefined_resamples=ci["undefined_resamples"],
    )
    return out


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on paired correctness: two-sided binomial test of the discordant pairs against 1/2.

    discordant = [a right and b wrong, a wrong and b right]; with no discordant pairs the models never disagree
    on correctness and p = 1.
    """
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    p = 1.0 if only_a + only_b == 0 else float(sps.binomtest(only_b, only_a + only_b, 0.5).pvalue)
    return {"mcnemar_p": p, "discordant": [only_a, only_b]}


@dataclass(frozen=True)
class BootstrapSettings:
    """How a bootstrap interval is drawn: the number of resamples, the confidence level, the seed of the resampling,
    the method (CI_METHODS) and the alternative ("two-sided", or "greater" for a one-sided lower bound)."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    method: str = "percentile"
    alternative: str = "two-sided"


def _paired(
    task,
    labels,
    probs_a,
    probs_b,
    label_names,
    metric,
    *,
    thresholds_a,
    thresholds_b,
    bootstrap: BootstrapSettings,
) -> dict:
    """Paired bootstrap of metric(b) - metric(a): one resample of example indices scores both models."""
    resamples, confidence, method = bootstrap.resamples, bootstrap.confidence, bootstrap.method
    metric = _check_metric(task, metric)
    _check_method(method)
    value_a = _point_value(task, metric, labels, probs_a, label_names, thresholds_a)
    value_b = _point_value(task, metric, labels, probs_b, label_names, thresholds_b)
    n = int(np.asarray(labels).shape[0])
    out = {
        "metric": metric,
        "value_a": value_a,
        "value_b": value_b,
        "difference_points": None,
        "low": None,
        "high": None,
        "confidence": confidence,
        "resamples": resamples,
        "method": method,
        "undefined_resamples": 0,
        "n_examples": n,
        "mcnemar_p": None,
        "discordant": None,
    }
    if task == "multiclass":
        labels_int = np.asarray(labels).astype(int)
        out.update(
            mcnemar_exact(
                np.asarray(probs_a).argmax(axis=1) == labels_int, np.asarray(probs_b).argmax(axis=1) == labels_int
            )
        )
    if value_a is None or value_b is None:
        return out
    fa = _metric_function(task, metric, labels, probs_a, thresholds_a)
    fb = _metric_function(task, metric, labels, probs_b, thresholds_b)
    statistic = _on_index_rows(lambda idx: 100.0 * (fb(idx) - fa(idx)))
    ci = _interval(
        (np.arange(n),),
        statistic,
        resamples=resamples,
        confidence=confidence,
        method=method,
        seed=bootstrap.seed,
        alternative=bootstrap.alternative,
    )
    out.update(
        difference_points=100.0 * (value_b - value_a),
        low=_finite_or_none(ci["low"]),
        high=_finite_or_none(ci["high"]),
        method=ci["method"],
        undefined_resamples=ci["undefined_resamples"],
    )
    return out


def paired_difference(
    task: str,
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    label_names: list[str],
    metric: str | None = None,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    thresholds_a: float | np.ndarray | None = None,
    thresholds_b: float | np.ndarray | None = None,
    method: str = "percentile",
) -> dict:
    """metric(b) - metric(a) in points on the same test examples, with a paired bootstrap interval.

    Pairs of predictions are resampled together (one row of example indices scores both models), so what the two
    models share (hard and easy examples) cancels out of the interval. For multiclass, McNemar's exact test on
    per-example correctness is added: discordant = [a right and b wrong, a wrong and b right], p two-sided
    (multilabel: None, there is no single notion of a correct example there). Returns {"metric", "value_a",
    "value_b", "difference_points", "low", "high", "confidence", "resamples", "method", "undefined_resamples",
    "n_examples", "mcnemar_p", "discordant"}.
    """
    return _paired(
        task,
        labels,
        probs_a,
        probs_b,
        label_names,
        metric,
        thresholds_a=thresholds_a,
        thresholds_b=thresholds_b,
        bootstrap=BootstrapSettings(resamples, confidence, seed, method),
    )


def _per_seed(thresholds, n_seeds: int, what: str) -> list:
    """One threshold setting per seed: None/a scalar/an (L,) array for all, or a list with one per seed."""
    if isinstance(thresholds, (list, tuple)):
        if len(thresholds) != n_seeds:
            raise DistilbenchError(f"{what}: {len(thresholds)} threshold settings for {n_seeds} seeds")
        return list(thresholds)
    return [thresholds] * n_seeds


def _seeded_interval(
    n: int, models: list[tuple[float, list[MetricFunction]]], *, resamples: int, confidence: float, seed: int
) -> dict:
    """Percentile interval of sum_k coef_k * (mean over model k's seeds of its metric), by a two-level bootstrap:
    each resample draws every model's seeds with replacement (independently) and one resample of the n test
    examples that scores every drawn seed of every model (seeds and examples are crossed: every seed predicts the
    same examples, so the examples are drawn once and shared, which keeps comparisons paired)."""
    # scipy resamples only samples of two or more: a model with one seed keeps it in every resample
    seed_ids = {k: np.arange(len(fs)) for k, (_, fs) in enumerate(models) if len(fs) > 1}

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        examples = samples[-1]
        shape = examples.shape[:-1]
        examples = examples.reshape(-1, examples.shape[-1])
        drawn = dict(zip(seed_ids, samples[:-1]))
        total = np.zeros(examples.shape[0])
        for k, (coef, fs) in enumerate(models):
            per_seed = np.stack([f(examples) for f in fs], axis=1)  # (B, S): every seed on the same examples
            if k in drawn:
                seeds = np.broadcast_to(drawn[k], shape + drawn[k].shape[-1:]).reshape(-1, drawn[k].shape[-1])
                per_seed = np.take_along_axis(per_seed, seeds, axis=1)
            total = total + coef * per_seed.mean(axis=1)
        return total.reshape(shape)

    data = (*seed_ids.values(), np.arange(n))
    return _interval(data, statistic, resamples=resamples, confidence=confidence, method="percentile", seed=seed)


def bootstrap_ci_over_seeds(
    task: str,
    labels: np.ndarray,
    probs: Sequence[np.ndarray],
    label_names: list[str],
    metric: str | None = None,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    thresholds=None,
) -> dict:
    """Interval for a model's mean-over-seeds test metric: seeds and test examples resampled together (the
    two-level bootstrap of paired_difference_over_seeds), so it holds both the seed-to-seed spread and the test
    set's sampling error. With one seed it is bootstrap_ci's percentile interval. Returns bootstrap_ci's keys
    plus "n_seeds", "values" (per seed) and "std_over_seeds" (sample standard deviation, 0 for one seed)."""
    metric = _check_metric(task, metric)
    probs = list(probs)
    if not probs:
        raise DistilbenchError("bootstrap_ci_over_seeds needs the probabilities of at least one seed")
    thr = _per_seed(thresholds, len(probs), "model")
    values = [_point_value(task, metric, labels, p, label_names, t) for p, t in zip(probs, thr)]
    n = int(np.asarray(labels).shape[0])
    out = {
        "metric": metric,
        "value": None,
        "low": None,
        "high": None,
        "confidence": confidence,
        "resamples": resamples,
        "method": "percentile",
        "undefined_resamples": 0,
        "n_examples": n,
        "n_seeds": len(probs),
        "values": values,
        "std_over_seeds": None,
    }
    if None in values:
        return out
    out.update(value=float(np.mean(values)), std_over_seeds=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    fs = [_metric_function(task, metric, labels, p, t) for p, t in zip(probs, thr)]
    ci = _seeded_interval(n, [(1.0, fs)], resamples=resamples, confidence=confidence, seed=seed)
    out.update(
        low=_finite_or_none(ci["low"]), high=_finite_or_none(ci["high"]), undefined_resamples=ci["undefined_resamples"]
    )
    return out


def paired_difference_over_seeds(
    task: str,
    labels: np.ndarray,
    probs_a: Sequence[np.ndarray],
    probs_b: Sequence[np.ndarray],
    label_names: list[str],
    metric: str | None = None,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    thresholds_a=None,
    thresholds_b=None,
) -> dict:
    """mean-over-seeds metric(b) - mean-over-seeds metric(a) in points, with a two-level bootstrap interval.

    Each resample draws the seeds of a and of b with replacement (independently: seed 1 of a has nothing to do with
    seed 1 of b), then one resample of the test examples that scores every drawn seed of both models. Seeds and
    examples are crossed, not nested (every seed predicts the same examples), so the examples are drawn once per
    resample and shared, which keeps the comparison paired. This is scipy.stats.bootstrap with three samples
    (seed ids of a, seed ids of b, example ids), paired=False, percentile interval (BCa's jackknife over two or
    three seeds is meaningless). With few seeds the seed-to-seed spread is underestimated by (S - 1) / S in
    variance, and a single seed per model reduces this to paired_difference's interval.
    Returns paired_difference's keys without McNemar, plus "n_seeds": [S_a, S_b], "values_a", "values_b" (per seed).
    """
    metric = _check_metric(task, metric)
    probs_a, probs_b = list(probs_a), list(probs_b)
    if not probs_a or not probs_b:
        raise DistilbenchError("paired_difference_over_seeds: each model needs the probabilities of at least one seed")
    thr_a = _per_seed(thresholds_a, len(probs_a), "model a")
    thr_b = _per_seed(thresholds_b, len(probs_b), "model b")
    values_a = [_point_value(task, metric, labels, p, label_names, t) for p, t in zip(probs_a, thr_a)]
    values_b = [_point_value(task, metric, labels, p, label_names, t) for p, t in zip(probs_b, thr_b)]
    n = int(np.asarray(labels).shape[0])
    out = {
        "metric": metric,
        "value_a": None,
        "value_b": None,
        "difference_points": None,
        "low": None,
        "high": None,
        "confidence": confidence,
        "resamples": resamples,
        "method": "percentile",
        "undefined_resamples": 0,
        "n_examples": n,
        "n_seeds": [len(probs_a), len(probs_b)],
        "values_a": values_a,
        "values_b": values_b,
    }
    if None in values_a or None in values_b:
        return out
    out.update(value_a=float(np.mean(values_a)), value_b=float(np.mean(values_b)))
    out["difference_points"] = 100.0 * (out["value_b"] - out["value_a"])
    fa = [_metric_function(task, metric, labels, p, t) for p, t in zip(probs_a, thr_a)]
    fb = [_metric_function(task, metric, labels, p, t) for p, t in zip(probs_b, thr_b)]

    ci = _seeded_interval(n, [(-100.0, fa), (100.0, fb)], resamples=resamples, confidence=confidence, seed=seed)
    out.update(
        low=_finite_or_none(ci["low"]), high=_finite_or_none(ci["high"]), undefined_resamples=ci["undefined_resamples"]
    )
    return out


# ---------------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------------


def verdict(difference: dict, margin_points: float = 1.0, *, n_examples: int | None = None, power: float = 0.8) -> dict:
    """Non-inferiority of b against a within a margin, from a paired difference (b - a, points, higher better).

    - within: the whole interval lies above -margin (low > -margin): b loses less than the margin, if anything;
    - worse: the whole interval lies below -margin (high < -margin): b loses more than the margin;
    - inconclusive: the interval contains -margin.

    What would settle an inconclusive verdict: interval widths shrink like 1/sqrt(n). With d the observed
    difference, h the half-width on the side facing the margin (d - low when d > -margin, high - d otherwise),
    z = z_{(1+confidence)/2}, se = h / z and gap g = |d + margin|, the interval at n' examples clears the margin
    with probability `power` (normal approximation, if the true difference is d) when se * sqrt(n / n') =
    g / (z + z_power), i.e.

        n' = n * (h * (z + z_power) / (z * g))^2

    (power=0.5 gives the plain n' = n * (h / g)^2, where the expected interval just touches the margin).
    examples_needed is n' (total, not extra); seeds_needed applies the same formula to the number of seeds when
    the difference came from paired_difference_over_seeds, assuming the spread comes from seeds (if it comes from
    examples, more seeds will not help). None when decisive, or when d sits on the margin (g = 0).
    """
    if margin_points < 0:
        raise DistilbenchError(f"the margin is a loss in points and must not be negative, got {margin_points}")
    if not 0 < power < 1:
        raise DistilbenchError(f"power must lie strictly between 0 and 1, got {power}")
    d, low, high = difference.get("difference_points"), difference.get("low"), difference.get("high")
    n = n_examples if n_examples is not None else difference.get("n_examples")
    metric = difference.get("metric", "metric")
    out = {
        "verdict": "inconclusive",
        "metric": metric,
        "margin_points": margin_points,
        "difference_points": d,
        "low": low,
        "high": high,
        "confidence": difference.get("confidence"),
        "n_examples": n,
        "examples_needed": None,
        "more_examples": None,
        "seeds_needed": None,
        "message": "",
    }
    if d is None or low is None or high is None:
        out["message"] = f"no verdict: the {metric} difference or its interval is undefined"
        return out
    span = f"{d:+.1f} points [{low:+.1f}, {high:+.1f}]"
    if low > -margin_points:
        out["verdict"] = "within"
        out["message"] = f"within the margin of {margin_points:g} points on {metric}: {span}"
        return out
    if high < -margin_points:
        out["verdict"] = "worse"
        out["message"] = f"worse by more than the margin of {margin_points:g} points on {metric}: {span}"
        return out
    gap = abs(d + margin_points)
    half = d - low if d > -margin_points else high - d
    z = float(sps.norm.ppf((1 + (difference.get("confidence") or 0.95)) / 2))
    factor = (half * (z + float(sps.norm.ppf(power))) / (z * gap)) ** 2 if gap > 0 else math.inf
    settle = "no number of examples would settle it: the estimate sits on the margin"
    if math.isfinite(factor) and n:
        out["examples_needed"] = int(math.ceil(n * factor))
        out["more_examples"] = max(0, out["examples_needed"] - int(n))
        settle = f"about {out['examples_needed']} test examples would settle it ({power:.0%} chance, if {d:+.1f} holds)"
        seeds = difference.get("n_seeds")
        if seeds:
            out["seeds_needed"] = int(math.ceil(min(seeds) * factor))
            settle += f", or about {out['seeds_needed']} seeds per model if the spread comes from seeds"
    out["message"] = f"inconclusive against the margin of {margin_points:g} points on {metric}: {span}; {settle}"
    return out


# ---------------------------------------------------------------------------------------------------------------
# Trivial baselines and "did the model learn anything"
# ---------------------------------------------------------------------------------------------------------------


def trivial_baseline_probs(task: str, train_labels: np.ndarray, n_test: int, label_names: list[str]) -> dict:
    """Constant probability arrays (n_test, K or L) of the trivial predictors, by name.

    multiclass: majority_class (one-hot on the most frequent training class; ties to the lowest id).
    multilabel: no_label (all zeros) and label_priors (each label's training prevalence as its probability:
    thresholded at 0.5 it predicts the labels most training examples carry; its ROC-AUC is 0.5).
    """
    train_labels = np.asarray(train_labels)
    if task == "multiclass":
        counts = np.bincount(train_labels.astype(int), minlength=len(label_names))
        probs = np.zeros((n_test, len(label_names)))
        probs[:, int(np.argmax(counts))] = 1.0
        return {"majority_class": probs}
    if task == "multilabel":
        if train_labels.ndim != 2 or train_labels.shape[1] != len(label_names):
            raise DistilbenchError(
                f"multilabel training labels must be (n, {len(label_names)}), got {train_labels.shape}"
            )
        priors = train_labels.astype(float).mean(axis=0)
        return {"no_label": np.zeros((n_test, len(label_names))), "label_priors": np.tile(priors, (n_test, 1))}
    raise DistilbenchError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")


def _baseline_description(task: str, name: str, train_labels: np.ndarray, label_names: list[str]) -> str:
    if name == "majority_class":
        counts = np.bincount(np.asarray(train_labels).astype(int), minlength=len(label_names))
        return f"predicting the majority class ({label_names[int(np.argmax(counts))]})"
    if name == "no_label":
        return "predicting no label"
    return "predicting each label with its training prevalence"


def trivial_baselines(
    task: str,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    label_names: list[str],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """The trivial predictors' headline test metrics with bootstrap intervals, and the best of them per metric.

    Values come from compute_metrics on the constant probability arrays of trivial_baseline_probs (threshold 0.5),
    so they are directly comparable with a model's. Returns {"baselines": {name: {"description", "metrics":
    {metric: bootstrap_ci(...)}}}, "best": {metric: name}} (best ignores undefined values).
    """
    test_labels = np.asarray(test_labels)
    all_probs = trivial_baseline_probs(task, train_labels, test_labels.shape[0], label_names)
    baselines = {}
    for name, probs in all_probs.items():
        baselines[name] = {
            "description": _baseline_description(task, name, train_labels, label_names),
            "metrics": {
                m: bootstrap_ci(
                    task, test_labels, probs, label_names, m, resamples=resamples, confidence=confidence, seed=seed
                )
                for m in HEADLINE_METRICS[task]
            },
        }
    best = {}
    for m in HEADLINE_METRICS[task]:
        scored = {
            name: b["metrics"][m]["value"] for name, b in baselines.items() if b["metrics"][m]["value"] is not None
        }
        best[m] = max(scored, key=scored.get) if scored else None  # ties: the first baseline listed
    return {"baselines": baselines, "best": best}


def learned_nothing(
    task: str,
    labels: np.ndarray,
    probs: np.ndarray,
    baseline_probs: np.ndarray,
    label_names: list[str],
    metric: str | None = None,
    alpha: float = 0.05,
    *,
    model_name: str = "the model",
    baseline_name: str = "the best trivial baseline",
    resamples: int = 1000,
    seed: int = 0,
    thresholds: float | np.ndarray | None = None,
) -> dict:
    """Whether a model fails to beat a trivial baseline significantly on a metric (higher is better).

    One-sided paired bootstrap at level alpha: the model beats the baseline when the lower bound of the one-sided
    (1 - alpha) interval of metric(model) - metric(baseline) is above 0 (equivalently, the bootstrap rejects "no
    better" at alpha). The baseline is scored at threshold 0.5, the model at `thresholds`. Returns
    {"learned_nothing", "metric", "model_value", "baseline_value", "difference_points", "low", "alpha", "message"}.
    """
    if not 0 < alpha < 1:
        raise DistilbenchError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    diff = _paired(
        task,
        labels,
        baseline_probs,
        probs,
        label_names,
        metric,
        thresholds_a=None,
        thresholds_b=thresholds,
        bootstrap=BootstrapSettings(resamples, 1 - alpha, seed, "percentile", "greater"),
    )
    metric, model_value, base_value = diff["metric"], diff["value_b"], diff["value_a"]
    low, d = diff["low"], diff["difference_points"]
    out = {
        "learned_nothing": True,
        "metric": metric,
        "model_value": model_value,
        "baseline_value": base_value,
        "difference_points": d,
        "low": low,
        "alpha": alpha,
        "message": "",
    }
    if d is None or low is None:
        out["message"] = f"{model_name}: {metric} is undefined for it or for {baseline_name}, no test possible"
        return out
    out["learned_nothing"] = not low > 0
    detail = f"{metric} {model_value:.2f}, difference {d:+.1f} points, one-sided {1 - alpha:.0%} lower bound {low:+.1f}"
    if out["learned_nothing"]:
        out["message"] = f"{model_name} does not beat {baseline_name} ({base_value:.2f}) significantly: {detail}"
    else:
        out["message"] = f"{model_name} beats {baseline_name} ({base_value:.2f}): {detail}"
    return out


def select_metric_default(task: str, head_init: str = "random") -> str:
    """The metric to pick the best epoch/model by: accuracy for multiclass; for multilabel, the hamming score when
    the output layer starts from a linear probe (`head_init` 'probe'), the validation loss when it starts random.

    Multilabel data are usually imbalanced (toxic comments: ~10 % of comments carry any label, some labels under
    1 %), and the hamming score counts an empty prediction on an empty row as perfect, so predicting nothing scores
    ~0.9 and beats a model that finds the labels but makes a few false alarms. From a random output layer the
    first epochs can predict nothing, so there the validation loss (mean BCE over every label of every example,
    the Trainer's own default) picks: it scores each label's probabilities without a threshold, and a model that
    learned nothing scores at best the entropy of the label priors. A probed model predicts labels from its first
    step, and the loss misleads there: its probabilities sharpen with every epoch, so a few confident errors raise
    the loss while its decisions improve (toxic comments: the loss kept the first epoch on every seed, 0.9280 test
    hamming score, against 0.9344 for the epochs the hamming score kept; measured in the README). Whatever the
    metric, an epoch that finds no positive label on validation never wins over one that does (choose_best).
    Macro F1 rests on a handful of validation positives of the rarest labels at the 0.5 threshold, so one epoch
    that starts to fire on a rare label can win it while losing hamming score and ROC-AUC.
    """
    if task not in TASKS:
        raise DistilbenchError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    if task == "multiclass":
        return "accuracy"
    return "hamming_score" if head_init == "probe" else "loss"
