import numpy as np
import pandas as pd
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.metrics import label_array
from distilbench.models.registry import load_classifier
from distilbench.runs import save_checkpoint
from distilbench.runtime.backends import load_backend
from distilbench.runtime.inference import backend_logits, logits_to_probs, loss_from_logits
from distilbench.training.finetune import average_weights, choose_best, choose_best_epoch


def stats(*rows):
    return [{"epoch": i + 1, "val_loss": loss, "val_accuracy": acc} for i, (loss, acc) in enumerate(rows)]


def test_best_epoch_maximises_metrics_and_minimises_losses():
    history = stats((0.5, 0.80), (0.4, 0.90), (0.45, 0.85))
    assert choose_best_epoch(history, "accuracy") == 2
    assert choose_best_epoch(history, "loss") == 2
    assert choose_best_epoch(stats((0.3, 0.9), (0.2, 0.9)), "accuracy") == 2  # tie: lower val loss
    with pytest.raises(DistilbenchError, match="accuracy"):
        choose_best_epoch(history, "f1_nope")


def test_an_average_competes_with_the_epochs_and_loses_ties_to_them():
    history = stats((0.5, 0.80), (0.4, 0.90), (0.45, 0.85))
    better = {"checkpoint": "average-2-3", "epochs": [2, 3], "val_loss": 0.42, "val_accuracy": 0.91}
    assert choose_best(history + [better], "accuracy")["checkpoint"] == "average-2-3"
    assert choose_best(history + [better], "loss")["epoch"] == 2  # by loss epoch 2 is still the best
    tied = {"checkpoint": "average-2-3", "epochs": [2, 3], "val_loss": 0.4, "val_accuracy": 0.90}
    assert choose_best(history + [tied], "accuracy")["epoch"] == 2


def test_averaged_weights_are_the_mean_of_the_checkpoints(tmp_path, tiny_bert_dir):
    """Two checkpoints of one architecture with different weights: the average holds each weight's mean, and
    the buffers (position ids) unchanged."""
    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b", "c"])
    states = []
    for i in range(2):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(generator=torch.Generator().manual_seed(i))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        save_checkpoint(model, tokenizer, tmp_path / f"epoch-{i + 1}")
    average_weights([tmp_path / "epoch-1", tmp_path / "epoch-2"], model)
    averaged = model.state_dict()
    for name, value in averaged.items():
        if value.is_floating_point():
            assert torch.allclose(value, (states[0][name] + states[1][name]) / 2, atol=1e-6), name
        else:
            assert torch.equal(value, states[0][name]), name
    assert not torch.allclose(averaged["classifier.weight"], states[1]["classifier.weight"])


def test_label_arrays():
    frame = pd.DataFrame({"text": ["a", "b"], "label": ["y", "x"], "p": [1, 0], "q": [0, 0]})
    assert label_array(frame, "multiclass", ["x", "y"]).tolist() == [1, 0]
    assert label_array(frame, "multilabel", ["p", "q"]).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(DistilbenchError, match="not known"):
        label_array(frame, "multiclass", ["x", "z"])


def test_probabilities_and_losses():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    probs = logits_to_probs("multiclass", logits)
    assert np.allclose(probs.sum(axis=1), 1.0) and probs[0, 0] > 0.85
    assert np.allclose(logits_to_probs("multilabel", np.zeros((1, 3))), 0.5)
    expected = -np.mean([np.log(probs[0, 0]), np.log(probs[1, 1])])
    assert loss_from_logits("multiclass", logits, np.array([0, 1])) == pytest.approx(expected, rel=1e-5)
    assert loss_from_logits("multilabel", np.zeros((2, 2), np.float32), np.ones((2, 2))) == pytest.approx(np.log(2))


def test_sorted_batched_prediction_matches_one_by_one(tiny_bert_dir):
    """Length-sorted dynamic-padding batches return logits in input order, equal to unbatched ones."""
    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b", "c"])
    texts = ["short", "a much longer text than the others, with many more tokens in it", "medium length text"]
    backend = load_backend(model, "torch-fp32")
    batched, seconds = backend_logits(backend, tokenizer, texts, batch_size=2)
    singles = np.vstack([backend_logits(backend, tokenizer, [t], batch_size=1)[0] for t in texts])
    assert seconds > 0
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_the_learning_rate_follows_the_schedule_after_the_warm_up(tmp_path, tiny_bert_dir, schedule):
    """Two epochs of 5 steps, 2 of them warm-up: the rate rises to its peak, then decays linearly or along a
    cosine to 0, or stays at the peak (constant)."""
    from transformers import TrainerCallback

    from distilbench.config import load_config
    from distilbench.training.finetune import TrainingExtras, encode_split, train_model

    rates = []

    class Rates(TrainerCallback):
        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            rates.append(lr_scheduler.get_last_lr()[0])

    names = ["a", "b"]
    frame = pd.DataFrame({"text": [f"text number {i}" for i in range(20)], "label": ["a", "b"] * 10})
    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", names)
    config = load_config(
        None,
        {
            "task": "multiclass",
            "epochs": 2,
            "train_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.2,
            "lr_schedule": schedule,
            "device": "cpu",
            "precision": "fp32",
            "average_checkpoints": 0,
        },
    )
    data = encode_split(tokenizer, frame, "multiclass", names, 16)
    train_model(
        model,
        tokenizer,
        data,
        data,
        "multiclass",
        names,
        config,
        tmp_path / "m",
        "m",
        progress=False,
        extras=TrainingExtras(callbacks=[Rates()]),
    )
    # after step k (1-based) the scheduler holds the rate of step k + 1 of 10; warm-up: 2 steps
    assert len(rates) == 10
    assert rates[0] == pytest.approx(1e-3 / 2) and rates[1] == pytest.approx(1e-3)
    expected = {
        "linear": [1e-3 * (10 - k) / 8 for k in range(2, 10)],
        "cosine": [1e-3 * 0.5 * (1 + np.cos(np.pi * (k - 2) / 8)) for k in range(2, 10)],
        "constant": [1e-3] * 8,
    }[schedule]
    np.testing.assert_allclose(rates[1:9], expected, rtol=1e-6)


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "deberta-v2"])
def test_layer_rate_scales_decay_from_the_top_layer_down_to_the_embeddings(family):
    """Sun et al.'s layer-wise decay: head and top layer at the full rate, each layer below at `decay` times the
    one above, the embeddings below the lowest layer; for each family's parameter names."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from distilbench.training.trainer import layer_rate_scales

    sizes = {"distilbert": dict(dim=16, n_layers=3, n_heads=2, hidden_dim=32)}.get(
        family, dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    )
    model = AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model(family, vocab_size=100, max_position_embeddings=64, num_labels=3, **sizes)
    )
    scales = layer_rate_scales(model, 0.5)
    assert set(scales) == {name for name, _ in model.named_parameters()}
    by_depth = {}
    for name, scale in scales.items():
        layer = next(
            (
                int(part)
                for prev, part in zip(name.split("."), name.split(".")[1:])
                if prev == "layer" and part.isdigit()
            ),
            None,
        )
        kind = layer if layer is not None else "embeddings" if "embeddings." in name else "other"
        by_depth.setdefault(kind, set()).add(scale)
    assert by_depth[2] == {1.0} and by_depth[1] == {0.5} and by_depth[0] == {0.25}
    assert by_depth["embeddings"] == {0.125}
    assert by_depth["other"] == {1.0}  # the classifier head (and pooler) train at the full rate
    assert any("classifier" in name and scale == 1.0 for name, scale in scales.items())
    assert set(layer_rate_scales(model, 1.0).values()) == {1.0}
    with pytest.raises(DistilbenchError, match="--layer-lr-decay needs an encoder with numbered layers"):
        layer_rate_scales(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)), 0.5)


def test_training_with_layer_lr_decay_gives_each_layer_its_rate(tmp_path, tiny_bert_dir):
    """The optimizer the Trainer steps holds every parameter once, at lr * decay ** depth from the top, the
    weight decay on weights only; without the flag one rate for all (the Trainer's own optimizer)."""
    from transformers import TrainerCallback

    from distilbench.config import load_config
    from distilbench.training.finetune import TrainingExtras, encode_split, train_model

    names = ["a", "b"]
    frame = pd.DataFrame({"text": [f"text number {i}" for i in range(8)], "label": ["a", "b"] * 4})

    def rates_after_training(**settings):
        seen = {}

        class Groups(TrainerCallback):
            def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
                index = {id(p): n for n, p in model.named_parameters()}
                for group in optimizer.param_groups:
                    for parameter in group["params"]:
                        assert index[id(parameter)] not in seen
                        seen[index[id(parameter)]] = (group["lr"], group["weight_decay"])

        model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", names)
        config = load_config(
            None,
            {
                "task": "multiclass",
                "epochs": 1,
                "train_batch_size": 4,
                "learning_rate": 1e-3,
                "weight_decay": 0.01,
                "warmup_ratio": 0.0,
                "device": "cpu",
                "precision": "fp32",
                "average_checkpoints": 0,
                **settings,
            },
        )
        data = encode_split(tokenizer, frame, "multiclass", names, 16)
        train_model(
            model,
            tokenizer,
            data,
            data,
            "multiclass",
            names,
            config,
            tmp_path / str(settings),
            "m",
            progress=False,
            extras=TrainingExtras(callbacks=[Groups()]),
        )
        assert set(seen) == {n for n, p in model.named_parameters() if p.requires_grad}
        return seen

    decayed = rates_after_training(layer_lr_decay=0.5)  # the tiny BERT has 4 layers
    for depth, expected in ((3, 1e-3), (2, 5e-4), (1, 2.5e-4), (0, 1.25e-4)):
        layer = sorted(v for n, v in decayed.items() if f".layer.{depth}." in n)
        assert [lr for lr, _ in layer] == pytest.approx([expected] * len(layer))
        assert {decay for _, decay in layer} == {0.0, 0.01}
    assert decayed["bert.embeddings.word_embeddings.weight"] == (pytest.approx(6.25e-5), 0.01)
    assert decayed["bert.embeddings.LayerNorm.weight"] == (pytest.approx(6.25e-5), 0.0)
    assert decayed["classifier.weight"] == (pytest.approx(1e-3), 0.01)
    plain = [lr for lr, _ in rates_after_training().values()]
    assert plain == pytest.approx([1e-3] * len(plain))


def test_label_smoothing_trains_against_smoothed_targets_and_validates_plainly(tmp_path, tiny_bert_dir):
    """--label-smoothing e: the training loss is cross-entropy against (1 - e) one-hot + e / K; the loss of a
    model in eval mode (validation, test) stays the plain cross-entropy, so validation losses stay comparable."""
    from transformers import TrainingArguments

    from distilbench.training.trainer import DistilbenchTrainer, label_loss

    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([0, 1])
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = 0.7 * torch.nn.functional.one_hot(labels, 3) + 0.3 / 3
    assert float(label_loss(logits, labels, "multiclass", smoothing=0.3)) == pytest.approx(
        float(-(targets * log_probs).sum(-1).mean()), rel=1e-6
    )
    assert float(label_loss(logits, labels, "multiclass")) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-6
    )

    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b", "c"])
    with torch.no_grad():  # confident logits, where smoothing changes the loss clearly
        model.classifier.bias.copy_(torch.tensor([4.0, 0.0, -4.0]))
    trainer = DistilbenchTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    )
    trainer.task, trainer.label_smoothing = "multiclass", 0.3
    inputs = dict(
        tokenizer(["one text", "another text here"], padding=True, return_tensors="pt"), labels=torch.tensor([0, 0])
    )  # the confident class: smoothing raises the loss
    model.eval()
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(
            model(**{k: v for k, v in inputs.items() if k != "labels"}).logits, inputs["labels"]
        )
        smoothed = label_loss(
            model(**{k: v for k, v in inputs.items() if k != "labels"}).logits,
            inputs["labels"],
            "multiclass",
            smoothing=0.3,
        )
        assert float(trainer.compute_loss(model, dict(inputs))) == pytest.approx(float(plain), rel=1e-5)
        model.train()
        for module in model.modules():  # no dropout: the same logits in train mode
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        assert float(trainer.compute_loss(model, dict(inputs))) == pytest.approx(float(smoothed), rel=1e-5)
    assert float(smoothed) != pytest.approx(float(plain), rel=0.05)
