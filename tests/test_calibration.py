"""Calibration: expected calibration error on cases worked by hand, temperature scaling that recovers a known
temperature, and decisions that never change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.calibration import (
    apply_calibration,
    calibrate_thresholds,
    expected_calibration_error,
    fit_calibration,
    reliability_curve,
)


def calibrated_multiclass(n: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return np.minimum(labels, classes - 1), probs


def calibrated_multilabel(n: int, labels: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = 1 / (1 + np.exp(-rng.normal(-1, 2, (n, labels))))
    return (rng.random((n, labels)) < probs).astype(int), probs


def sharpen_multiclass(probs: np.ndarray, power: float) -> np.ndarray:
    """p^k renormalised: softmax(k log p), the model at temperature 1/k."""
    sharp = probs**power
    return sharp / sharp.sum(axis=1, keepdims=True)


def sharpen_multilabel(probs: np.ndarray, power: float) -> np.ndarray:
    return 1 / (1 + np.exp(-power * np.log(probs / (1 - probs))))


# --------------------------------------------------------------------------- ECE by hand


def test_multiclass_ece_of_a_small_example_worked_by_hand():
    # top probabilities 0.9 (right), 0.75 (wrong), 0.55 (right), 0.65 (right); five bins of width 0.2:
    #   (0.8, 1.0]: 0.9 right          -> |1 - 0.9| * 1/4           = 0.025
    #   (0.6, 0.8]: 0.75 wrong, 0.65 right -> |0.5 - 0.7| * 2/4     = 0.1
    #   (0.4, 0.6]: 0.55 right         -> |1 - 0.55| * 1/4          = 0.1125
    probs = np.array([[0.9, 0.1], [0.25, 0.75], [0.55, 0.45], [0.35, 0.65]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error("multiclass", labels, probs, bins=5) == pytest.approx(0.2375)
    curve = reliability_curve("multiclass", labels, probs, bins=5)
    assert [(b["lower"], b["upper"], b["count"]) for b in curve] == [(0.4, 0.6, 1), (0.6, 0.8, 2), (0.8, 1.0, 1)]
    assert curve[1]["confidence"] == pytest.approx(0.7) and curve[1]["accuracy"] == pytest.approx(0.5)


def test_multilabel_ece_is_the_mean_of_each_labels_binary_ece():
    # label 0: probabilities 0.2, 0.2, present once in two -> |0.5 - 0.2| = 0.3; label 1: 0.9, 0.9, present
    # twice -> |1 - 0.9| = 0.1; mean 0.2
    probs = np.array([[0.2, 0.9], [0.2, 0.9]])
    labels = np.array([[0, 1], [1, 1]])
    assert expected_calibration_error("multilabel", labels, probs, bins=10) == pytest.approx(0.2)
    pooled = reliability_curve("multilabel", labels, probs, bins=10)
    assert sum(b["count"] for b in pooled) == 4
    only_second = reliability_curve("multilabel", labels, probs, bins=10, label=1)
    assert only_second == [{"lower": 0.8, "upper": 0.9, "count": 2, "confidence": 0.9, "accuracy": 1.0}]


def test_the_reliability_curve_adds_up_to_the_ece():
    labels, probs = calibrated_multiclass(2000)
    sharp = sharpen_multiclass(probs, 2.5)
    curve = reliability_curve("multiclass", labels, sharp)
    assert sum(b["count"] for b in curve) == 2000
    assert all(b["lower"] < b["confidence"] <= b["upper"] for b in curve)
    weighted = sum(b["count"] / 2000 * abs(b["accuracy"] - b["confidence"]) for b in curve)
    assert weighted == pytest.approx(expected_calibration_error("multiclass", labels, sharp))


# --------------------------------------------------------------------------- temperature scaling


def test_an_over_confident_multiclass_model_gets_its_temperature_back():
    labels, probs = calibrated_multiclass(6000)
    fitted = fit_calibration("multiclass", labels, sharpen_multiclass(probs, 3.0))
    assert fitted["method"] == "temperature" and fitted["fitted_on"] == 6000
    assert len(fitted["temperature"]) == 1 and fitted["temperature"][0] == pytest.approx(3.0, rel=0.1)
    assert fitted["nll_after"] < fitted["nll_before"] - 0.1
    assert fitted["ece_before"] > 0.1 and fitted["ece_after"] < 0.03
    json.dumps(fitted)  # saved with the model as it is


def test_an_under_confident_model_is_sharpened():
    labels, probs = calibrated_multiclass(6000, seed=2)
    fitted = fit_calibration("multiclass", labels, sharpen_multiclass(probs, 0.5))
    assert fitted["temperature"][0] == pytest.approx(0.5, rel=0.1)
    assert fitted["ece_after"] < fitted["ece_before"]


def test_a_calibrated_model_keeps_a_temperature_near_one():
    labels, probs = calibrated_multiclass(6000, seed=3)
    assert fit_calibration("multiclass", labels, probs)["temperature"][0] == pytest.approx(1.0, abs=0.1)
    labels, probs = calibrated_multilabel(6000)
    assert fit_calibration("multilabel", labels, probs)["temperature"] == pytest.approx([1.0] * 3, abs=0.1)


def test_multilabel_gets_one_temperature_per_label_and_leaves_a_one_class_label_alone():
    labels, probs = calibrated_multilabel(6000)
    powers = np.array([3.0, 1.0, 0.5])
    sharp = np.column_stack([sharpen_multilabel(probs[:, j], k) for j, k in enumerate(powers)])
    labels[:, 1] = 0  # a label never present in these rows cannot be fitted
    fitted = fit_calibration("multilabel", labels, sharp)
    assert fitted["temperature"][0] == pytest.approx(3.0, rel=0.1)
    assert fitted["temperature"][1] == 1.0 and fitted["not_fitted"] == [1]
    assert fitted["temperature"][2] == pytest.approx(0.5, rel=0.1)
    after = apply_calibration("multilabel", sharp, fitted)
    for j in (0, 2):
        assert expected_calibration_error("multilabel", labels[:, [j]], after[:, [j]]) < expected_calibration_error(
            "multilabel", labels[:, [j]], sharp[:, [j]]
        )


def test_probabilities_of_exactly_zero_and_one_are_clipped():
    labels = np.array([0, 1, 1, 0, 1])
    hard = np.eye(2)[[0, 1, 0, 0, 1]]  # one confident mistake with probability exactly 1
    fitted = fit_calibration("multiclass", labels, hard)
    assert np.isfinite(fitted["nll_before"]) and np.isfinite(fitted["nll_after"])
    assert fitted["temperature"][0] > 1  # a confident mistake softens the model
    calibrated = apply_calibration("multiclass", hard, fitted)
    assert np.all(np.isfinite(calibrated)) and np.allclose(calibrated.sum(axis=1), 1)
    ml = fit_calibration("multilabel", np.array([[0, 1], [1, 1], [0, 0]]), np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0]]))
    assert all(np.isfinite(ml["temperature"]))


# --------------------------------------------------------------------------- decisions never change


def test_multiclass_argmax_is_the_same_before_and_after():
    labels, probs = calibrated_multiclass(3000, classes=5)
    for power in (0.3, 1.0, 4.0):
        sharp = sharpen_multiclass(probs, power)
        fitted = fit_calibration("multiclass", labels, sharp)
        after = apply_calibration("multiclass", sharp, fitted)
        assert np.array_equal(after.argmax(axis=1), sharp.argmax(axis=1))
        assert np.allclose(after.sum(axis=1), 1)
        assert not np.allclose(after, sharp) or power == 1.0
        assert calibrate_thresholds("multiclass", 0.5, fitted) == 0.5  # argmax needs no threshold


def test_every_multilabel_decision_is_the_same_at_the_mapped_thresholds():
    rng = np.random.default_rng(7)
    labels, probs = calibrated_multilabel(4000, labels=4)
    sharp = np.column_stack([sharpen_multilabel(probs[:, j], k) for j, k in enumerate([3.0, 0.4, 1.5, 8.0])])
    fitted = fit_calibration("multilabel", labels, sharp)
    assert min(fitted["temperature"]) < 0.6 and max(fitted["temperature"]) > 5
    thresholds = rng.uniform(0.02, 0.98, 4)
    sharp[:10] = thresholds  # probabilities exactly on their threshold
    sharp[10:20] = 0.0
    sharp[20:30] = 1.0
    before = sharp >= thresholds
    after = apply_calibration("multilabel", sharp, fitted) >= calibrate_thresholds("multilabel", thresholds, fitted)
    assert np.array_equal(before, after)
    assert before.any() and not before.all()
    one = calibrate_thresholds("multilabel", 0.5, fitted)  # one threshold for every label becomes one per label
    assert one.shape == (4,) and np.array_equal(sharp >= 0.5, apply_calibration("multilabel", sharp, fitted) >= one)


def test_no_calibration_changes_nothing_and_a_wrong_one_is_refused():
    labels, probs = calibrated_multiclass(100)
    assert apply_calibration("multiclass", probs, None) is probs
    thresholds = np.array([0.3, 0.6])
    assert calibrate_thresholds("multilabel", thresholds, None) is thresholds
    fitted = fit_calibration("multiclass", labels, probs)
    with pytest.raises(DistilbenchError, match="multiclass task cannot apply to a multilabel"):
        apply_calibration("multilabel", probs, fitted)
    with pytest.raises(DistilbenchError, match="needs 4"):
        apply_calibration("multilabel", probs, {"method": "temperature", "temperature": [1.0, 2.0]})
    with pytest.raises(DistilbenchError, match="unknown calibration method"):
        apply_calibration("multiclass", probs, {"method": "isotonic"})
    with pytest.raises(DistilbenchError, match="positive"):
        apply_calibration("multiclass", probs, {"method": "temperature", "temperature": [0.0]})
    with pytest.raises(DistilbenchError, match="between 0 and 1"):
        fit_calibration("multiclass", labels, probs * 2)
    with pytest.raises(DistilbenchError, match="do not match"):
        fit_calibration("multiclass", labels[:10], probs)
    with pytest.raises(DistilbenchError, match="unknown task"):
        expected_calibration_error("regression", labels, probs)
