"""A trained classifier in memory, for Python callers: `load(path).predict(texts)`.

It runs the one inference loop, the backends and (multilabel) the tuned thresholds of `distilbench predict`, so
the labels are the ones the CLI writes for the same texts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from distilbench.core.console import DataError, ModelNotFoundError, RunDirError

if TYPE_CHECKING:
    import numpy as np

    from distilbench.runtime.predict import ChunkPredictor


def model_directory(path: str | Path) -> Path:
    """A model directory as given, or for a finished run directory (comparison.json) its reference model's kept
    checkpoint: comparison.json names the reference, else its first model."""
    from distilbench.runs import RunDir, model_slug, read_json
    from distilbench.runtime.light import is_text_model

    path = Path(path)
    if (path / "config.json").is_file() or is_text_model(path) or not (path / "comparison.json").is_file():
        return path
    comparison = read_json(path / "comparison.json")
    rows = comparison.get("rows") or []
    reference = comparison.get("reference") or (rows[0]["model"] if rows else None)
    if reference is None:
        raise RunDirError(f"{path}/comparison.json names no model; pass a checkpoint (RUN/models/<model>/best)")
    return RunDir(path).best_dir(model_slug(reference))


class Classifier:
    """A fine-tuned classifier in memory: `predict(texts)` gives labels, `predict_proba(texts)` probabilities.

    It runs the same inference loop, backends and (multilabel) tuned thresholds as `distilbench predict`, so
    the labels are the ones the CLI writes for the same texts."""

    def __init__(self, predictor: ChunkPredictor, path: Path, backend: str):
        self._predictor = predictor
        self.path = path
        self.backend = backend

    @property
    def labels(self) -> list[str]:
        """The label names, in the order of predict_proba's columns."""
        return list(self._predictor.label_names)

    @property
    def task(self) -> str:
        """multiclass or multilabel."""
        return self._predictor.task

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities, shape (texts, labels): softmax for multiclass, a sigmoid per label for multilabel."""
        return self._predictor.probabilities(_texts(texts))

    def predict(self, texts: Sequence[str]) -> list:
        """The predicted label per text (multiclass), or the list of labels over their thresholds (multilabel)."""
        from distilbench.runtime.predict import predicted_labels

        probs = self.predict_proba(texts)
        return predicted_labels(self.task, self.labels, probs, self._predictor.thresholds)

    def __repr__(self) -> str:
        where = str(self.path)
        return f"Classifier({where!r}, task={self.task!r}, labels={len(self.labels)}, backend={self.backend!r})"


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise DataError("pass a list of texts, e.g. predict(['one text']), not a single string")
    return [str(text) for text in texts]


def load(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
) -> Classifier:
    """A model ready to predict: a checkpoint directory (e.g. RUN_DIR/models/<model>/best), a finished run
    directory (its reference model's best checkpoint: the first model unless the run named another), an
    exported ONNX directory (`distilbench export`), or a tfidf, static or cascade model directory. `backend`:
    by default torch-fp32 for a checkpoint and its own onnx backend for an exported directory (a tfidf, static
    or cascade model has one way to run); any backend by name, or auto (the fastest that agrees with
    torch-fp32, measured once per model and machine on the validation split of the run the checkpoint is
    in). `max_length`: tokens per text (default: the model's limit)."""
    from distilbench.runtime.bundle import is_exported_model
    from distilbench.runtime.light import is_text_model
    from distilbench.runtime.predict import ChunkPredictor, resolve_model_backend

    model_dir = model_directory(path)
    if not (model_dir / "config.json").is_file() and not is_text_model(model_dir):
        raise ModelNotFoundError(
            f"{path} is not a model: pass a checkpoint directory (RUN_DIR/models/<model>/best), a finished run "
            f"directory, an exported ONNX directory or a tfidf/static/cascade model directory"
        )
    if backend is None:
        backend = "auto" if is_exported_model(model_dir) else "torch-fp32"  # auto: an export's own backend
    name, _ = resolve_model_backend(model_dir, backend, device=device, batch_size=batch_size, max_length=max_length)
    predictor = ChunkPredictor(str(model_dir), name, device, batch_size, max_length)  # ONNX graphs: the cache
    return Classifier(predictor, model_dir, name)
