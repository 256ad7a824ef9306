"""A saved cascade as one model: its stages are loaded once, every text goes to the first stage, and the texts a
stage is not confident about (evaluation.cascade.confidence_scores below its threshold) go on to the next; the
last stage answers the rest. predict, serve, evaluate and the Python API load it through ChunkPredictor, which
calls load_cascade for a directory whose distilbench_model.json has "kind": "cascade".

distilbench_model.json of a cascade:
    {"kind": "cascade", "task": "multiclass" | "multilabel", "label_names": [...],
     "thresholds": [...],  # multilabel decision thresholds of the cascade's probabilities (the last stage's)
     "stages": [{"model": PATH, "threshold": T}, ..., {"model": PATH}],  # T: answer when confidence >= T;
                                                                          # null: never answers (not loaded)
     "max_loss_points": ..., "confidence": ..., "objective": ..., "distilbench": VERSION}
A stage's PATH is absolute, or relative to the cascade's directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distilbench.core.console import DistilbenchError
from distilbench.evaluation.cascade import answers, confidence_scores, rescale_to_thresholds
from distilbench.models.ladder import MANIFEST

KIND = "cascade"
MANIFEST_NAME = MANIFEST  # the one manifest of every model directory that is not a checkpoint or a bundle


def stage_paths(path: Path, manifest: dict) -> list[Path]:
    """Each stage's model directory: as written, or relative to the cascade's directory `path`."""
    stages = manifest.get("stages") or []
    if len(stages) < 2:
        raise DistilbenchError(f"{path}/{MANIFEST_NAME} lists {len(stages)} stage(s); a cascade has two or more")
    return [
        Path(stage["model"]) if Path(stage["model"]).is_absolute() else Path(path) / stage["model"] for stage in stages
    ]


class CascadeModel:
    """The loaded cascade: ChunkPredictor's interface (task, label_names, thresholds, probabilities(texts)) plus
    `stage_counts`, the rows each stage answered since it was loaded (a stage that never answers is not loaded)."""

    kind = KIND

    def __init__(
        self,
        task: str,
        label_names: list[str],
        stages: list[Any | None],
        thresholds: list[float | None],
        path: Path | None = None,
    ):
        self.path = path
        self.task = task
        self.label_names = list(label_names)
        self.stages = stages  # loaded stage predictors, None for one that never answers
        self.stage_thresholds = thresholds  # one per stage but the last
        self.thresholds = np.asarray(stages[-1].thresholds, dtype=float)
        self.stage_counts = [0] * len(stages)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """The answering stage's probabilities for each text (multilabel: rescaled so that the cascade's
        thresholds give that stage's own decisions)."""
        texts = list(texts)
        combined = np.zeros((len(texts), len(self.label_names)))
        waiting = np.arange(len(texts))
        for j, stage in enumerate(self.stages):
            if waiting.size == 0:
                break
            last = j == len(self.stages) - 1
            if stage is None:
                continue
            probs = np.asarray(stage.probabilities([texts[i] for i in waiting]), dtype=float)
            own = np.asarray(stage.thresholds, dtype=float)
            answered = (
                np.ones(waiting.size, dtype=bool)
                if last
                else answers(confidence_scores(self.task, probs, own), self.stage_thresholds[j])
            )
            combined[waiting[answered]] = rescale_to_thresholds(self.task, probs[answered], own, self.thresholds)
            self.stage_counts[j] += int(answered.sum())
            waiting = waiting[~answered]
        return combined


def check_stage(stage, task: str, label_names: list[str], where: Path) -> None:
    """A loaded stage must have the cascade's task and labels (a model replaced since the cascade was saved)."""
    if stage.task != task or list(stage.label_names) != list(label_names):
        raise DistilbenchError(
            f"the cascade {where} expects a {task} model with labels {', '.join(label_names)}; one of its stages is "
            f"a {stage.task} model with labels {', '.join(stage.label_names)}. Build the cascade again"
        )


def load_cascade(
    path: Path,
    manifest: dict,
    load_stage: Callable[[str], Any] | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
) -> CascadeModel:
    """A saved cascade directory `path` (its distilbench_model.json read as `manifest`) with each stage loaded
    once, by `load_stage(model_dir)` (default: a ChunkPredictor in `backend` on `device`, auto as `predict`
    resolves it)."""
    if manifest.get("kind") != KIND:
        raise DistilbenchError(f"{path} is not a cascade (its {MANIFEST_NAME} says kind {manifest.get('kind')!r})")
    task, label_names = manifest["task"], list(manifest["label_names"])
    paths = stage_paths(Path(path), manifest)
    thresholds = [stage.get("threshold") for stage in manifest["stages"][:-1]]
    if load_stage is None:
        load_stage = predictor_loader(backend, device, batch_size, max_length)
    stages = []
    for j, model in enumerate(paths):
        if j < len(paths) - 1 and thresholds[j] is None:
            stages.append(None)  # it answers nothing: not loaded
            continue
        if not model.exists():
            raise DistilbenchError(f"stage {j + 1} of the cascade {path} is missing: {model} does not exist")
        stage = load_stage(str(model))
        check_stage(stage, task, label_names, Path(path))
        stages.append(stage)
    return CascadeModel(task, label_names, stages, thresholds, Path(path))


def _sample_texts() -> list[str]:
    """auto's calibration texts for a checkpoint outside a run (imported only then: it needs torch)."""
    from distilbench.runtime.auto import builtin_sample_texts

    return builtin_sample_texts()


def predictor_loader(backend: str, device: str, batch_size: int, max_length: int | None) -> Callable[[str], Any]:
    """Loads a stage as a ChunkPredictor in `backend`: auto is what `predict --backend auto` runs (a checkpoint's
    cached or measured choice, an exported model's own graph, a tfidf or static model's only way)."""

    def load(model_dir: str):
        from distilbench.runtime.predict import ChunkPredictor, resolve_model_backend

        name, _ = resolve_model_backend(
            model_dir,
            backend,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            held_texts=_sample_texts,
            show=False,
        )
        return ChunkPredictor(model_dir, name, device, batch_size, max_length)

    return load
