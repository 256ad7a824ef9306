"""A linear probe before fine-tuning (--head-init probe; LP-FT, Kumar et al., 2022, "Fine-tuning can distort
pretrained features and underperform out-of-distribution"): the classifier's output layer is first fitted by
logistic regression on what reaches it from the frozen encoder on the training split, so fine-tuning starts from a
head that already predicts, and the first gradients into the pretrained layers are not a random head's.

The regularisation strength is chosen by 3-fold cross-validated log-loss on the training split (scikit-learn's
LogisticRegressionCV on the centred features, the centring folded into the layer's bias afterwards).
Multiclass fits one multinomial model (class-weighted with --class-weight balanced, as the loss is); multilabel one
model per label, unweighted, since the weighted loss's optimum is the calibrated model (trainer.label_loss).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from torch import nn

from distilbench.core.console import DistilbenchError
from distilbench.models.inputs import model_input_names
from distilbench.runtime.backends import TorchBackend
from distilbench.runtime.inference import backend_logits

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # inverse L2 strengths on the raw features (mean-pooled MiniLM:
# a standard deviation of about 0.2 per feature)
FOLDS = 3
ABSENT_LOGIT = -10.0  # a class without training examples: this far below the lowest fitted class


def output_layer(model: nn.Module) -> nn.Linear:
    """The layer that produces the logits: the last Linear with one output per label (the thesis and mean heads'
    last layer, `classifier` of the transformers heads)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == model.config.num_labels]
    if not layers:
        raise DistilbenchError(
            f"--head-init probe: {type(model).__name__} has no linear output layer with "
            f"{model.config.num_labels} outputs to fit"
        )
    return layers[-1]


class _LayerInputs(TorchBackend):
    """The model run as for inference, returning what reaches its output layer instead of the logits."""

    def __init__(self, model: nn.Module, layer: nn.Linear):
        super().__init__("torch-fp32", model, model_input_names(model))
        self.layer, self.num_labels = layer, layer.in_features

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        seen = []
        hook = self.layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
        try:
            super().__call__(batch)
        finally:
            hook.remove()
        return seen[-1].float().cpu().numpy()


def output_layer_inputs(
    model: nn.Module, tokenizer, texts: list[str], batch_size: int, max_length: int | None
) -> np.ndarray:
    """What reaches the output layer for each text, in order, the model in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        features, _ = backend_logits(
            _LayerInputs(model, output_layer(model)), tokenizer, texts, batch_size=batch_size, max_length=max_length
        )
    finally:
        model.train(was_training)
    return features


def _fit(x: np.ndarray, y: np.ndarray, class_weight: str | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(coef, intercept, C) of a logistic regression, C by cross-validated log-loss where every class has at least
    FOLDS examples, else C = 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.8-1.10's notes on changing defaults
        if np.bincount(np.unique(y, return_inverse=True)[1]).min() >= FOLDS:
            fitted = LogisticRegressionCV(
                Cs=list(C_GRID), cv=FOLDS, scoring="neg_log_loss", max_iter=1000, class_weight=class_weight
            ).fit(x, y)
            strength = float(np.ravel(fitted.C_)[0])
        else:
            fitted, strength = LogisticRegression(C=1.0, max_iter=1000, class_weight=class_weight).fit(x, y), 1.0
    return fitted.coef_, fitted.intercept_, strength


def fit_output_layer(
    features: np.ndarray, labels: np.ndarray, task: str, n_labels: int, balanced: bool = False
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Weights (n_labels, width) and bias (n_labels,) of a linear layer whose logits on `features` are a logistic
    regression's, and the chosen C per fitted model. Multiclass: softmax logits (a class absent from `labels` gets
    zero weights and a bias far below the others); multilabel: each label's sigmoid logit (a label that is always
    or never on gets zero weights and the log-odds of its smoothed frequency)."""
    # centred, not rescaled: the L2 penalty is on the weights the layer will use, so features that hardly vary
    # between texts (a constant feature of mean-pooled MiniLM; a degenerate random encoder's every feature) get
    # small weights, not weights of 1 / their spread, whose gradients would blow fine-tuning up
    mean = features.mean(axis=0, dtype=np.float64)
    x = features - mean
    weight, bias, strengths = np.zeros((n_labels, x.shape[1])), np.zeros(n_labels), []
    if task == "multiclass":
        present = np.unique(labels.astype(int))
        if len(present) < 2:
            raise DistilbenchError("--head-init probe needs at least two classes in the training split")
        coef, intercept, strength = _fit(x, labels.astype(int), "balanced" if balanced else None)
        strengths.append(strength)
        if len(present) == 2:  # sklearn's one binary model: the same softmax as logits -z/2 and +z/2
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        weight[present], bias[present] = coef, intercept
        bias[np.setdiff1d(np.arange(n_labels), present)] = intercept.min() + ABSENT_LOGIT
    else:
        for j in range(n_labels):
            y = labels[:, j].astype(int)
            positives = int(y.sum())
            if positives in (0, len(y)):
                bias[j] = np.log((positives + 0.5) / (len(y) - positives + 0.5))
                continue
            coef, intercept, strength = _fit(x, y, None)
            weight[j], bias[j] = coef[0], intercept[0]
            strengths.append(strength)
    # logits = W (x - mean) + b = W x + (b - W mean)
    return weight, bias - weight @ mean, strengths


def fit_probe(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    labels: np.ndarray,
    task: str,
    balanced: bool,
    batch_size: int,
    max_length: int | None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Weights and bias for `model`'s output layer fitted on the frozen model's features of the labelled training
    texts (set them with set_output_layer), and what was done: {"C": [...], "seconds": s}."""
    start = time.perf_counter()
    features = output_layer_inputs(model, tokenizer, texts, batch_size, max_length)
    weight, bias, strengths = fit_output_layer(features, labels, task, output_layer(model).out_features, balanced)
    return weight, bias, {"C": strengths, "seconds": time.perf_counter() - start}


def set_output_layer(model: nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
    layer = output_layer(model)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
