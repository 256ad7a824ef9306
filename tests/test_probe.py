import numpy as np
import pandas as pd
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.models.registry import load_classifier
from distilbench.runtime.inference import logits_to_probs, loss_from_logits
from distilbench.training.probe import fit_output_layer, fit_probe, output_layer, output_layer_inputs, set_output_layer


def blobs(n_per_class: int, centres: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clouds around `centres` (one row per class), on features of very different scales and offsets,
    so a layer that forgot to undo the standardisation would be far off."""
    rng = np.random.default_rng(seed)
    x = np.vstack([c + rng.normal(size=(n_per_class, centres.shape[1])) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per_class)
    scales, offsets = rng.uniform(0.1, 50, centres.shape[1]), rng.uniform(-100, 100, centres.shape[1])
    return x * scales + offsets, y


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the reference regression's, on scikit-learn 1.9
def test_multiclass_probe_is_a_fitted_logistic_regression_on_the_raw_features():
    """The layer's logits on the raw features give the regression's predictions: separable classes are found,
    a class missing from the training split gets no probability, and two classes fit as one binary model."""
    x, y = blobs(60, np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]]))
    weight, bias, strengths = fit_output_layer(x, y, "multiclass", 4)
    assert weight.shape == (4, 3) and bias.shape == (4,) and len(strengths) == 1
    probs = logits_to_probs("multiclass", x @ weight.T + bias)
    assert (probs.argmax(1) == y).mean() > 0.95
    assert probs[:, 3].max() < 1e-3  # class 3 never occurs in training
    assert loss_from_logits("multiclass", x @ weight.T + bias, y) < 0.2

    two = y < 2
    weight, bias, _ = fit_output_layer(x[two], y[two], "multiclass", 2)
    from sklearn.linear_model import LogisticRegressionCV

    scaled = x[two] - x[two].mean(0)  # centred
    reference = LogisticRegressionCV(
        Cs=[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], cv=3, scoring="neg_log_loss", max_iter=1000
    )
    expected = reference.fit(scaled, y[two]).predict_proba(scaled)
    np.testing.assert_allclose(logits_to_probs("multiclass", x[two] @ weight.T + bias), expected, atol=1e-6)

    with pytest.raises(DistilbenchError, match="at least two classes"):
        fit_output_layer(x[y == 0], y[y == 0], "multiclass", 3)


def test_features_that_hardly_vary_get_no_huge_weights():
    """Mean-pooled MiniLM has a feature that is constant up to float rounding: scaled per feature it got weights of
    1e30, whose infinite gradients the clipping turned into zero updates, so fine-tuning never moved. A degenerate
    random encoder (conftest's tiny BERT under a large token-type embedding) has every feature so: scaled by their
    overall spread the weights were 1e4 times too large, and one epoch drove every probability to 0."""
    x, y = blobs(60, np.array([[4.0, 0], [0, 4.0]]), seed=3)
    noise = np.random.default_rng(0).normal(0, 1e-6, (len(x), 1))
    one_constant = np.hstack([x, 0.3 + noise])
    all_tiny = 0.3 + 1e-4 * x
    for features in (one_constant, all_tiny):
        for task, labels in (("multiclass", y), ("multilabel", np.stack([y, 1 - y], 1))):
            weight, bias, _ = fit_output_layer(features.astype(np.float32), labels, task, 2)
            assert np.abs(weight).max() < 100 and np.abs(bias).max() < 1e3, task


def test_balanced_multiclass_probe_weighs_the_small_class_up():
    """--class-weight balanced fits the probe class-weighted, as the loss is: the rare class gains probability."""
    x, y = blobs(200, np.array([[1.0, 0], [0, 1.0]]), seed=1)
    keep = (y == 0) | (np.arange(len(y)) % 10 == 0)  # class 1 ten times smaller
    plain = fit_output_layer(x[keep], y[keep], "multiclass", 2)
    balanced = fit_output_layer(x[keep], y[keep], "multiclass", 2, balanced=True)
    share = [logits_to_probs("multiclass", x @ w.T + b)[:, 1].mean() for w, b, _ in (plain, balanced)]
    assert share[1] > share[0] + 0.1


def test_multilabel_probe_fits_each_label_and_keeps_constant_labels_at_their_frequency():
    x, y = blobs(100, np.array([[3.0, 0], [0, 3.0]]), seed=2)
    labels = np.zeros((len(y), 4), dtype=np.float32)
    labels[:, 0] = y == 1  # learnable
    labels[:, 1] = 0  # never on
    labels[:, 2] = 1  # always on
    labels[[0, 150], 3] = 1  # two positives: too few for 3-fold selection, fitted with C = 1
    weight, bias, strengths = fit_output_layer(x, labels, "multilabel", 4)
    assert len(strengths) == 2 and strengths[1] == 1.0
    probs = logits_to_probs("multilabel", x @ weight.T + bias)
    assert ((probs[:, 0] > 0.5) == labels[:, 0]).mean() > 0.95
    assert probs[:, 1] == pytest.approx(0.5 / 201) and probs[:, 2] == pytest.approx(200.5 / 201)
    assert np.all(weight[1:3] == 0)


@pytest.mark.parametrize("head", ["mean", "thesis", "standard"])
def test_output_layer_is_the_layer_that_gives_the_logits(tiny_bert_dir, head):
    """For each head the probe fits the layer whose output is the model's logits, on what reaches it."""
    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b", "c"], head=head)
    layer = output_layer(model)
    texts = ["a short text", "a somewhat longer text than the other one", "third"]
    features = output_layer_inputs(model, tokenizer, texts, batch_size=2, max_length=32)
    assert features.shape == (3, layer.in_features)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
        np.testing.assert_allclose(layer(torch.from_numpy(features)).numpy(), logits, atol=1e-5)


def test_a_model_without_a_matching_output_layer_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 7))
    model.config = type("Config", (), {"num_labels": 3})()
    with pytest.raises(DistilbenchError, match="no linear output layer with 3 outputs"):
        output_layer(model)


def word_task() -> tuple[list[str], np.ndarray]:
    good, bad = ["fine", "great", "good", "nice"], ["awful", "bad", "poor", "terrible"]
    texts = [f"{good[i % 4]} {good[(i + 1) % 4]} thing {i}" for i in range(30)]
    texts += [f"{bad[i % 4]} {bad[(i + 1) % 4]} thing {i}" for i in range(30)]
    return texts, np.repeat([0, 1], 30)


def test_probing_a_real_encoder_lowers_the_training_loss_of_its_head(learnable_bert_dir):
    texts, labels = word_task()
    model, tokenizer = load_classifier(str(learnable_bert_dir), "multiclass", ["good", "bad"], head="mean")

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
        return loss_from_logits("multiclass", logits, labels), (logits.argmax(1) == labels).mean()

    before, _ = loss()
    encoder = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    weight, bias, done = fit_probe(model, tokenizer, texts, labels, "multiclass", False, 16, 32)
    set_output_layer(model, weight, bias)
    after, accuracy = loss()
    assert after < before - 0.2 and after < 0.3 and accuracy == 1.0
    assert done["seconds"] >= 0 and len(done["C"]) == 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in encoder.items())  # the encoder is frozen
    assert model.training is False  # left as found (eval here)


def test_training_with_head_init_probe_starts_from_the_fitted_head(tmp_path, learnable_bert_dir):
    """--head-init probe: the Trainer's first step sees the probe's weights in the output layer; without it the
    model's own (random) ones."""
    import copy

    from transformers import TrainerCallback

    from distilbench.config import load_config
    from distilbench.training.finetune import TrainingExtras, encode_split, train_model

    texts, labels = word_task()
    frame = pd.DataFrame({"text": texts, "label": np.array(["good", "bad"])[labels]})
    names = ["bad", "good"]

    def head_at_start(head_init: str) -> tuple[torch.Tensor, torch.nn.Module, object]:
        seen = []

        class First(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                seen.append(output_layer(model).weight.detach().clone())

        model, tokenizer = load_classifier(str(learnable_bert_dir), "multiclass", names, head="mean")
        untouched = copy.deepcopy(model)
        config = load_config(
            None,
            {
                "task": "multiclass",
                "epochs": 1,
                "train_batch_size": 8,
                "device": "cpu",
                "precision": "fp32",
                "average_checkpoints": 0,
                "head_init": head_init,
            },
        )
        data = encode_split(tokenizer, frame, "multiclass", names, 32)
        train_model(
            model,
            tokenizer,
            data,
            data,
            "multiclass",
            names,
            config,
            tmp_path / head_init,
            "m",
            progress=False,
            extras=TrainingExtras(callbacks=[First()]),
        )
        moved = [
            name
            for name, value in model.encoder.state_dict().items()
            if value.is_floating_point() and not torch.equal(value, untouched.encoder.state_dict()[name])
        ]
        assert len(moved) > 10  # fine-tuning goes on from the probed head
        return seen[0], untouched, tokenizer

    probed, untouched, tokenizer = head_at_start("probe")
    weight, _, _ = fit_probe(
        untouched,
        tokenizer,
        frame["text"].tolist(),
        np.array([names.index(v) for v in frame["label"]]),
        "multiclass",
        False,
        32,
        None,
    )
    torch.testing.assert_close(probed, torch.as_tensor(weight, dtype=torch.float32), atol=1e-5, rtol=1e-4)
    random, untouched, _ = head_at_start("random")
    torch.testing.assert_close(random, output_layer(untouched).weight)
