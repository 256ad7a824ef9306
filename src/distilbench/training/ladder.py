"""Train the small rungs of the ladder (models/ladder.py): a TF-IDF + logistic-regression model with
scikit-learn, and a model2vec static model distilled from a teacher with model2vec's trainable classifier.

Each is saved as a directory runtime/light.py loads without torch: its own files and distilbench_model.json."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError, say
from distilbench.models.ladder import LadderSpec
from distilbench.runtime.light import TFIDF_PARAMS, write_manifest

# TF-IDF settings tried, each fitted and scored on the validation split: word 1-2-grams, or those and character
# 2-5-grams within word boundaries (slower to compute, better on noisy text), with these regularisation strengths
TFIDF_FEATURES = ("word", "word+char")
TFIDF_C = (4.0, 16.0, 32.0)
# word n-grams alone are kept when within this many points of the best setting on validation: they predict
# several times faster (measured on the news headlines: 5x), speed is what this rung is for, and half a point on
# a validation split of a few thousand rows is within its noise
WORD_ONLY_TOLERANCE_POINTS = 0.5
STATIC_PCA_DIMS = 256  # model2vec's default dimensionality for a distilled static model


@dataclass
class LadderData:
    """What a ladder model trains on: texts and label arrays (class indices, or a 0/1 matrix for multilabel)."""

    task: str
    label_names: list[str]
    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray


@dataclass
class LadderModel:
    """A trained ladder model: how it was made, its parameter count and how long training took."""

    kind: str
    method: str
    params: int
    train_time_s: float
    architecture: dict


def tfidf_pipeline(task: str, features: str, c: float, seed: int):
    """TF-IDF features (`word`, or `word+char` n-grams) and a logistic regression (one-vs-rest for multilabel)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline, make_union

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    if features == "word+char":
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, dtype=np.float32)
        vectorizer = make_union(vectorizer, chars)
    classifier = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    if task == "multilabel":
        classifier = OneVsRestClassifier(classifier)
    return make_pipeline(vectorizer, classifier)


def _primary_score(task: str, labels: np.ndarray, probs: np.ndarray) -> float:
    from distilbench.evaluation.metrics import compute_metrics, primary_metric

    names = [str(i) for i in range(probs.shape[1])]
    return compute_metrics(task, labels, probs, names)[primary_metric(task)]


def fit_tfidf(data: LadderData, out: Path, seed: int) -> LadderModel:
    """Fit TF-IDF + logistic regression for every setting (TFIDF_FEATURES x TFIDF_C), keep the best on
    validation (word n-grams alone when within WORD_ONLY_TOLERANCE_POINTS of it), and save it as arrays and
    JSON (runtime/light.py's TfidfArrays; no pickle, so loading runs no code)."""
    start = time.perf_counter()
    fitted, scores = {}, {}
    for setting in [(features, c) for features in TFIDF_FEATURES for c in TFIDF_C]:
        fitted[setting] = tfidf_pipeline(data.task, *setting, seed).fit(data.train_texts, _sklearn_targets(data))
        probs = tfidf_probabilities(fitted[setting], data.val_texts)
        scores[setting] = _primary_score(data.task, data.val_labels, probs)
    kept = _kept_setting(scores)
    model = fitted[kept]
    seconds = time.perf_counter() - start
    steps = [step for _, step in model[0].transformer_list] if kept[0] == "word+char" else [model[0]]
    coef, intercept = linear_weights(model[-1], data.task, len(data.label_names))
    save_tfidf(out, steps, coef, intercept)
    vocabulary = sum(len(step.vocabulary_) for step in steps)
    tried = ", ".join(f"{f} C {c}: {score:.4f}" for (f, c), score in scores.items())
    say(f"  tfidf: {kept[0]} n-grams ({vocabulary:,}), C {kept[1]} kept (validation {tried})")
    described = "word 1-2-grams" + (" and character 2-5-grams" if kept[0] == "word+char" else "")
    return LadderModel(
        "tfidf",
        f"TF-IDF {described}, logistic regression (C {kept[1]}), chosen on validation",
        int(vocabulary * len(data.label_names)),  # one weight per n-gram and label (or class)
        seconds,
        {"model_type": "tfidf", "layers": 0, "hidden_size": None, "features": vocabulary},
    )


def _kept_setting(scores: dict[tuple[str, float], float]) -> tuple[str, float]:
    """The best setting on validation, or the best word-only one when it is within the tolerance of it."""
    best = max(scores, key=lambda s: (scores[s], -s[1]))
    word = max((s for s in scores if s[0] == "word"), key=lambda s: (scores[s], -s[1]))
    return word if 100 * (scores[best] - scores[word]) <= WORD_ONLY_TOLERANCE_POINTS else best


def linear_weights(classifier, task: str, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The logistic regression as one weight row and intercept per label, in the label order: multinomial
    (multiclass; a binary model's single row becomes two, -z/2 and z/2, giving the same softmax) or one-vs-rest
    (multilabel; a label that never or always occurs in training gets a constant far from its threshold)."""
    if task == "multiclass":
        coef, intercept = classifier.coef_, classifier.intercept_
        if coef.shape[0] == 1:
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        rows = np.zeros((n_labels, coef.shape[1]), dtype=np.float32)
        intercepts = np.full(n_labels, -20.0, dtype=np.float32)  # a class absent from training: never predicted
        for row, label in enumerate(classifier.classes_):
            rows[int(label)], intercepts[int(label)] = coef[row], intercept[row]
        return rows, intercepts
    rows, intercepts = [], []
    width = classifier.estimators_[0].coef_.shape[1] if hasattr(classifier.estimators_[0], "coef_") else None
    for estimator in classifier.estimators_:
        if hasattr(estimator, "coef_"):
            rows.append(estimator.coef_[0])
            intercepts.append(estimator.intercept_[0])
        else:  # sklearn's constant predictor for a label with one value in training
            rows.append(None)
            intercepts.append(20.0 if float(np.ravel(estimator.y_)[0]) else -20.0)
    width = next(len(r) for r in rows if r is not None) if width is None else width
    coef = np.vstack([r if r is not None else np.zeros(width) for r in rows])
    return coef.astype(np.float32), np.asarray(intercepts, dtype=np.float32)


def save_tfidf(out: Path, vectorizers: list, coef: np.ndarray, intercept: np.ndarray) -> None:
    """tfidf.json (each vectorizer's settings and vocabulary) and weights.npz (idf per vectorizer, the linear
    layer's weights over the vectorizers' features in order, its intercepts)."""
    out.mkdir(parents=True, exist_ok=True)
    settings = []
    for vectorizer in vectorizers:
        params = {key: getattr(vectorizer, key) for key in TFIDF_PARAMS}
        vocabulary = {term: int(index) for term, index in vectorizer.vocabulary_.items()}
        settings.append({"params": {**params, "ngram_range": list(params["ngram_range"])}, "vocabulary": vocabulary})
    (out / "tfidf.json").write_text(json.dumps({"vectorizers": settings}, ensure_ascii=False))
    idf = {f"idf_{i}": v.idf_.astype(np.float32) for i, v in enumerate(vectorizers)}
    np.savez(out / "weights.npz", coef=coef, intercept=intercept, **idf)


def _sklearn_targets(data: LadderData) -> np.ndarray:
    return data.train_labels.astype(int)


def tfidf_probabilities(model, texts: list[str]) -> np.ndarray:
    """Probabilities of a fitted TF-IDF pipeline, one column per label in distilbench's label order."""
    return np.asarray(model.predict_proba(texts), dtype=np.float32)


def fit_static(spec: LadderSpec, data: LadderData, out: Path, seed: int) -> LadderModel:
    """Distil model2vec static embeddings from the teacher (local weights), fine-tune model2vec's classifier on
    the training split with early stopping on the validation split, and save its numpy-only pipeline."""
    try:
        from model2vec.distill import distill
        from model2vec.train import StaticModelForClassification
    except ImportError as exc:
        raise DistilbenchError(
            f"static:<teacher> needs model2vec with its distillation and training parts ({exc.name} is missing): "
            "pip install 'distilbench[train]'"
        ) from None
    from distilbench.models.registry import resolve_model_path

    start = time.perf_counter()
    teacher = resolve_model_path(spec.teacher)
    say(f"  distilling static embeddings from {spec.teacher} (model2vec, {STATIC_PCA_DIMS} dimensions) ...")
    static = distill(model_name=teacher, pca_dims=STATIC_PCA_DIMS)
    classifier = StaticModelForClassification.from_static_model(model=static)
    classifier.fit(
        data.train_texts,
        _model2vec_targets(data, data.train_labels),
        X_val=data.val_texts,
        y_val=_model2vec_targets(data, data.val_labels),
        random_seed=seed,
    )
    pipeline = classifier.to_pipeline()
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(str(out))
    vocabulary, dims = pipeline.model.embedding.shape
    head = sum(layer.weight.size + layer.bias.size for layer in pipeline.head.layers)
    return LadderModel(
        "static",
        f"model2vec static embeddings distilled from {spec.teacher}, model2vec classifier fine-tuned on labels",
        int(vocabulary * dims + head),
        seconds,
        {"model_type": "model2vec", "layers": 0, "hidden_size": int(dims), "vocabulary": int(vocabulary)},
    )


def _model2vec_targets(data: LadderData, labels: np.ndarray) -> list:
    """model2vec's label format: the class name per text, or the list of label names per text (multilabel)."""
    if data.task == "multiclass":
        return [data.label_names[i] for i in labels]
    return [[name for name, value in zip(data.label_names, row) if value] for row in labels]


def train_ladder_model(spec: LadderSpec, data: LadderData, out: Path, seed: int, progress: bool = True) -> LadderModel:
    """Train `spec` on `data` and save it in `out` (its files, then the manifest, written last); `progress`
    False silences model2vec's progress bars."""
    with _progress_bars(progress):
        trained = fit_tfidf(data, out, seed) if spec.kind == "tfidf" else fit_static(spec, data, out, seed)
    fields = {"kind": spec.kind, "task": data.task, "label_names": list(data.label_names), "params": trained.params}
    write_manifest(out, {**fields, "method": trained.method, "architecture": trained.architecture})
    return trained


@contextlib.contextmanager
def _progress_bars(shown: bool):
    """The libraries' own progress bars (model2vec's distillation and epochs, drawn by tqdm on stderr) shown, or
    swallowed when progress is off; distilbench's messages go to stdout and its warnings through logging."""
    if shown:
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield
