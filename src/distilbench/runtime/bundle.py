"""An exported bundle (`distilbench export`) read without torch or transformers: its manifest checked, config.json
read as JSON (labels, problem type, thresholds, max positions), its tokenizer from tokenizer.json (tokenizer.py).

export.py writes bundles and imports what reads them from here; predict, serve and the Python API's load run a
bundle through this module and onnx_backend.py alone, so a runtime install never pays torch's import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from distilbench.core.console import DistilbenchError, ModelNotFoundError

BUNDLE_FORMAT = 1  # export.json's `bundle_format`; bumped when a bundle's layout changes meaning
GRAPH_FILE = "model.onnx"
# The graph's weights, beside it as ONNX external data: ONNX Runtime maps them from disk instead of parsing them out
# of the protobuf, so a session opens in a third of the time (0.045 s instead of 0.12 s for MiniLM-L6).
GRAPH_DATA_FILE = "model.onnx.data"
# OpenVINO models beside the graph (their weights in the .bin of the same name): openvino-int8 (NNCF's), and for an
# openvino-bf16 bundle its graph with fp16 weights (openvino_backend.write_bf16_model)
OPENVINO_INT8_MODEL = "model.openvino-int8.xml"
OPENVINO_BF16_MODEL = "model.openvino-bf16.xml"
# transformers' problem types of distilbench's tasks (as models.registry.PROBLEM_TYPES, read here without it)
TASK_OF_PROBLEM = {"single_label_classification": "multiclass", "multi_label_classification": "multilabel"}


class BundleConfig:
    """A bundle's config.json as read from JSON: its keys as attributes (`config.model_type`), `to_dict()`,
    `num_labels` and `id2label` with int keys, like the transformers config the checkpoint loads as."""

    def __init__(self, values: dict):
        self._values = dict(values)

    def __getattr__(self, name: str):
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return dict(self._values)

    @property
    def id2label(self) -> dict[int, str]:
        saved = self._values.get("id2label") or {}
        if not saved:
            return {i: f"LABEL_{i}" for i in range(int(self._values.get("num_labels") or 2))}
        return {int(key): value for key, value in saved.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def architecture(self) -> dict:
        """Architecture facts for reports, as models.registry.describe gives them for a checkpoint."""
        values = self._values
        facts = {
            "model_type": values.get("model_type"),
            "layers": values.get("num_hidden_layers") or values.get("n_layers"),
            "hidden_size": values.get("hidden_size") or values.get("dim"),
        }
        head = (values.get("distilbench") or {}).get("head")
        return {**facts, "head": head} if head else facts

    def __repr__(self) -> str:
        return f"BundleConfig(model_type={self._values.get('model_type')!r}, labels={self.num_labels})"


@dataclass
class ExportedModel:
    """An exported directory (`distilbench export`): the ONNX graph and what is needed around it."""

    path: Path
    onnx_path: Path
    backend: str | None  # onnx-fp32 or onnx-int8 as exported; None where export.json does not say
    tokenizer: object
    task: str
    label_names: list[str]
    config: object
    info: dict = field(default_factory=dict)  # export.json


def is_exported_model(path: str | Path) -> bool:
    """True for a directory holding an ONNX classifier (model.onnx beside config.json)."""
    path = Path(path)
    return path.is_dir() and (path / GRAPH_FILE).is_file() and (path / "config.json").is_file()


def graph_files(graph: Path) -> tuple[str, ...]:
    """The names of an exported graph's files: the graph, and its external weights where it has them (bundles
    exported before the weights moved out hold the graph alone)."""
    data = graph.with_name(graph.name + ".data")
    return (graph.name, data.name) if data.is_file() else (graph.name,)


def export_info(path: str | Path) -> dict:
    """export.json of an exported directory ({} where there is none, e.g. an optimum export)."""
    try:
        return json.loads((Path(path) / "export.json").read_text())
    except (OSError, ValueError):
        return {}


def read_bundle_config(path: str | Path) -> BundleConfig:
    """An exported directory's config.json, read as JSON."""
    config_path = Path(path) / "config.json"
    try:
        return BundleConfig(json.loads(config_path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise DistilbenchError(f"cannot read {config_path}: {exc}; copy or export the bundle again") from None


def bundle_task_labels(path: str | Path, config: BundleConfig | None = None) -> tuple[str, list[str]]:
    """Task and label names of an exported directory, from its config.json alone (no transformers)."""
    config = config or read_bundle_config(path)
    problem = getattr(config, "problem_type", None)
    task = TASK_OF_PROBLEM.get(problem)
    if task is None:
        raise ModelNotFoundError(f"{path} holds no classifier fine-tuned by distilbench (problem_type is {problem!r})")
    labels = config.id2label
    return task, [labels[i] for i in range(len(labels))]


def read_exported(path: str | Path) -> ExportedModel:
    """An exported directory's graph path, tokenizer, task, label names, config (thresholds inside) and
    export.json, its files checked against the manifest first; the graph itself is loaded by the backend.
    Reads JSON and tokenizer.json only: no torch, no transformers."""
    from distilbench.runtime.tokenizer import TOKENIZER_FILE, BundleTokenizer

    path = Path(path)
    if not is_exported_model(path):
        raise DistilbenchError(f"{path} is not an exported ONNX model (model.onnx and config.json)")
    info = export_info(path)
    verify_bundle(path, info)
    config = read_bundle_config(path)
    task, label_names = bundle_task_labels(path, config)
    if (path / TOKENIZER_FILE).is_file():
        tokenizer = BundleTokenizer(path)
    else:  # a bundle from elsewhere with a slow tokenizer only: transformers reads it
        from distilbench.models.registry import load_tokenizer

        tokenizer = load_tokenizer(str(path))
    return ExportedModel(path, path / GRAPH_FILE, info.get("backend"), tokenizer, task, label_names, config, info)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_state(item: Path) -> list[int]:
    """What changes whenever a file's content can have changed: its size, modification and status-change times
    (no user-level call sets the ctime back)."""
    stat = item.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _memo_path(item: Path) -> Path | None:
    """Where the cache remembers that `item` (by its absolute path) matched its checksum; None without a cache."""
    from distilbench.core.cache import cache_dir

    try:
        root = cache_dir() / "verified"
        root.mkdir(exist_ok=True)
    except (OSError, DistilbenchError):
        return None
    return root / (hashlib.sha256(str(item.resolve()).encode()).hexdigest()[:32] + ".json")


def checksum_matches(item: Path, sha256: str) -> bool:
    """Whether the file's SHA-256 is `sha256`: hashed once, then remembered in the cache with the file's state, so a
    later process (a cold start) skips hashing a file that cannot have changed since."""
    memo = _memo_path(item)
    state = _file_state(item)
    if memo is not None and memo.is_file():
        try:
            if json.loads(memo.read_text()) == {"state": state, "sha256": sha256}:
                return True
        except (OSError, ValueError):
            pass
    if file_sha256(item) != sha256:
        return False
    if memo is not None:
        try:
            memo.write_text(json.dumps({"state": state, "sha256": sha256}))
        except OSError:
            pass  # the check holds; only the next start hashes again
    return True


def verify_bundle(path: str | Path, info: dict) -> None:
    """Check every file export.json lists against its size and SHA-256 (bundles exported before the manifest
    list none and pass); a missing, truncated or changed file ends with a message, never a wrong answer. A file
    whose size and times are those of an earlier successful check is not hashed again (checksum_matches)."""
    path = Path(path)
    if info.get("bundle_format", 0) > BUNDLE_FORMAT:
        raise DistilbenchError(
            f"{path} was exported by a newer distilbench (bundle format {info['bundle_format']}); upgrade "
            f"distilbench to load it"
        )
    for name, expected in (info.get("files") or {}).items():
        item = path / name
        if not item.is_file():
            problem = "is missing"
        elif item.stat().st_size != expected["bytes"]:
            problem = f"has {item.stat().st_size} bytes, not the {expected['bytes']} exported (truncated?)"
        elif not checksum_matches(item, expected["sha256"]):
            problem = "differs from the file exported (its SHA-256 changed)"
        else:
            continue
        source = info.get("source")
        raise DistilbenchError(
            f"{item} {problem}: the exported bundle is damaged; copy it again, or export it again"
            + (f" from {source}" if source else "")
        )
