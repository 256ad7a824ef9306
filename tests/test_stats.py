"""Bootstrap intervals, paired differences, verdicts and trivial baselines against cases with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.metrics import compute_metrics
from distilbench.evaluation.stats import (
    INTERVAL_METRICS,
    _metric_function,
    bootstrap_ci,
    learned_nothing,
    mcnemar_exact,
    paired_difference,
    paired_difference_over_seeds,
    select_metric_default,
    trivial_baseline_probs,
    trivial_baselines,
    verdict,
)
from distilbench.training.finetune import choose_best_epoch

NAMES3 = ["neg", "neu", "pos"]


def _probs_from_correct(labels: np.ndarray, correct: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """One-hot probabilities predicting the label where correct, the next class otherwise."""
    preds = np.where(correct, labels, (labels + 1) % n_classes)
    return np.eye(n_classes)[preds]


def _paired_cells(counts: dict, rng: np.random.Generator, n_classes: int = 3):
    """Labels and two models' probabilities with exact cell counts {(a right, b right): count}, shuffled."""
    a = np.concatenate([np.full(c, ra, bool) for (ra, _), c in counts.items()])
    b = np.concatenate([np.full(c, rb, bool) for (_, rb), c in counts.items()])
    order = rng.permutation(a.size)
    a, b = a[order], b[order]
    labels = rng.integers(0, n_classes, a.size)
    return labels, _probs_from_correct(labels, a, n_classes), _probs_from_correct(labels, b, n_classes)


def _draw_paired(n: int, p_cells: list[float], rng: np.random.Generator):
    """n examples drawn with probabilities of the cells (both right, only a right, only b right, both wrong)."""
    counts = rng.multinomial(n, p_cells)
    return _paired_cells(dict(zip([(1, 1), (1, 0), (0, 1), (0, 0)], counts)), rng)


def _multilabel_data(rng: np.random.Generator, n: int, n_labels: int, prevalence: float = 0.15, ties: bool = False):
    labels = (rng.random((n, n_labels)) < prevalence).astype(int)
    probs = np.clip(rng.random((n, n_labels)) * 0.6 + labels * 0.35, 0, 1)
    return labels, np.round(probs, 1) if ties else probs


# --- the vectorised metrics equal compute_metrics on every resample -------------------------------------------------


def test_resampled_metrics_equal_compute_metrics_multiclass():
    rng = np.random.default_rng(1)
    n = 60
    labels = rng.integers(0, 3, n)
    labels[labels == 2] = 1  # class 3 never true: predicted-only classes enter the macro average as sklearn does
    probs = rng.random((n, 4))
    idx = rng.integers(0, n, (12, n))
    names = ["a", "b", "c", "d"]
    for metric in INTERVAL_METRICS["multiclass"]:
        got = _metric_function("multiclass", metric, labels, probs, None)(idx)
        expected = [compute_metrics("multiclass", labels[r], probs[r], names)[metric] for r in idx]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=metric)


def test_resampled_metrics_equal_compute_metrics_multilabel_with_ties_and_rare_labels():
    rng = np.random.default_rng(2)
    n = 60
    labels, probs = _multilabel_data(rng, n, 4, ties=True)
    labels[:, 3] = 0
    labels[0, 3] = 1  # one positive: many resamples lack it, its ROC-AUC is skipped there, its F1 counts 0
    idx = rng.integers(0, n, (12, n))
    thresholds = np.array([0.4, 0.5, 0.6, 0.5])
    for metric in INTERVAL_METRICS["multilabel"]:
        got = _metric_function("multilabel", metric, labels, probs, thresholds)(idx)
        expected = [compute_metrics("multilabel", labels[r], probs[r], list("abcd"), thresholds)[metric] for r in idx]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=metric)


# --- bootstrap_ci --------------------------------------------------------------------------------------------------


def test_bootstrap_ci_reports_the_tool_value_and_is_json():
    rng = np.random.default_rng(3)
    labels, probs = _multilabel_data(rng, 300, 3)
    for metric in INTERVAL_METRICS["multilabel"]:
        ci = bootstrap_ci("multilabel", labels, probs, ["x", "y", "z"], metric, resamples=200)
        assert ci["value"] == compute_metrics("multilabel", labels, probs, ["x", "y", "z"])[metric]
        assert ci["low"] <= ci["value"] <= ci["high"]
        assert ci["method"] == "percentile" and ci["resamples"] == 200 and ci["confidence"] == 0.95
        json.dumps(ci)


def test_accuracy_interval_covers_the_true_value_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    n, p, simulations = 400, 0.8, 200
    covered = 0
    for i in range(simulations):
        labels = rng.integers(0, 3, n)
        ci = bootstrap_ci(
            "multiclass",
            labels,
            _probs_from_correct(labels, rng.random(n) < p),
            NAMES3,
            "accuracy",
            resamples=1000,
            seed=i,
        )
        covered += ci["low"] <= p <= ci["high"]
    assert 0.90 <= covered / simulations <= 0.99


def test_bca_on_request_agrees_with_percentile_on_a_large_sample():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 2000)
    probs = _probs_from_correct(labels, rng.random(2000) < 0.85)
    pct = bootstrap_ci("multiclass", labels, probs, NAMES3, "accuracy", seed=1)
    bca = bootstrap_ci("multiclass", labels, probs, NAMES3, "accuracy", seed=1, method="BCa")
    assert bca["method"] == "BCa"
    assert abs(bca["low"] - pct["low"]) < 0.005 and abs(bca["high"] - pct["high"]) < 0.005


def test_undefined_resamples_are_dropped_not_fatal():
    # one label, one positive in three examples: ~30 % of resamples have no positive and no ROC-AUC
    labels = np.array([[1], [0], [0]])
    probs = np.array([[0.9], [0.2], [0.4]])
    for method in ("percentile", "BCa"):
        ci = bootstrap_ci("multilabel", labels, probs, ["toxic"], "roc_auc_macro", resamples=500, method=method)
        assert ci["value"] == 1.0 and ci["low"] == 1.0 and ci["high"] == 1.0
        assert 100 < ci["undefined_resamples"] < 250
        assert ci["method"] == "percentile"  # BCa is undefined with missing resamples


def test_undefined_value_gives_no_interval_and_constant_predictor_falls_back_from_bca():
    labels = np.zeros((20, 2), int)
    ci = bootstrap_ci("multilabel", labels, np.full((20, 2), 0.3), ["a", "b"], "roc_auc_macro")
    assert ci["value"] is None and ci["low"] is None and ci["high"] is None
    labels[:5, 0] = 1
    ci = bootstrap_ci("multilabel", labels, np.full((20, 2), 0.3), ["a", "b"], "roc_auc_macro", method="BCa")
    assert (ci["value"], ci["low"], ci["high"], ci["method"]) == (0.5, 0.5, 0.5, "percentile")


def test_bad_requests_say_what_is_expected():
    labels = np.array([0, 1])
    probs = np.eye(3)[[0, 1]]
    with pytest.raises(DistilbenchError, match="hamming_score"):
        bootstrap_ci("multilabel", np.eye(2, dtype=int), np.eye(2), ["a", "b"], "hamming_loss")
    with pytest.raises(DistilbenchError, match="percentile"):
        bootstrap_ci("multiclass", labels, probs, NAMES3, "accuracy", method="basic")
    with pytest.raises(DistilbenchError, match="task"):
        bootstrap_ci("regression", labels, probs, NAMES3)


# --- paired differences and McNemar ------------------------------------------------------------------------------


def test_mcnemar_p_value_equals_a_hand_computation():
    rng = np.random.default_rng(6)
    labels, probs_a, probs_b = _paired_cells({(1, 1): 70, (1, 0): 3, (0, 1): 12, (0, 0): 15}, rng)
    diff = paired_difference("multiclass", labels, probs_a, probs_b, NAMES3, "accuracy", resamples=200)
    by_hand = 2 * sum(math.comb(15, k) for k in range(4)) / 2**15  # two-sided exact binomial, 3 of 15 discordant
    assert diff["discordant"] == [3, 12]
    assert diff["mcnemar_p"] == pytest.approx(by_hand, rel=1e-12)  # 0.03515625
    assert diff["difference_points"] == pytest.approx(9.0)
    assert mcnemar_exact([True, False], [True, False]) == {"mcnemar_p": 1.0, "discordant": [0, 0]}


def test_identical_models_differ_by_exactly_zero():
    rng = np.random.default_rng(7)
    labels, probs = _multilabel_data(rng, 200, 3)
    diff = paired_difference("multilabel", labels, probs, probs.copy(), ["a", "b", "c"], "f1_macro", resamples=200)
    assert (diff["difference_points"], diff["low"], diff["high"]) == (0.0, 0.0, 0.0)
    assert diff["mcnemar_p"] is None  # multilabel: no McNemar
    json.dumps(diff)


def test_pairing_makes_the_interval_narrower_than_the_two_marginal_intervals():
    rng = np.random.default_rng(8)
    labels, probs_a, probs_b = _draw_paired(2000, [0.80, 0.03, 0.03, 0.14], rng)
    diff = paired_difference("multiclass", labels, probs_a, probs_b, NAMES3, "accuracy")
    ci_a = bootstrap_ci("multiclass", labels, probs_a, NAMES3, "accuracy")
    ci_b = bootstrap_ci("multiclass", labels, probs_b, NAMES3, "accuracy")
    paired_width = diff["high"] - diff["low"]
    unpaired_width = 100 * math.hypot(ci_a["high"] - ci_a["low"], ci_b["high"] - ci_b["low"])
    assert paired_width < 0.6 * unpaired_width


def test_over_seeds_uses_seed_means_and_widens_with_seed_spread():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 1000)
    truth = rng.random(1000)
    probs_a = [_probs_from_correct(labels, truth < 0.80)]
    steady_b = [_probs_from_correct(labels, truth < 0.80 + s) for s in (0.0, 0.005, -0.005)]
    shaky_b = [_probs_from_correct(labels, truth < 0.80 + s) for s in (0.0, 0.06, -0.06)]
    steady = paired_difference_over_seeds("multiclass", labels, probs_a, steady_b, NAMES3, resamples=500)
    shaky = paired_difference_over_seeds("multiclass", labels, probs_a, shaky_b, NAMES3, resamples=500)
    values_b = [compute_metrics("multiclass", labels, p, NAMES3)["accuracy"] for p in shaky_b]
    assert shaky["values_b"] == values_b and shaky["value_b"] == pytest.approx(np.mean(values_b))
    assert shaky["n_seeds"] == [1, 3] and shaky["method"] == "percentile"
    assert steady["low"] <= steady["difference_points"] <= steady["high"]
    assert shaky["high"] - shaky["low"] > 3 * (steady["high"] - steady["low"])
    # one seed each: the same interval as the plain paired bootstrap, up to resampling noise
    single = paired_difference_over_seeds("multiclass", labels, probs_a, shaky_b[1:2], NAMES3)
    plain = paired_difference("multiclass", labels, probs_a[0], shaky_b[1], NAMES3)
    assert single["difference_points"] == pytest.approx(plain["difference_points"])
    assert abs(single["low"] - plain["low"]) < 0.5 and abs(single["high"] - plain["high"]) < 0.5
    assert verdict(shaky, 1.0)["seeds_needed"] > 3


# --- verdicts ---------------------------------------------------------------------------------------------------------


def test_verdict_boundaries_and_settle_formula_by_hand():
    base = {"metric": "accuracy", "confidence": 0.95, "n_examples": 1000}
    assert verdict({**base, "difference_points": 0.0, "low": -0.9, "high": 0.9})["verdict"] == "within"
    assert verdict({**base, "difference_points": -2.0, "low": -2.9, "high": -1.1})["verdict"] == "worse"
    v = verdict({**base, "difference_points": 0.0, "low": -1.5, "high": 1.5}, 1.0, power=0.5)
    assert v["verdict"] == "inconclusive"
    assert v["examples_needed"] == math.ceil(1000 * (1.5 / 1.0) ** 2) and v["more_examples"] == 1250
    z, zp = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    v = verdict({**base, "difference_points": -1.5, "low": -3.0, "high": -0.2}, 1.0)  # below the margin: upper side
    assert v["examples_needed"] == math.ceil(1000 * (1.3 * (z + zp) / (z * 0.5)) ** 2)
    assert "test examples would settle it" in v["message"]
    assert verdict({**base, "difference_points": -1.0, "low": -2.0, "high": 0.0})["examples_needed"] is None


def test_verdict_within_when_b_equals_a_on_a_big_test_set():
    rng = np.random.default_rng(10)
    labels, probs_a, probs_b = _draw_paired(5000, [0.82, 0.03, 0.03, 0.12], rng)
    v = verdict(paired_difference("multiclass", labels, probs_a, probs_b, NAMES3), 1.0)
    assert v["verdict"] == "within" and v["examples_needed"] is None


def test_verdict_worse_when_b_is_five_points_worse_on_a_big_test_set():
    rng = np.random.default_rng(11)
    labels, probs_a, probs_b = _draw_paired(5000, [0.78, 0.07, 0.02, 0.13], rng)
    diff = paired_difference("multiclass", labels, probs_a, probs_b, NAMES3)
    assert diff["difference_points"] == pytest.approx(-5, abs=1)
    assert verdict(diff, 1.0)["verdict"] == "worse"


def test_verdict_multilabel_within_and_worse():
    rng = np.random.default_rng(12)
    labels, probs_a = _multilabel_data(rng, 3000, 4)
    noise = np.clip(probs_a + rng.normal(0, 0.02, probs_a.shape), 0, 1)
    same = paired_difference("multilabel", labels, probs_a, noise, list("abcd"), "f1_macro")
    assert verdict(same, 1.0)["verdict"] == "within"
    worse = np.clip(probs_a + rng.normal(0, 0.25, probs_a.shape), 0, 1)
    diff = paired_difference("multilabel", labels, probs_a, worse, list("abcd"), "f1_macro")
    assert verdict(diff)["verdict"] == "worse"


def test_inconclusive_verdict_says_how_many_examples_settle_it_and_that_many_do():
    rng = np.random.default_rng(13)
    cells = [0.82, 0.03, 0.03, 0.12]  # b as good as a; they disagree on 6 % of examples
    labels, probs_a, probs_b = _paired_cells({(1, 1): 328, (1, 0): 12, (0, 1): 12, (0, 0): 48}, rng)  # n=400, exact
    v = verdict(paired_difference("multiclass", labels, probs_a, probs_b, NAMES3), margin_points=2.0, power=0.8)
    assert v["verdict"] == "inconclusive"
    needed = v["examples_needed"]
    assert 800 < needed < 2000  # se ~ sqrt(0.06 / n): n ~ 400 * (2.4 * 2.8 / (1.96 * 2))^2 ~ 1200

    def decisive_share(n: int, draws: int = 30) -> float:
        hits = 0
        for i in range(draws):
            data = _draw_paired(n, cells, rng)
            hits += verdict(paired_difference("multiclass", *data, NAMES3, resamples=400, seed=i), 2.0)["verdict"] != (
                "inconclusive"
            )
        return hits / draws

    assert decisive_share(needed) >= 0.6  # planned for 80 %
    assert decisive_share(needed // 4) <= 0.5  # a quarter of it is not enough (~30 % by the same formula)


# --- trivial baselines and learned_nothing -------------------------------------------------------------------------


def test_trivial_baselines_multiclass_equal_a_hand_computation():
    train = np.array([0, 0, 0, 1, 2])
    test = np.array([0, 1, 1, 2, 0, 0])
    result = trivial_baselines("multiclass", train, test, NAMES3, resamples=200)
    majority = result["baselines"]["majority_class"]
    assert majority["description"] == "predicting the majority class (neg)"
    assert majority["metrics"]["accuracy"]["value"] == 0.5  # 3 of 6 are class 0
    assert majority["metrics"]["f1_macro"]["value"] == pytest.approx((2 * 3 / (3 + 6)) / 3)  # classes 1, 2 score 0
    assert result["best"] == {"accuracy": "majority_class", "f1_macro": "majority_class"}
    json.dumps(result)


def test_trivial_baselines_multilabel_equal_a_hand_computation():
    train = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])  # priors 0.75, 0.25: label_priors predicts label 0 always
    test = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [0, 1]])
    result = trivial_baselines("multilabel", train, test, ["toxic", "insult"], resamples=200)
    nothing = result["baselines"]["no_label"]["metrics"]
    assert nothing["hamming_score"]["value"] == 2 / 5  # empty rows count as perfect
    assert nothing["f1_micro"]["value"] == 0.0 and nothing["f1_macro"]["value"] == 0.0
    assert nothing["roc_auc_macro"]["value"] == 0.5
    priors = result["baselines"]["label_priors"]["metrics"]
    assert priors["hamming_score"]["value"] == pytest.approx((0 + 1 + 0.5 + 0 + 0) / 5)
    assert priors["f1_micro"]["value"] == pytest.approx(2 * 2 / (4 + 5))  # tp 2, true 4, predicted 5
    assert priors["f1_macro"]["value"] == pytest.approx((2 * 2 / (2 + 5) + 0) / 2)
    assert result["best"]["hamming_score"] == "no_label" and result["best"]["f1_macro"] == "label_priors"
    np.testing.assert_allclose(
        trivial_baseline_probs("multilabel", train, 2, ["toxic", "insult"])["label_priors"],
        [[0.75, 0.25], [0.75, 0.25]],
    )


def test_learned_nothing_flags_a_majority_predictor_and_passes_a_good_model():
    rng = np.random.default_rng(14)
    n = 600
    labels = rng.choice(3, n, p=[0.35, 0.35, 0.30])
    baseline = trivial_baseline_probs("multiclass", labels, n, NAMES3)["majority_class"]
    copycat = learned_nothing(
        "multiclass",
        labels,
        baseline.copy(),
        baseline,
        NAMES3,
        model_name="minilm-l6",
        baseline_name="predicting the majority class",
    )
    assert copycat["learned_nothing"]
    assert copycat["message"].startswith("minilm-l6 does not beat predicting the majority class (0.35) significantly")
    majority_right = np.flatnonzero(baseline.argmax(axis=1) == labels)
    majority_wrong = np.flatnonzero(baseline.argmax(axis=1) != labels)
    nearly = baseline.copy()
    nearly[majority_wrong[:10]] = np.eye(3)[labels[majority_wrong[:10]]]  # 10 examples fixed
    nearly[majority_right[:6]] = np.eye(3)[(labels[majority_right[:6]] + 1) % 3]  # 6 broken: +0.7 points
    close_call = learned_nothing("multiclass", labels, nearly, baseline, NAMES3, "accuracy")
    assert close_call["learned_nothing"] and close_call["difference_points"] == pytest.approx(100 * 4 / n)
    good = _probs_from_correct(labels, rng.random(n) < 0.8)
    result = learned_nothing("multiclass", labels, good, baseline, NAMES3, model_name="minilm-l6")
    assert not result["learned_nothing"] and result["low"] > 30
    assert result["message"].startswith("minilm-l6 beats")
    json.dumps(result)


def test_learned_nothing_multilabel_against_predicting_no_label():
    rng = np.random.default_rng(15)
    labels, probs = _multilabel_data(rng, 800, 3, prevalence=0.1)
    nothing = np.zeros_like(probs)
    assert learned_nothing("multilabel", labels, nothing, nothing, list("abc"), "f1_macro")["learned_nothing"]
    assert not learned_nothing("multilabel", labels, probs, nothing, list("abc"), "f1_macro")["learned_nothing"]


# --- the multilabel selection metric -----------------------------------------------------------------------------


def test_default_selection_metric_ranks_predicting_nothing_below_a_useful_model():
    rng = np.random.default_rng(16)
    n = 4000
    prevalence = np.array([0.096, 0.010, 0.053, 0.003, 0.049, 0.009])  # toxic comments' six labels
    any_label = rng.random(n) < 0.13  # 13 % of comments carry a label, the rest none
    labels = ((rng.random((n, 6)) < prevalence / prevalence.max()) & any_label[:, None]).astype(int)
    labels[any_label & (labels.sum(axis=1) == 0), 0] = 1
    found = (rng.random((n, 6)) < 0.6) & (labels == 1)  # finds 60 % of the labels
    false_alarms = rng.random((n, 6)) < 0.03  # and raises 3 % false alarms per label
    model = np.where(found | false_alarms, 0.9, 0.1)
    nothing = np.zeros((n, 6))
    names = [f"label{j}" for j in range(6)]
    assert select_metric_default("multiclass") == "accuracy"
    assert select_metric_default("multilabel") == "loss"  # from a random output layer
    assert select_metric_default("multilabel", "probe") == "hamming_score"
    empty, useful = (compute_metrics("multilabel", labels, p, names) for p in (nothing, model))
    assert empty["hamming_score"] > 0.85 and empty["hamming_score"] > useful["hamming_score"]  # hamming prefers empty
    assert useful["f1_macro"] > empty["f1_macro"] == 0.0
    assert useful["roc_auc_macro"] > empty["roc_auc_macro"] == 0.5
    # the loss: the best a model that learned nothing can do is each label's training prior on every example;
    # a model whose probabilities carry the same signal as the 0.9 / 0.1 scores above (calibrated: the share
    # of true labels among the examples it gives each score) has a lower mean BCE
    bce = torch.nn.functional.binary_cross_entropy
    target = torch.tensor(labels, dtype=torch.float64)
    priors = target.mean(0).expand_as(target)
    high = torch.tensor(model > 0.5)
    calibrated = torch.where(high, target[high].mean(), target[~high].mean())
    assert float(bce(calibrated, target)) < float(bce(priors, target))
    # and choose_best_epoch minimises it
    epochs = [
        {"epoch": 1, "val_loss": 0.129, "val_hamming_score": 0.887},
        {"epoch": 2, "val_loss": 0.062, "val_hamming_score": 0.871},
    ]
    assert choose_best_epoch(epochs, select_metric_default("multilabel")) == 2
    # the hamming score (the default from a probed head) would keep the empty epoch 1, unless it is told apart:
    # an epoch that finds no positive on validation never wins over one that does, whatever the metric
    assert choose_best_epoch(epochs, "hamming_score") == 1
    epochs[0]["val_f1_micro"], epochs[1]["val_f1_micro"] = 0.0, 0.41
    for metric in ("hamming_score", "exact_match", "hamming_loss", "loss"):
        epochs[0][f"val_{metric}"], epochs[1][f"val_{metric}"] = (0.0, 0.1) if "loss" in metric else (0.9, 0.8)
        assert choose_best_epoch(epochs, metric) == 2, metric
    epochs[1]["val_f1_micro"] = 0.0  # when no epoch finds anything, the metric decides again
    assert choose_best_epoch(epochs, "hamming_score") == 1
