"""Load and run a model directory holding distilbench_model.json: a TF-IDF model (scikit-learn's vectorizers),
a model2vec static model (numpy only), or a cascade of models (runtime/cascade.py). None of them imports torch.

The manifest names the kind, task and labels, the multilabel thresholds and the probability calibration fitted
on validation, and the size and SHA-256 of every file, so a damaged directory is refused, never half-read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError, ModelNotFoundError
from distilbench.models.ladder import MANIFEST
from distilbench.runtime.batching import logits_to_probs
from distilbench.runtime.bundle import file_sha256, verify_bundle

MANIFEST_FORMAT = 1
# the TfidfVectorizer settings a tfidf model saves beside its vocabulary and idf (training/ladder.py)
TFIDF_PARAMS = (
    "analyzer",
    "ngram_range",
    "lowercase",
    "sublinear_tf",
    "norm",
    "use_idf",
    "smooth_idf",
    "token_pattern",
    "strip_accents",
    "binary",
)


def is_text_model(path: str | Path) -> bool:
    """Whether `path` is a directory distilbench_model.json describes (a light model or a cascade)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    """The manifest of a light model directory, its files checked against their sizes and checksums."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{path / MANIFEST} cannot be read ({exc}); train or export the model again") from None
    if manifest.get("format", 0) > MANIFEST_FORMAT:
        raise DistilbenchError(f"{path} was written by a newer distilbench; upgrade distilbench to load it")
    verify_bundle(path, {"files": manifest.get("files"), "source": manifest.get("source")})
    return manifest


def model_size_mb(path: str | Path) -> float:
    """The size of a light model's files as its manifest lists them, in MB (10^6 bytes)."""
    files = read_manifest(path).get("files") or {}
    return sum(entry["bytes"] for entry in files.values()) / 1e6


def write_manifest(path: Path, fields: dict) -> dict:
    """Write distilbench_model.json last, with the size and SHA-256 of every other file in `path`."""
    from distilbench.runs import write_json_atomic

    files = {
        item.relative_to(path).as_posix(): {"bytes": item.stat().st_size, "sha256": file_sha256(item)}
        for item in sorted(path.rglob("*"))
        if item.is_file() and item.name != MANIFEST
    }
    manifest = {"format": MANIFEST_FORMAT, **fields, "files": files}
    write_json_atomic(path / MANIFEST, manifest)
    return manifest


def update_manifest(path: Path, **fields) -> dict:
    """Add or replace manifest fields (thresholds, calibration) of a saved light model."""
    manifest = read_manifest(path)
    manifest.update(fields)
    manifest.pop("files", None)
    manifest.pop("format", None)
    return write_manifest(path, manifest)


class LightModel:
    """A loaded light model: `probabilities(texts)` (calibrated when a calibration is saved), `raw_probabilities`,
    the task, label names and (multilabel) decision thresholds on the scale `probabilities` returns."""

    def __init__(self, path: Path, manifest: dict, predict_raw):
        from distilbench.evaluation.calibration import calibrate_thresholds

        self.path = path
        self.kind = manifest["kind"]
        self.task = manifest["task"]
        self.label_names = list(manifest["label_names"])
        self.calibration = manifest.get("calibration")
        self.params = manifest.get("params")
        raw = np.asarray(manifest.get("thresholds") or [0.5] * len(self.label_names), dtype=float)
        self.raw_thresholds = raw
        self.thresholds = calibrate_thresholds(self.task, raw, self.calibration)
        self._predict_raw = predict_raw

    def raw_probabilities(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return self._predict_raw(list(texts))

    def probabilities(self, texts: list[str]) -> np.ndarray:
        from distilbench.evaluation.calibration import apply_calibration

        return apply_calibration(self.task, self.raw_probabilities(texts), self.calibration)


def _columns(classes, label_names: list[str], integer_classes: bool) -> np.ndarray:
    """Where each of distilbench's labels is among a model's classes_ (by index or by name)."""
    classes = [int(c) if integer_classes else str(c) for c in classes]
    wanted = list(range(len(label_names))) if integer_classes else label_names
    missing = [label_names[i] for i, c in enumerate(wanted) if c not in classes]
    if missing:
        raise DistilbenchError(f"the saved model has no output for label(s) {', '.join(missing)}; train it again")
    return np.asarray([classes.index(c) for c in wanted])


def _reordered(probs: np.ndarray, columns: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(probs, dtype=np.float32)[:, columns])


def load_tfidf(path: Path, manifest: dict) -> LightModel:
    """A TF-IDF model from tfidf.json and weights.npz: scikit-learn's vectorizers rebuilt with their saved
    vocabulary and idf, then the linear layer and a softmax (multiclass) or sigmoid per label in numpy."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError:
        raise DistilbenchError("a tfidf model needs scikit-learn: pip install 'distilbench[tfidf]'") from None
    from scipy import sparse

    if not (path / "tfidf.json").is_file():
        raise DistilbenchError(f"{path} has no tfidf.json (an older distilbench saved it another way); train it again")
    saved = json.loads((path / "tfidf.json").read_text())
    with np.load(path / "weights.npz", allow_pickle=False) as weights:
        arrays = {name: weights[name] for name in weights.files}
    vectorizers = []
    for i, entry in enumerate(saved["vectorizers"]):
        params = {**entry["params"], "ngram_range": tuple(entry["params"]["ngram_range"])}
        vectorizer = TfidfVectorizer(**params, dtype=np.float32)
        vectorizer.vocabulary_ = entry["vocabulary"]
        vectorizer.idf_ = arrays[f"idf_{i}"]
        vectorizers.append(vectorizer)
    coef_t, intercept = np.ascontiguousarray(arrays["coef"].T), arrays["intercept"]

    def predict_raw(texts: list[str]) -> np.ndarray:
        features = sparse.hstack([v.transform(texts) for v in vectorizers]).tocsr()
        scores = np.asarray(features @ coef_t) + intercept
        return logits_to_probs(manifest["task"], scores).astype(np.float32)

    return LightModel(path, manifest, predict_raw)


def load_static(path: Path, manifest: dict) -> LightModel:
    """A model2vec StaticModelPipeline (static embeddings and an MLP head, numpy only)."""
    try:
        from model2vec.inference import StaticModelPipeline
    except ImportError:
        raise DistilbenchError("a static model needs model2vec: pip install distilbench") from None
    pipeline = StaticModelPipeline.from_pretrained(path)
    columns = _columns(pipeline.classes_, manifest["label_names"], integer_classes=False)

    def predict_raw(texts: list[str]) -> np.ndarray:
        return _reordered(pipeline.predict_proba(texts, use_multiprocessing=False), columns)

    return LightModel(path, manifest, predict_raw)


def load_text_model(path: str | Path):
    """The model a distilbench_model.json directory holds: a LightModel, or a cascade of models."""
    path = Path(path)
    manifest = read_manifest(path)
    kind = manifest.get("kind")
    if kind == "tfidf":
        return load_tfidf(path, manifest)
    if kind == "static":
        return load_static(path, manifest)
    if kind == "cascade":
        from distilbench.runtime.cascade import load_cascade

        return load_cascade(path, manifest)
    raise DistilbenchError(f"{path}: unknown model kind {kind!r} in {MANIFEST}; upgrade distilbench to load it")


class TextBatchBackend:
    """A light model or cascade as `distilbench bench` measures it: called on a batch of texts ({"texts": [...]})
    it returns probabilities; it has no tokens, no FLOPs and no precision of its own."""

    first_token_only = False
    note = None
    max_positions = None

    def __init__(self, model):
        self.model = model
        self.name = model.kind
        self.num_labels = len(model.label_names)

    def __call__(self, batch: dict) -> np.ndarray:
        return self.model.probabilities(batch["texts"])

    def probabilities(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Probabilities of `texts`, `batch_size` at a time, in input order."""
        parts = [self({"texts": texts[i : i + batch_size]}) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_labels), dtype=np.float32)


def export_text_model(source: str | Path, out: str | Path) -> dict:
    """`distilbench export` of a tfidf, static or cascade model: the directory copied whole (checked against its
    manifest first), a cascade with each of its stages inside it (`stage-1`, ...; relative paths in its manifest),
    so the one directory can be moved and served anywhere. It appears whole or not at all; returns its manifest."""
    import shutil
    import tempfile

    source, out = Path(source).resolve(), Path(out)
    if out.exists():
        raise DistilbenchError(f"{out} exists; export into a new directory")
    manifest = read_manifest(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        fields = {key: value for key, value in manifest.items() if key not in ("files", "format")}
        if manifest["kind"] == "cascade":
            fields["stages"] = _copy_stages(source, manifest, building)
            (building / "cascade.json").write_bytes((source / "cascade.json").read_bytes())
        else:
            for name in manifest.get("files") or {}:
                (building / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, building / name)
        written = write_manifest(building, {**fields, "source": str(source)})
        building.rename(out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return written


def _copy_stages(source: Path, manifest: dict, building: Path) -> list[dict]:
    """Each stage of a cascade exported into `building`/stage-<j>; the manifest's stages with relative paths."""
    import shutil

    from distilbench.runtime.cascade import stage_paths

    stages = []
    for j, (stage, path) in enumerate(zip(manifest["stages"], stage_paths(source, manifest)), start=1):
        target = building / f"stage-{j}"
        if is_text_model(path):
            export_text_model(path, target)
        else:  # a checkpoint or an exported bundle: copied as it is
            shutil.copytree(path.resolve(), target)
        stages.append({**stage, "model": target.name})
    return stages
