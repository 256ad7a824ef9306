from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    jaccard_score,
    roc_auc_score,
)

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.metrics import (
    compute_metrics,
    hamming_score,
    multiclass_metrics,
    multilabel_metrics,
    primary_metric,
    summary_metrics,
    tune_thresholds,
)


def _softmax_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.normal(size=(n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- hamming_score -------------------------------------------------------------------------------


def test_hamming_score_hand_cases():
    # columns a, b, c
    y_true = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]])
    y_pred = np.array([[0, 1, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]])
    # {a,b} vs {b,c} -> 1/3; both empty -> 1; disjoint -> 0; identical -> 1
    assert hamming_score(y_true[:1], y_pred[:1]) == pytest.approx(1 / 3)
    assert hamming_score(y_true[1:2], y_pred[1:2]) == 1.0
    assert hamming_score(y_true[2:3], y_pred[2:3]) == 0.0
    assert hamming_score(y_true, y_pred) == pytest.approx((1 / 3 + 1 + 0 + 1) / 4)


def test_hamming_score_empty_true_nonempty_pred_is_zero():
    assert hamming_score(np.array([[0, 0]]), np.array([[1, 0]])) == 0.0


def test_hamming_score_matches_sklearn_samples_jaccard():
    rng = np.random.default_rng(0)
    y_true = (rng.random((200, 6)) < 0.3).astype(int)
    y_pred = (rng.random((200, 6)) < 0.3).astype(int)
    assert (y_true.sum(axis=1) == 0).any()  # the empty-row convention is exercised
    expected = jaccard_score(y_true, y_pred, average="samples", zero_division=1)
    assert hamming_score(y_true, y_pred) == pytest.approx(expected)


def test_hamming_score_shape_mismatch_raises():
    with pytest.raises(DistilbenchError):
        hamming_score(np.zeros((3, 2)), np.zeros((3, 3)))


# --- multiclass ----------------------------------------------------------------------------------


def test_multiclass_matches_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=300)
    probs = _softmax_probs(rng, 300, 4)
    preds = probs.argmax(axis=1)
    m = multiclass_metrics(labels, probs, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert m["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(labels, preds, average="weighted"))
    assert sum(c["support"] for c in m["per_class"].values()) == 300
    assert m["per_class"]["c"]["f1"] == pytest.approx(f1_score(labels, preds, average=None)[2])


def test_multiclass_confusion_matrix_hand_case():
    labels = np.array([0, 0, 1, 2, 2, 2])
    # predicted: 0, 1, 1, 2, 0, 2
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
            [0.6, 0.2, 0.2],
            [0.3, 0.3, 0.4],
        ]
    )
    m = multiclass_metrics(labels, probs, ["x", "y", "z"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["y"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["z"]["recall"] == pytest.approx(2 / 3)


def test_multiclass_per_class_includes_absent_class():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warnings may leak
        m = multiclass_metrics(labels, probs, ["neg", "pos", "neutral"])
    assert set(m["per_class"]) == {"neg", "pos", "neutral"}
    assert m["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.array(m["confusion_matrix"]).shape == (3, 3)
    assert m["accuracy"] == 1.0


def test_multiclass_label_names_mismatch_raises():
    with pytest.raises(DistilbenchError):
        multiclass_metrics(np.array([0, 1]), np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b", "c"])


def test_multiclass_label_out_of_range_raises():
    with pytest.raises(DistilbenchError):
        multiclass_metrics(np.array([0, 2]), np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b"])


# --- multilabel ----------------------------------------------------------------------------------


def test_multilabel_matches_sklearn_on_random_data():
    rng = np.random.default_rng(2)
    labels = (rng.random((150, 4)) < 0.4).astype(int)
    probs = np.clip(labels * 0.3 + rng.random((150, 4)) * 0.7, 0, 1)
    preds = (probs >= 0.5).astype(int)
    m = multilabel_metrics(labels, probs, ["a", "b", "c", "d"])
    assert m["hamming_loss"] == pytest.approx(hamming_loss(labels, preds))
    assert m["exact_match"] == pytest.approx(accuracy_score(labels, preds))
    assert m["f1_micro"] == pytest.approx(f1_score(labels, preds, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert m["hamming_score"] == pytest.approx(hamming_score(labels, preds))
    assert m["per_label"]["b"]["roc_auc"] == pytest.approx(roc_auc_score(labels[:, 1], probs[:, 1]))
    assert m["notes"] == []


def test_multilabel_single_class_label_skips_auc():
    labels = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.3], [0.2, 0.1, 0.6], [0.7, 0.3, 0.4], [0.4, 0.6, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warnings may leak
        m = multilabel_metrics(labels, probs, ["toxic", "threat", "insult"])
    assert m["per_label"]["threat"]["roc_auc"] is None
    assert m["per_label"]["threat"]["support"] == 0
    assert m["per_label"]["threat"]["precision"] == 0.0
    assert len(m["notes"]) == 1 and "threat" in m["notes"][0]
    auc_toxic = roc_auc_score(labels[:, 0], probs[:, 0])
    auc_insult = roc_auc_score(labels[:, 2], probs[:, 2])
    assert m["per_label"]["toxic"]["roc_auc"] == pytest.approx(auc_toxic)
    assert m["roc_auc_macro"] == pytest.approx((auc_toxic + auc_insult) / 2)


def test_multilabel_no_auc_at_all_gives_none():
    labels = np.zeros((3, 2), dtype=int)
    probs = np.full((3, 2), 0.2)
    m = multilabel_metrics(labels, probs, ["a", "b"])
    assert m["roc_auc_macro"] is None
    assert len(m["notes"]) == 2
    assert m["hamming_score"] == 1.0  # nothing true, nothing predicted


def test_multilabel_per_label_thresholds_change_predictions():
    labels = np.array([[1, 1], [0, 0]])
    probs = np.array([[0.4, 0.4], [0.2, 0.2]])
    default = multilabel_metrics(labels, probs, ["a", "b"])
    assert default["exact_match"] == 0.5  # row 0 predicted empty at 0.5
    assert default["per_label"]["a"]["recall"] == 0.0
    tuned = multilabel_metrics(labels, probs, ["a", "b"], thresholds=np.array([0.3, 0.5]))
    assert tuned["per_label"]["a"]["recall"] == 1.0
    assert tuned["per_label"]["b"]["recall"] == 0.0
    assert tuned["hamming_score"] == pytest.approx((1 / 2 + 1) / 2)
    # threshold is inclusive: prob == threshold counts as predicted
    both = multilabel_metrics(labels, probs, ["a", "b"], thresholds=0.4)
    assert both["exact_match"] == 1.0


def test_multilabel_bad_threshold_shape_raises():
    with pytest.raises(DistilbenchError):
        multilabel_metrics(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b"], thresholds=np.array([0.5, 0.5, 0.5]))


# --- tune_thresholds -----------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["gmean", "f1"])
def test_tune_thresholds_separable_and_single_class(criterion):
    labels = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 1]])
    probs = np.array([[0.10, 0.9], [0.20, 0.8], [0.30, 0.7], [0.35, 0.6], [0.40, 0.5], [0.45, 0.4]])
    labels[:, 1] = 1  # label 1 has a single class; label 0 separates between 0.30 and 0.35
    thr = tune_thresholds(labels, probs, criterion=criterion)
    assert thr.shape == (2,) and thr.dtype == float
    assert 0.30 < thr[0] <= 0.35
    assert thr[1] == 0.5
    preds = probs[:, 0] >= thr[0]
    assert np.array_equal(preds, labels[:, 0].astype(bool))


def test_tune_thresholds_gmean_differs_from_f1():
    # imbalanced label: F1 prefers the precise high threshold, G-mean the one catching every positive
    labels = np.array([0] * 9 + [1] * 2)[:, None]
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.72, 0.75, 0.65, 0.9])[:, None]
    # G-mean: 0.65 -> tpr=1, fpr=3/9 -> 0.816; 0.9 -> tpr=0.5, fpr=0 -> 0.707
    assert tune_thresholds(labels, probs, "gmean")[0] == pytest.approx(0.65)
    # F1: 0.9 -> p=1, r=0.5 -> 0.667; 0.65 -> p=0.4, r=1 -> 0.571
    assert tune_thresholds(labels, probs, "f1")[0] == pytest.approx(0.9)


@pytest.mark.parametrize("seed", range(5))
def test_tuned_thresholds_reach_the_best_criterion_a_brute_force_search_finds(seed):
    """Independently of roc_curve / precision_recall_curve: try every predicted probability as the threshold
    (predicted when prob >= threshold) and compute G-mean and F1 by counting; the tuned threshold reaches
    the best value, per label."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((60, 3)) < [0.1, 0.3, 0.6]).astype(int)
    labels[0], labels[1] = 1, 0  # both classes in every label
    probs = np.clip(labels * 0.2 + rng.random((60, 3)) * 0.8, 0, 1).round(3)  # informative, with ties

    def scores(y, p, threshold):
        predicted = p >= threshold
        tp, fp = np.sum(predicted & (y == 1)), np.sum(predicted & (y == 0))
        fn, tn = np.sum(~predicted & (y == 1)), np.sum(~predicted & (y == 0))
        gmean = np.sqrt(tp / (tp + fn) * tn / (tn + fp))
        f1 = 2 * tp / (2 * tp + fp + fn)
        return {"gmean": gmean, "f1": f1}

    for criterion in ("gmean", "f1"):
        tuned = tune_thresholds(labels, probs, criterion)
        for j in range(3):
            best = max(scores(labels[:, j], probs[:, j], t)[criterion] for t in np.unique(probs[:, j]))
            assert scores(labels[:, j], probs[:, j], tuned[j])[criterion] == pytest.approx(best), (criterion, j)


def test_calibrated_thresholds_undo_a_known_miscalibration():
    """Labels drawn with probability sigmoid(a * logit(p) + b) for the model's p: Platt scaling recovers a and b,
    so the threshold is where that probability crosses 0.5, p = sigmoid(-b / a). A calibrated model (a=1, b=0)
    keeps 0.5; one that over-predicts (b=-1, a=2) needs p >= sigmoid(0.5) = 0.62; scores that rank the label
    backwards (a < 0) keep 0.5."""
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.02, 0.98, size=(40_000, 3))
    logits = np.log(probs / (1 - probs))
    truth = 1 / (1 + np.exp(-np.stack([logits[:, 0], 2 * logits[:, 1] - 1, -logits[:, 2]], axis=1)))
    labels = (rng.random(probs.shape) < truth).astype(int)
    thresholds = tune_thresholds(labels, probs, "calibrated")
    assert thresholds[0] == pytest.approx(0.5, abs=0.01)
    assert thresholds[1] == pytest.approx(1 / (1 + np.exp(-0.5)), abs=0.01)
    assert thresholds[2] == 0.5  # no positive slope


def test_tune_thresholds_unknown_criterion_raises():
    with pytest.raises(DistilbenchError):
        tune_thresholds(np.array([[0], [1]]), np.array([[0.2], [0.8]]), criterion="youden")


# --- dispatch, summaries, serialisation ----------------------------------------------------------


def test_compute_metrics_dispatch_and_json():
    rng = np.random.default_rng(3)
    mc = compute_metrics("multiclass", rng.integers(0, 3, 20), _softmax_probs(rng, 20, 3), ["a", "b", "c"])
    ml_labels = (rng.random((20, 3)) < 0.5).astype(int)
    ml_labels[:, 2] = 0
    ml = compute_metrics(
        "multilabel", ml_labels, rng.random((20, 3)), ["a", "b", "c"], thresholds=np.array([0.4, 0.5, 0.6])
    )
    assert "confusion_matrix" in mc and "per_label" in ml
    for m in (mc, ml):
        assert json.loads(json.dumps(m)) == m  # plain python types only (numpy types would fail or change)


def test_compute_metrics_unknown_task_raises():
    with pytest.raises(DistilbenchError):
        compute_metrics("regression", np.array([0]), np.array([[1.0]]), ["a"])
    with pytest.raises(DistilbenchError):
        primary_metric("regression")


def test_primary_metric():
    assert primary_metric("multiclass") == "accuracy"
    assert primary_metric("multilabel") == "hamming_score"


def test_summary_metrics_keeps_only_scalars():
    labels = np.array([[1, 0], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.3]])
    s = summary_metrics(multilabel_metrics(labels, probs, ["a", "b"]))
    assert set(s) == {"hamming_score", "hamming_loss", "exact_match", "f1_micro", "f1_macro", "roc_auc_macro"}
    mc = summary_metrics(multiclass_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.4, 0.6]]), ["a", "b"]))
    assert mc == {"accuracy": 1.0, "f1_macro": 1.0, "f1_weighted": 1.0}


def test_multilabel_with_one_label_scores_that_labels_positives():
    """One label column reads as a binary task to scikit-learn, which would average over classes 0 and 1."""
    from distilbench.evaluation.metrics import compute_metrics

    labels = np.array([[1], [0], [0], [0], [1], [0]])
    probs = np.array([[0.9], [0.8], [0.1], [0.2], [0.3], [0.1]])  # one hit, one false alarm, one miss
    result = compute_metrics("multilabel", labels, probs, ["toxic"])
    assert result["f1_macro"] == pytest.approx(0.5) and result["f1_micro"] == pytest.approx(0.5)
    assert result["per_label"]["toxic"]["precision"] == pytest.approx(0.5)
    assert result["per_label"]["toxic"]["support"] == 2
