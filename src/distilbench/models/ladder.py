"""The small rungs of the ladder: model kinds that are not transformers, named like any model in `--models`.

- `tfidf`: TF-IDF word and character n-grams with logistic regression (scikit-learn), seconds to train;
- `static:<teacher>`: model2vec static token embeddings distilled from a teacher (an alias, a checkpoint or a
  fine-tuned run's model, from local weights) with model2vec's trainable classifier on top.

A trained one is a directory holding `distilbench_model.json` (its manifest: kind, task, labels, thresholds,
calibration, files and checksums) beside its own files; runtime/light.py loads it without torch."""

from __future__ import annotations

from dataclasses import dataclass

MANIFEST = "distilbench_model.json"  # a directory holding it is a light model (or a cascade) distilbench can run
LIGHT_KINDS = ("tfidf", "static")
TEXT_MODEL_KINDS = (*LIGHT_KINDS, "cascade")  # the kinds a distilbench_model.json names; each is its own backend


@dataclass(frozen=True)
class LadderSpec:
    """`tfidf`; `static:<teacher>` (kind static, the teacher it is distilled from); or `cascade:A+B[+C]` (kind
    cascade: models of the same run, smallest first, each answering the rows it is sure of)."""

    kind: str
    teacher: str | None = None
    stages: tuple[str, ...] = ()


def parse_ladder_spec(spec: str) -> LadderSpec | None:
    """The ladder spec in `spec`, or None when `spec` names a transformer."""
    if spec == "tfidf":
        return LadderSpec("tfidf")
    if spec.startswith("cascade:"):
        stages = tuple(stage for stage in spec[len("cascade:") :].split("+") if stage)
        if len(stages) < 2:
            from distilbench.core.console import DistilbenchError

            raise DistilbenchError(f"{spec}: a cascade needs two models or more, e.g. cascade:tfidf+minilm-l6")
        return LadderSpec("cascade", stages=stages)
    kind, sep, teacher = spec.partition(":")
    if kind == "static" and sep:
        if not teacher:
            from distilbench.core.console import DistilbenchError

            raise DistilbenchError("static: needs a teacher, e.g. static:minilm-l6")
        return LadderSpec("static", teacher)
    return None
