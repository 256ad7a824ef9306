"""The statistics of a cascade (evaluation.cascade) on cases with known answers: the p-values are valid and find
their worst case, the chosen threshold answers what a perfect small model should, nothing is certified where
nothing can be, and the guarantee holds on fresh data in repeated draws where the raw validation curve fails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.cascade import (
    CascadeTarget,
    _trinomial_tail,
    betting_p_value,
    candidate_thresholds,
    clopper_pearson_loss_bound,
    combine_stages,
    confidence_scores,
    rescale_to_thresholds,
    row_scores,
    select_cascade,
    trinomial_p_value,
)

K = 4  # classes


def class_probs(labels: np.ndarray, right: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Probabilities whose top class is the label where `right`, the next class otherwise, with that top
    probability `confidence` (> 1/K) and the rest spread evenly."""
    n = labels.size
    top = np.where(right, labels, (labels + 1) % K)
    probs = np.repeat(((1 - confidence) / (K - 1))[:, None], K, axis=1)
    probs[np.arange(n), top] = confidence
    return probs


def draw(rng: np.random.Generator, n: int, small_right, big_accuracy: float = 0.9):
    """n calibration rows: the small model's confidence uniform on (0.3, 1), right with probability
    small_right(confidence); the big model right with probability big_accuracy, independently."""
    labels = rng.integers(0, K, n)
    confidence = rng.uniform(0.3, 1.0, n)
    small = class_probs(labels, rng.random(n) < small_right(confidence), confidence)
    big = class_probs(labels, rng.random(n) < big_accuracy, np.full(n, 0.9))
    return labels, small, big


# --------------------------------------------------------------------------------------------- p-values


def test_the_trinomial_p_value_is_its_own_sup_over_the_null():
    """A brute-force sup over 3,000 nuisance values inside the same bound never beats the search."""
    n, epsilon, gamma = 800, 0.01, 1e-3
    for harm, help_ in [(10, 12), (4, 9), (20, 30), (0, 3), (7, 2)]:
        found = trinomial_p_value(harm, help_, n, epsilon, gamma)
        q_upper = sps.beta.ppf(1 - gamma, harm + help_ + 1, n - harm - help_)
        top = min((1 - epsilon) / 2, (q_upper - epsilon) / 2)
        brute = max(_trinomial_tail(harm - help_, n, epsilon, p) for p in np.linspace(0, top, 3000)) + gamma
        assert found >= min(1.0, brute) - 1e-9, (harm, help_, found, brute)
        assert found <= min(1.0, brute) + 1e-3


def test_the_trinomial_p_value_is_valid_on_the_null_boundary():
    """Drawn with a loss of exactly epsilon, p <= 0.05 in at most 5% of 1,500 draws (plus sampling error)."""
    rng = np.random.default_rng(0)
    n, epsilon, p_help = 200, 0.02, 0.05
    counts = rng.multinomial(n, [p_help + epsilon, p_help, 1 - 2 * p_help - epsilon], size=1500)[:, :2]
    cache: dict = {}
    p_values = [cache.setdefault((h, g), trinomial_p_value(h, g, n, epsilon)) for h, g in map(tuple, counts)]
    rejected = np.mean(np.array(p_values) <= 0.05)
    assert rejected <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 1500), rejected


def test_the_trinomial_test_certifies_at_least_what_clopper_pearson_with_bonferroni_does():
    n, epsilon, delta = 1000, 0.01, 0.05
    ours = bonferroni = 0
    for harm in range(0, 60, 4):
        for help_ in range(0, 80, 4):
            by_bound = clopper_pearson_loss_bound(harm, help_, n, delta) < epsilon
            by_test = trinomial_p_value(harm, help_, n, epsilon) <= delta
            assert by_test or not by_bound, (harm, help_)
            ours, bonferroni = ours + by_test, bonferroni + by_bound
    assert ours > bonferroni  # strictly more: it uses harm and help together


def test_the_trinomial_test_uses_the_help_rows():
    """30 harm rows in 3,000 sit at epsilon = 1 point with no help; 40 help rows make the loss negative."""
    n, epsilon = 3000, 0.005
    assert sps.binom.cdf(30, n, epsilon) > 0.05  # a bound on the harm rows alone certifies nothing here
    assert trinomial_p_value(30, 40, n, epsilon) <= 0.05


def test_the_betting_p_value_is_valid_and_rejects_a_clearly_smaller_loss():
    rng = np.random.default_rng(1)
    epsilon = 0.02
    # losses -0.5, 0, 1 with probabilities 0.08, 0.86, 0.06: a mean of exactly epsilon (the null's boundary)
    null = [
        betting_p_value(rng.choice([-0.5, 0.0, 1.0], 400, p=[0.08, 0.86, 0.06]), epsilon, 0.05, s) for s in range(300)
    ]
    assert np.mean(np.array(null) <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    clear = betting_p_value(rng.choice([-0.5, 0.0, 0.5], 2000, p=[0.1, 0.85, 0.05]), epsilon, 0.05)
    assert clear <= 0.05


# ------------------------------------------------------------------------------------------ confidence


def test_multilabel_confidence_is_the_least_confident_label_scaled_on_its_side():
    probs = np.array([[0.9, 0.1], [0.5, 0.0], [1.0, 0.0], [0.3, 0.8]])
    scores = confidence_scores("multilabel", probs, np.array([0.5, 0.4]))
    np.testing.assert_allclose(scores, [0.75, 0.0, 1.0, 0.4])
    assert confidence_scores("multiclass", np.array([[0.2, 0.8], [0.6, 0.4]]), None).tolist() == [0.8, 0.6]


def test_rescaled_probabilities_keep_each_stage_s_own_decisions_at_the_final_thresholds():
    rng = np.random.default_rng(2)
    probs, own, final = rng.random((200, 3)), np.array([0.3, 0.5, 0.7]), np.array([0.6, 0.5, 0.2])
    rescaled = rescale_to_thresholds("multilabel", probs, own, final)
    np.testing.assert_array_equal(rescaled >= final, probs >= own)
    assert rescaled.min() >= 0 and rescaled.max() <= 1


def test_candidates_run_from_the_most_conservative_and_are_capped():
    scores = np.random.default_rng(3).random(1000)
    candidates = candidate_thresholds(scores, 50)
    assert len(candidates) <= 50 and np.all(np.diff(candidates) < 0)
    assert np.sum(scores >= candidates[0]) == 20  # the first adds as many rows as the others, not one
    assert candidates[-1] == scores.min()


# ------------------------------------------------------------------------------------------- selection


def test_a_small_model_always_right_above_a_confidence_answers_those_rows_and_keeps_the_promise():
    rng = np.random.default_rng(4)

    def right(c):
        return np.where(c >= 0.7, 1.0, 0.3)

    labels, small, big = draw(rng, 3000, right)
    choice = select_cascade("multiclass", labels, [small, big], target=CascadeTarget(0.5, 0.95))
    stage = choice["stages"][0]
    assert choice["guaranteed"] and stage["certified"]
    assert stage["threshold"] <= 0.7  # every row where it is always right is answered
    assert choice["calibration"]["shares"][0] >= np.mean(small.max(axis=1) >= 0.7)
    fresh_labels, fresh_small, fresh_big = draw(np.random.default_rng(40), 200_000, right)
    combined, _ = combine_stages("multiclass", [fresh_small, fresh_big], [None, None], [stage["threshold"]])
    loss = (
        row_scores("multiclass", fresh_labels, fresh_big).mean()
        - row_scores("multiclass", fresh_labels, combined).mean()
    )
    assert 100 * loss <= 0.5


def test_a_small_model_that_is_never_confident_answers_nothing():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, K, 2000)
    small = class_probs(labels, rng.random(2000) < 0.3, np.full(2000, 0.3))  # the same top probability everywhere
    big = class_probs(labels, rng.random(2000) < 0.9, np.full(2000, 0.9))
    choice = select_cascade("multiclass", labels, [small, big])
    assert choice["stages"][0]["threshold"] is None and not choice["guaranteed"]
    assert choice["calibration"]["shares"] == [0.0, 1.0]
    combined, stage = combine_stages("multiclass", [small, big], [None, None], [None])
    np.testing.assert_array_equal(combined, big)
    assert (stage == 1).all()


def test_a_raw_curve_that_passes_is_not_a_certificate():
    """400 rows where the two models differ once (small wrong, big right): the raw loss, 0.25 points, is within
    0.5 at every threshold, yet 400 rows cannot show a loss below 0.5 points (one harm row in 400 is likely when the
    true loss is 0.5 points)."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, K, 400)
    right = rng.random(400) < 0.9
    small_right = right.copy()
    small_right[np.flatnonzero(right)[0]] = False
    confidence = rng.uniform(0.3, 1, 400)
    choice = select_cascade(
        "multiclass",
        labels,
        [class_probs(labels, small_right, confidence), class_probs(labels, right, np.full(400, 0.9))],
    )
    curve = choice["stages"][0]["curve"]
    assert all(point["loss_points"] <= 0.5 for point in curve)
    assert not any(point["certified"] for point in curve) and choice["stages"][0]["threshold"] is None


def _true_loss(threshold: float | None) -> float:
    """The population loss of the simulation below at `threshold`: rows with confidence c ~ U(0.3, 1) answered
    when c >= threshold, the small model right with probability c, the big one with 0.9, independently."""
    if threshold is None:
        return 0.0
    t = max(threshold, 0.3)
    return (0.9 * (1 - t) - (1 - t**2) / 2) / 0.7


def test_the_guarantee_holds_in_repeated_draws_where_the_raw_curve_fails():
    epsilon, draws = 0.005, 80
    target = CascadeTarget(max_loss=100 * epsilon, confidence=0.95, max_candidates=20)
    ours = raw = 0
    for seed in range(draws):
        labels, small, big = draw(np.random.default_rng(100 + seed), 1500, lambda c: c)
        choice = select_cascade("multiclass", labels, [small, big], target=target)
        ours += _true_loss(choice["stages"][0]["threshold"]) > epsilon
        passing = [p for p in choice["stages"][0]["curve"] if p["loss_points"] <= 100 * epsilon]
        raw += _true_loss(max(passing, key=lambda p: p["share"])["threshold"] if passing else None) > epsilon
    assert ours / draws <= 0.05  # the promise: at most 5% of draws lose more than epsilon
    assert raw / draws >= 0.2  # the raw validation curve breaks it often: the check above can fail


def test_the_accuracy_objective_takes_the_best_calibration_metric():
    rng = np.random.default_rng(7)
    labels, small, big = draw(rng, 2000, lambda c: np.where(c >= 0.9, 1.0, 0.5))
    choice = select_cascade("multiclass", labels, [small, big], target=CascadeTarget(objective="accuracy"))
    best = max(point["cascade_metric"] for point in choice["stages"][0]["curve"])
    assert choice["calibration"]["cascade_metric"] == pytest.approx(best)
    assert choice["calibration"]["cascade_metric"] >= choice["calibration"]["big_metric"]
    assert not choice["guaranteed"]


def test_multilabel_selection_certifies_a_small_model_right_where_it_is_sure():
    rng = np.random.default_rng(8)
    n, n_labels = 3000, 5
    labels = (rng.random((n, n_labels)) < 0.2).astype(int)
    sharp = rng.random(n)

    def predicted(accuracy, margin):
        flip = rng.random((n, n_labels)) > accuracy[:, None]
        positive = np.where(flip, 1 - labels, labels)
        return np.where(positive == 1, 0.5 + margin[:, None] / 2, 0.5 - margin[:, None] / 2)

    small = predicted(np.where(sharp > 0.5, 1.0, 0.7), sharp)
    big = predicted(np.full(n, 0.97), np.full(n, 0.8))
    choice = select_cascade("multilabel", labels, [small, big], [np.full(n_labels, 0.5)] * 2)
    stage = choice["stages"][0]
    assert stage["certified"] and stage["threshold"] <= 0.5 + 1e-9
    assert choice["calibration"]["difference_points"] >= -0.5


def test_three_stages_split_the_rows_the_loss_and_the_confidence():
    rng = np.random.default_rng(9)
    labels, small, big = draw(rng, 4000, lambda c: np.where(c >= 0.7, 1.0, 0.3))
    middle = class_probs(labels, rng.random(4000) < 0.97, rng.uniform(0.5, 1.0, 4000))
    choice = select_cascade("multiclass", labels, [small, middle, big], [None] * 3, CascadeTarget(1.0, 0.95))
    assert [s["rows"] for s in choice["stages"]] == [2000, 2000]
    assert all(
        s["max_loss_points"] == pytest.approx(0.5) and s["delta"] == pytest.approx(0.025) for s in choice["stages"]
    )
    assert choice["stages"][0]["certified"] and sum(choice["calibration"]["shares"]) == pytest.approx(1.0)


def test_bad_settings_are_refused():
    for target in (CascadeTarget(max_loss=-1), CascadeTarget(confidence=1.0), CascadeTarget(objective="speed")):
        with pytest.raises(DistilbenchError):
            target.check()
    with pytest.raises(DistilbenchError, match="at least two"):
        select_cascade("multiclass", np.zeros(3), [np.ones((3, 2)) / 2])
