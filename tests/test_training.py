import numpy as np
import pandas as pd
import pytest

from distilbench.backends import load_backend
from distilbench.console import DistilbenchError
from distilbench.inference import backend_logits, logits_to_probs, loss_from_logits
from distilbench.metrics import label_array
from distilbench.models import load_classifier
from distilbench.training import choose_best_epoch


def stats(*rows):
    return [{"epoch": i + 1, "val_loss": loss, "val_accuracy": acc} for i, (loss, acc) in enumerate(rows)]


def test_best_epoch_maximises_metrics_and_minimises_losses():
    history = stats((0.5, 0.80), (0.4, 0.90), (0.45, 0.85))
    assert choose_best_epoch(history, "accuracy") == 2
    assert choose_best_epoch(history, "loss") == 2
    assert choose_best_epoch(stats((0.3, 0.9), (0.2, 0.9)), "accuracy") == 2  # tie: lower val loss
    with pytest.raises(DistilbenchError, match="accuracy"):
        choose_best_epoch(history, "f1_nope")


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
