"""The statistics of a cascade: a small model answers the rows it is confident about and defers the rest to a
bigger one. Which rows are confident enough is chosen on labelled calibration rows so that, with a stated
confidence, the cascade loses at most a stated number of points of the primary metric against the big model alone.

The rule. Each stage has a confidence score per row in [0, 1] (confidence_scores): multiclass, its top
probability; multilabel, the row is as confident as its least confident label, where a label's confidence is the
distance of its probability from the label's decision threshold, scaled to [0, 1] on that side of the threshold.
A stage answers a row when the score reaches the stage's threshold; otherwise the row goes to the next stage, and
the last stage answers everything it receives.

The guarantee (Learn then Test, Angelopoulos et al. 2021). Candidate thresholds are ordered from the most
conservative (the small model answers the fewest rows) to the least. For each candidate, a finite-sample p-value
tests H0: "cascade metric - big metric <= -epsilon" (the loss is at least epsilon); candidates are tested in that
fixed order at level delta = 1 - confidence, and testing stops at the first that is not rejected. Fixed-sequence
testing controls the family-wise error at delta without any correction for the number of candidates, so with
probability at least 1 - delta over the calibration rows, every certified threshold (the chosen one: the last
certified) has a true loss below epsilon. None certified: the small model answers nothing.

The p-values, and why they are valid:
- multiclass (trinomial_p_value): each row's loss is L = big right - cascade right, in {-1, 0, +1}: +1 (harm)
  where the small model answers wrongly and the big model would have been right, -1 (help) the reverse, 0
  otherwise (a deferred row, or both right, or both wrong). The rows are i.i.d., so (harm, help) is trinomial with
  probabilities (p_h, p_g), and H0 is p_h - p_g >= epsilon. The statistic is T = harm - help (small is evidence
  against H0). Moving probability from harm to "no change" makes T stochastically smaller, so the worst case lies
  on the boundary p_h = p_g + epsilon, where only the nuisance p_g is unknown; there P(T <= t) is computed exactly
  (harm + help ~ Binomial(n, p_h + p_g), and harm given their sum is binomial). The p-value is Berger and Boos's
  (JASA 1994): gamma = 0.001 plus the largest P(T <= t) over the boundary points whose discordance p_h + p_g lies
  below its 1 - gamma Clopper-Pearson upper bound. It is valid for every distribution in H0 (P(p-value <= a) <= a:
  the true discordance lies outside the bound with probability gamma at most, and inside it the sup dominates
  the true tail), and exact (no normal approximation). Without the restriction the sup would be taken at
  discordance rates near 1, whose spread no data rules out, and nothing would be certified. The sup is found on
  a grid and refined by a bounded scalar search. Because it uses the help rows, it certifies more than a bound on
  the harm rows alone, and (on every count tested) at least what Clopper-Pearson bounds on harm and help,
  combined by Bonferroni, certify.
- multilabel (betting_p_value): each row's loss is big's hamming score of the row - the cascade's, in [-1, 1].
  The test is Waudby-Smith and Ramdas's betting test for the mean of a bounded variable (JRSS-B 2024,
  predictable plug-in bets): the capital of a bettor against H0 is a nonnegative supermartingale under H0, so by
  Ville's inequality 1 / max capital is a valid p-value. Its bets grow as the observed variance shrinks, so it
  adapts to the many rows of loss 0 (deferred, or the same labels) where Hoeffding's bound cannot. The rows are
  bet on in a seeded random order that does not depend on the data.

More than two stages (select_cascade): the calibration rows are split at random into one part per deferral
(stages - 1 parts). The thresholds are chosen from the first stage on: stage j on part j, among the rows the
stages before it defer, with epsilon / (stages - 1) and delta / (stages - 1). Each stage's p-values are valid
given the earlier parts (its part is independent of them), the losses of the stages add up to the cascade's loss,
and a union bound over the stages gives the stated confidence for the whole cascade.

The accuracy objective picks the threshold with the best cascade metric on the calibration rows (ties: the one
where the small model answers most): no guarantee, its p-value is reported for information only.

Everything here works on arrays: numpy, and scipy where a p-value needs it (imported there, since the runtime
imports this module); the models are run elsewhere (experiments.cascade, runtime.cascade).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distilbench.core.console import DistilbenchError

OBJECTIVES = ("cost", "accuracy")
MAX_CANDIDATES = 100
_EDGE = 1e-6  # thresholds this close to 0 or 1 are kept off them (a label that is always or never predicted)
_BET_CAP = 0.75  # the largest bet, as a share of what keeps the capital positive (Waudby-Smith and Ramdas: 1/2 to 3/4)
_GAMMA = 1e-3  # Berger and Boos: the share of the level spent on bounding the nuisance (rows where models differ)


@dataclass(frozen=True)
class CascadeTarget:
    """What a cascade is chosen for: lose at most `max_loss` points of the primary metric against the last stage
    with probability `confidence` (objective "cost": the fewest rows for the big model), or the best calibration
    metric (objective "accuracy", no guarantee). `max_candidates` thresholds per stage at most; `seed` orders the
    betting test's rows and splits the rows between stages (more than two)."""

    max_loss: float = 0.5
    confidence: float = 0.95
    objective: str = "cost"
    max_candidates: int = MAX_CANDIDATES
    seed: int = 0

    def check(self) -> CascadeTarget:
        """Itself, after checking each setting's range."""
        if not 0 <= self.max_loss < 100:
            raise DistilbenchError(f"--max-loss is in points of the metric, in [0, 100), not {self.max_loss}")
        if not 0 < self.confidence < 1:
            raise DistilbenchError(f"--confidence must lie strictly between 0 and 1 (e.g. 0.95), not {self.confidence}")
        if self.objective not in OBJECTIVES:
            raise DistilbenchError(f"--objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.max_candidates < 1:
            raise DistilbenchError(f"max_candidates must be 1 or more, not {self.max_candidates}")
        return self


# ------------------------------------------------------------------------------------------------ rows


def _label_thresholds(thresholds, n_labels: int) -> np.ndarray:
    thr = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=float), (n_labels,))
    return np.clip(thr, _EDGE, 1 - _EDGE)


def confidence_scores(task: str, probs: np.ndarray, thresholds=None) -> np.ndarray:
    """Each row's confidence in [0, 1]: the top probability (multiclass), or the least confident label's distance
    from its decision threshold, scaled to [0, 1] on that side of it (multilabel: 1 when every probability is 0 or
    1, 0 when one sits on its threshold)."""
    probs = np.asarray(probs, dtype=float)
    if task == "multiclass":
        return probs.max(axis=1)
    thr = _label_thresholds(thresholds, probs.shape[1])
    above = probs >= thr
    distance = np.where(above, (probs - thr) / (1 - thr), (thr - probs) / thr)
    return np.clip(distance.min(axis=1), 0.0, 1.0)


def row_scores(task: str, labels: np.ndarray, probs: np.ndarray, thresholds=None) -> np.ndarray:
    """Each row's share of the primary metric: 1.0 / 0.0 for a right / wrong top label (accuracy), or the row's
    hamming score |true and predicted| / |true or predicted|, 1.0 when both are empty (multilabel)."""
    probs = np.asarray(probs, dtype=float)
    if task == "multiclass":
        return (probs.argmax(axis=1) == np.asarray(labels).astype(int)).astype(float)
    predicted = probs >= np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds), (probs.shape[1],))
    truth = np.asarray(labels).astype(bool)
    inter = np.logical_and(truth, predicted).sum(axis=1)
    union = np.logical_or(truth, predicted).sum(axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def candidate_thresholds(scores: np.ndarray, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Thresholds to test, from the most conservative (highest: the stage answers the fewest rows) down: every
    distinct score, or where there are more than `max_candidates`, the scores at evenly spaced ranks (each
    candidate then adds about the same number of rows, the first too: a first candidate of one row is weak
    evidence, and fixed-sequence testing stops at the first that fails)."""
    distinct = np.unique(np.asarray(scores, dtype=float))[::-1]
    if distinct.size <= max_candidates:
        return distinct
    ordered = np.sort(np.asarray(scores, dtype=float))[::-1]
    ranks = np.ceil(np.arange(1, max_candidates + 1) * ordered.size / max_candidates).astype(int) - 1
    return np.unique(ordered[ranks])[::-1]


def answers(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which rows a stage answers: those whose confidence reaches its threshold (None: none)."""
    if threshold is None:
        return np.zeros(np.shape(scores), dtype=bool)
    return np.asarray(scores) >= threshold


# ------------------------------------------------------------------------------------------------ p-values


def _trinomial_tail(t: int, n: int, epsilon: float, p_help) -> np.ndarray | float:
    """P(harm - help <= t) for n rows with P(harm) = p_help + epsilon and P(help) = p_help, for one p_help or an
    array of them: harm + help is Binomial(n, q) and harm given their sum d is Binomial(d, r)."""
    from scipy import stats as sps

    p_help = np.asarray(p_help, dtype=float)
    q = np.minimum(1.0, 2 * p_help + epsilon)[..., None]  # P(harm or help)
    r = (p_help[..., None] + epsilon) / q  # P(harm | harm or help)
    spread = 12 * np.sqrt(n * q * (1 - q)) + 10
    d = np.arange(
        max(0, math.floor(float((n * q - spread).min()))), min(n, math.ceil(float((n * q + spread).max()))) + 1
    )
    d = d[(t + d) >= 0]  # harm - help <= t needs harm <= (t + d) / 2, which is >= 0
    if d.size == 0:
        return np.zeros(p_help.shape) if p_help.ndim else 0.0
    tails = np.minimum(1.0, np.sum(sps.binom.pmf(d, n, q) * sps.binom.cdf(np.floor((t + d) / 2), d, r), axis=-1))
    return tails if p_help.ndim else float(tails)


def trinomial_p_value(harm: int, help: int, n: int, epsilon: float, gamma: float = _GAMMA) -> float:  # noqa: A002
    """Exact p-value of H0 "P(harm) - P(help) >= epsilon" from `harm` and `help` counts among `n` i.i.d. rows:
    Berger and Boos's: gamma plus the sup of P(harm - help <= observed) over the null's boundary (P(harm) =
    P(help) + epsilon) within the 1 - gamma Clopper-Pearson upper bound of P(harm or help), maximised over the
    nuisance P(help) on a grid and refined by a bounded search (see the module docstring for its validity)."""
    from scipy import optimize
    from scipy import stats as sps

    if n <= 0:
        return 1.0
    t = int(harm) - int(help)
    if t >= n * epsilon:
        return 1.0  # the observed loss is no smaller than epsilon: no evidence against H0
    discordant = int(harm) + int(help)
    q_upper = 1.0 if discordant >= n else float(sps.beta.ppf(1 - gamma, discordant + 1, n - discordant))
    top = min((1 - epsilon) / 2, (q_upper - epsilon) / 2)
    if top < 0:
        return gamma  # no null distribution is that rarely discordant
    grid = np.unique(
        np.concatenate([np.linspace(0, top, 25), np.geomspace(min(1e-7, top) or 1e-7, max(top, 1e-7), 25)])
    )
    grid = grid[grid <= top]
    values = _trinomial_tail(t, n, epsilon, grid)
    best = int(values.argmax())
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    p_value = float(values[best])
    if high > low:
        found = optimize.minimize_scalar(
            lambda p: -_trinomial_tail(t, n, epsilon, p),
            bounds=(low, high),
            method="bounded",
            options={"xatol": (high - low) * 1e-4},
        )
        p_value = max(p_value, -float(found.fun))
    return min(1.0, p_value + gamma)


def betting_p_value(losses: np.ndarray, epsilon: float, delta: float, seed: int = 0) -> float:
    """Valid p-value of H0 "mean loss >= epsilon" for i.i.d. losses in [-1, 1]: Waudby-Smith and Ramdas's betting
    test with predictable plug-in bets tuned for level `delta` (1 / the bettor's largest capital, by Ville's
    inequality); the rows are taken in a random order drawn from `seed`."""
    losses = np.asarray(losses, dtype=float)
    n = losses.size
    if n == 0:
        return 1.0
    x = (np.clip(losses, -1, 1)[np.random.default_rng(seed).permutation(n)] + 1) / 2  # in [0, 1]
    m = (1 + epsilon) / 2  # H0: E[x] >= m
    steps = np.arange(1, n + 1)
    running = (0.5 + np.cumsum(x)) / (steps + 1)
    var_after = (0.25 + np.cumsum((x - running) ** 2)) / (steps + 1)
    var_before = np.concatenate([[0.25], var_after[:-1]])
    bet = np.minimum(np.sqrt(2 * math.log(1 / delta) / (n * var_before)), _BET_CAP / (1 - m))
    log_capital = np.cumsum(np.log1p(bet * (m - x)))
    return float(min(1.0, math.exp(-max(0.0, float(log_capital.max())))))


def clopper_pearson_loss_bound(harm: int, help: int, n: int, delta: float) -> float:  # noqa: A002
    """Upper confidence bound (level 1 - delta) on P(harm) - P(help) by Bonferroni: the Clopper-Pearson upper bound
    of P(harm) at delta / 2 minus the lower bound of P(help) at delta / 2. Valid but loose: the baseline that
    trinomial_p_value is tested against."""
    from scipy import stats as sps

    upper = 1.0 if harm >= n else float(sps.beta.ppf(1 - delta / 2, harm + 1, n - harm))
    lower = 0.0 if help <= 0 else float(sps.beta.ppf(delta / 2, help, n - help + 1))
    return upper - lower


def loss_p_value(task: str, losses: np.ndarray, epsilon: float, delta: float, seed: int = 0) -> float:
    """The p-value of H0 "mean loss >= epsilon" for per-row losses of the cascade against the big model: the exact
    trinomial test (multiclass, losses in {-1, 0, 1}) or the betting test (multilabel, losses in [-1, 1])."""
    losses = np.asarray(losses, dtype=float)
    if task == "multiclass":
        return trinomial_p_value(int((losses > 0).sum()), int((losses < 0).sum()), losses.size, epsilon)
    return betting_p_value(losses, epsilon, delta, seed)


# ------------------------------------------------------------------------------------------------ selection


def stage_curve(
    task: str, confidence: np.ndarray, own: np.ndarray, rows: dict, epsilon: float, delta: float, target: CascadeTarget
) -> list[dict]:
    """One stage's curve over its candidate thresholds (most conservative first): the share of rows it answers,
    the cascade's and the big model's metric (rows it defers scored as the big model's), the loss in points, the
    p-value of "loss >= epsilon" and whether fixed-sequence testing at `delta` certifies it. `rows`: "reach" (the
    rows the stages before defer), "current" (each row's score in the cascade so far, the big model's where
    undecided) and "big" (the big model's), all over the rows this stage is chosen on."""
    reach, current, big = rows["reach"], rows["current"], rows["big"]
    n = reach.size
    curve, certified = [], True
    for threshold in candidate_thresholds(confidence[reach], target.max_candidates) if reach.any() else []:
        answered = reach & (confidence >= threshold)
        losses = np.where(answered, big - own, 0.0)
        p_value = loss_p_value(task, losses, epsilon, delta, target.seed)
        certified = certified and p_value <= delta
        cascade = float(np.where(answered, own, current).mean())
        curve.append(
            {
                "threshold": float(threshold),
                "share": float(answered.sum() / n),
                "cascade_metric": cascade,
                "big_metric": float(big.mean()),
                "loss_points": 100.0 * float(losses.mean()),
                "p_value": p_value,
                "certified": bool(certified),
            }
        )
    return curve


def chosen_point(curve: list[dict], objective: str, current_metric: float) -> dict | None:
    """The curve's chosen point: the last certified one (cost), or the best cascade metric, ties broken towards
    the larger share (accuracy; None when answering nothing scores better). None: the stage answers nothing."""
    if objective == "cost":
        certified = [point for point in curve if point["certified"]]
        return certified[-1] if certified else None
    best = max(curve, key=lambda point: (point["cascade_metric"], point["share"]), default=None)
    return best if best is not None and best["cascade_metric"] >= current_metric else None


def calibration_parts(n: int, stages: int, target: CascadeTarget) -> list[np.ndarray]:
    """Which calibration rows choose each deferral threshold: all of them for two stages (or the accuracy
    objective, which promises nothing); otherwise a seeded random split into stages - 1 parts."""
    if stages == 2 or target.objective == "accuracy":
        return [np.ones(n, dtype=bool)] * (stages - 1)
    parts = []
    for chunk in np.array_split(np.random.default_rng(target.seed).permutation(n), stages - 1):
        mask = np.zeros(n, dtype=bool)
        mask[chunk] = True
        parts.append(mask)
    return parts


def select_cascade(
    task: str,
    labels: np.ndarray,
    stage_probs: list[np.ndarray],
    stage_thresholds: list | None = None,
    target: CascadeTarget | None = None,
) -> dict:
    """Choose every deferral threshold of a cascade on labelled calibration rows (`stage_probs`: each stage's
    probabilities for the same rows, the big model last; `stage_thresholds`: each stage's multilabel decision
    thresholds). Returns {"stages": one dict per deferring stage (its threshold, None when it answers nothing,
    whether it is certified, its p-value, loss budget and curve), "calibration": shares and metrics of the chosen
    cascade on all calibration rows, and the settings}. See the module docstring for the rule."""
    target = (target or CascadeTarget()).check()
    k = len(stage_probs)
    if k < 2:
        raise DistilbenchError("a cascade needs at least two models: a small one first, the big one last")
    thresholds = list(stage_thresholds) if stage_thresholds is not None else [None] * k
    labels = np.asarray(labels)
    big = row_scores(task, labels, stage_probs[-1], thresholds[-1])
    n = big.size
    guaranteed = target.objective == "cost"
    epsilon = target.max_loss / 100 / ((k - 1) if guaranteed else 1)
    delta = (1 - target.confidence) / ((k - 1) if guaranteed else 1)
    deferred, current, stages = np.ones(n, dtype=bool), big.copy(), []
    for j, part in enumerate(calibration_parts(n, k, target)):
        confidence = confidence_scores(task, stage_probs[j], thresholds[j])
        own = row_scores(task, labels, stage_probs[j], thresholds[j])
        rows = {"reach": (deferred & part)[part], "current": current[part], "big": big[part]}
        curve = stage_curve(task, confidence[part], own[part], rows, epsilon, delta, target)
        point = chosen_point(curve, target.objective, float(current[part].mean()))
        threshold = None if point is None else point["threshold"]
        answered = deferred & answers(confidence, threshold)
        current, deferred = np.where(answered, own, current), deferred & ~answered
        stages.append(
            {
                "threshold": threshold,
                "certified": bool(point is not None and point["certified"]),
                "p_value": None if point is None else point["p_value"],
                "rows": int(part.sum()),
                "max_loss_points": 100 * epsilon,
                "delta": delta,
                "curve": curve,
            }
        )
    answered_by = _stage_of_rows(task, stage_probs, thresholds, [s["threshold"] for s in stages])
    return {
        "task": task,
        "objective": target.objective,
        "max_loss_points": target.max_loss,
        "confidence": target.confidence,
        "guaranteed": guaranteed and any(s["threshold"] is not None for s in stages),
        "stages": stages,
        "calibration": cascade_summary(answered_by, current, big, k),
    }


def cascade_summary(stage_of_row: np.ndarray, cascade: np.ndarray, big: np.ndarray, stages: int) -> dict:
    """Rows, each stage's share, the cascade's and the big model's metric and their difference in points, from
    per-row stage numbers and per-row scores."""
    counts = np.bincount(stage_of_row, minlength=stages)
    return {
        "rows": int(stage_of_row.size),
        "shares": (counts / max(stage_of_row.size, 1)).tolist(),
        "cascade_metric": float(cascade.mean()),
        "big_metric": float(big.mean()),
        "difference_points": 100.0 * float(cascade.mean() - big.mean()),
    }


def _stage_of_rows(task: str, stage_probs: list, label_thresholds: list, thresholds: list) -> np.ndarray:
    deferred = np.ones(np.asarray(stage_probs[0]).shape[0], dtype=bool)
    stage = np.full(deferred.size, len(stage_probs) - 1)
    for j, threshold in enumerate(thresholds):
        answered = deferred & answers(confidence_scores(task, stage_probs[j], label_thresholds[j]), threshold)
        stage[answered] = j
        deferred &= ~answered
    return stage


def rescale_to_thresholds(task: str, probs: np.ndarray, own_thresholds, final_thresholds) -> np.ndarray:
    """A stage's probabilities as the cascade reports them: unchanged for multiclass (the top label decides);
    multilabel, mapped per label, linearly on each side of the threshold, so that the stage's own threshold lands
    on the final stage's (the cascade's one set of thresholds then gives every stage's own decisions)."""
    probs = np.asarray(probs, dtype=float)
    if task == "multiclass":
        return probs
    own = _label_thresholds(own_thresholds, probs.shape[1])
    final = _label_thresholds(final_thresholds, probs.shape[1])
    below = probs * final / own
    above = final + (probs - own) * (1 - final) / (1 - own)
    return np.clip(np.where(probs < own, below, above), 0.0, 1.0)


def combine_stages(
    task: str, stage_probs: list[np.ndarray], label_thresholds: list, thresholds: list[float | None]
) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's probabilities from every stage's probabilities on the same rows, and which stage answered
    each row: stage j answers the rows the stages before it deferred whose confidence reaches thresholds[j] (None:
    none); the last stage answers the rest. What runtime.cascade computes running only the rows each stage gets."""
    stage = _stage_of_rows(task, stage_probs, label_thresholds, thresholds)
    final = label_thresholds[-1]
    combined = np.array(stage_probs[-1], dtype=float, copy=True)
    for j in range(len(stage_probs) - 1):
        rows = stage == j
        combined[rows] = rescale_to_thresholds(task, np.asarray(stage_probs[j])[rows], label_thresholds[j], final)
    return combined, stage
