"""The ONNX Runtime backend and what running an exported bundle needs: onnxruntime and numpy, no torch.

backends.py imports Backend and OnnxBackend from here and adds the PyTorch backends; predict, serve and the
Python API load a bundle through `load_exported` without ever importing torch or transformers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError
from distilbench.runtime.batching import max_positions
from distilbench.runtime.bundle import (
    OPENVINO_BF16_MODEL,
    OPENVINO_INT8_MODEL,
    export_info,
    graph_files,
    is_exported_model,
    read_exported,
)
from distilbench.runtime.names import BACKENDS

ONNX_INSTALL = "pip install onnxruntime onnx onnxscript"
ALIASES = {"onnx": "onnx-fp32"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise DistilbenchError(f"ONNX backends need onnxruntime and onnx: {ONNX_INSTALL}") from None
    return onnxruntime


def session_threads() -> int:
    """ONNX Runtime's intra-op threads: torch's count where torch is loaded (so `--threads` and a worker's share
    hold for both), else OMP_NUM_THREADS, else 0 (ONNX Runtime's own choice: one per physical core)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return torch.get_num_threads()
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session over `path`, without busy-waiting threads."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or session_threads()
    # no busy-waiting between calls: spinning ORT threads would steal the cores from whatever runs next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Backend:
    """A classifier in one runtime: int64 arrays (batch, seq) in, float32 logits (batch, num_labels) out."""

    name: str
    input_names: list[str]
    num_labels: int
    first_token_only: bool = False  # the encoder's last layer computes the first token alone (fused.py)
    max_positions: int | None = None  # tokens the encoder can take (batching.max_positions)
    pad_multiple: int = 1  # batches padded to a multiple of this many tokens (batching.padded_batches)
    note: str | None = None  # what the caller should know about how it runs (bench.json's notes)

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} inputs={self.input_names}>"


class OnnxBackend(Backend):
    """An ONNX Runtime CPU session over an exported graph; feeds only the inputs the graph declares."""

    def __init__(self, name: str, path: Path, num_labels: int, positions: int | None = None):
        self.name = name
        self.path = path
        self.num_labels = num_labels
        self.max_positions = positions
        self.session = onnx_session(path)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(batch[k], dtype=np.int64) for k in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return logits.astype(np.float32, copy=False)


# The backends that run an exported bundle's graph, by the backend it was exported as: an fp32 graph runs in ONNX
# Runtime or OpenVINO; an openvino-int8 bundle holds its fp32 graph too (model.onnx) beside the int8 model.
FP32_GRAPH = ("onnx-fp32", "openvino-fp32", "openvino-bf16")
BUNDLE_BACKENDS = {
    "onnx-fp32": FP32_GRAPH,
    "openvino-fp32": FP32_GRAPH,
    "openvino-bf16": FP32_GRAPH,
    "openvino-int8": ("openvino-int8", "onnx-fp32", "openvino-fp32", "openvino-bf16"),
}


def bundle_backends(exported: str | None) -> tuple[str, ...]:
    """The backends that can run a bundle exported as `exported` (None: an export without export.json, fp32)."""
    exported = exported or "onnx-fp32"
    return BUNDLE_BACKENDS.get(exported, (exported,))


def check_backend(backend: str, model_dir: str | Path | None = None) -> str:
    """A backend name with aliases applied, checked against `model_dir`: for an exported directory 'auto' is the
    backend it was exported as (an OpenVINO one only where openvino is installed; else its fp32 graph in ONNX
    Runtime, with a warning) and only backends that run its graph are accepted; for a checkpoint 'auto' stays
    'auto' (backend_choice resolves it by measurement)."""
    name = ALIASES.get(backend, backend)
    if name != "auto" and name not in BACKENDS:
        raise DistilbenchError(f"unknown backend '{backend}': choose auto or one of {', '.join(BACKENDS)}")
    if model_dir is None or not is_exported_model(model_dir):
        return name
    exported = export_info(model_dir).get("backend") or "onnx-fp32"
    if name == "auto":
        return _bundle_auto(model_dir, exported)
    allowed = bundle_backends(exported)
    if name not in allowed:
        raise DistilbenchError(
            f"{model_dir} is an exported ONNX model ({exported}): it runs as {' or '.join(allowed)} (predict and "
            f"serve: "
            f"--backend auto runs {exported}), not {name}; for another backend, use the checkpoint it was "
            "exported from"
        )
    return name


def _bundle_auto(model_dir: str | Path, exported: str) -> str:
    """What `--backend auto` runs a bundle as: the backend it was exported for, or where this machine cannot run
    that one (openvino missing; bf16 on a CPU without native bf16) its fp32 graph in ONNX Runtime, with a warning."""
    from distilbench.core.console import warn
    from distilbench.runtime.machine import cpu_native_bf16

    if exported.startswith("openvino-") and not _openvino_installed():
        warn(
            f"{model_dir} was exported for {exported}, but openvino is not installed: running its fp32 graph "
            f"as onnx-fp32 (slower; for {exported}: pip install 'distilbench[openvino]')"
        )
        return "onnx-fp32"
    if exported == "openvino-bf16" and not cpu_native_bf16():
        warn(f"{model_dir} was exported for openvino-bf16, but this CPU has no native bf16: running it as onnx-fp32")
        return "onnx-fp32"
    return exported


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def openvino_graph(exported, name: str) -> Path:
    """The model an OpenVINO backend compiles from a bundle: the NNCF int8 model for openvino-int8, the fp16-weight
    model an openvino-bf16 bundle holds for openvino-bf16, else the fp32 ONNX graph."""
    if name == "openvino-int8":
        return exported.path / OPENVINO_INT8_MODEL
    if name == "openvino-bf16" and (exported.path / OPENVINO_BF16_MODEL).is_file():
        return exported.path / OPENVINO_BF16_MODEL
    return exported.onnx_path


def load_exported(path: str | Path, backend: str = "auto"):
    """An exported directory in its backend (or another that runs its graph, bundle_backends): (backend,
    bundle.ExportedModel), the latter with the tokenizer, task, label names and config (thresholds inside). Imports
    neither torch nor transformers."""
    name = check_backend(backend, path)
    exported = read_exported(path)
    positions = max_positions(exported.config)
    if name.startswith("openvino-"):
        from distilbench.runtime.openvino_backend import OpenVinoBackend, bundle_key

        graph = openvino_graph(exported, name)
        files = graph_files(graph) if graph == exported.onnx_path else (graph.name, graph.with_suffix(".bin").name)
        key = bundle_key(exported.info, *files)  # the manifest's SHA-256s, checked by read_exported just now
        return OpenVinoBackend(name, graph, len(exported.label_names), positions, cache_key=key), exported
    runtime = OnnxBackend(name, exported.onnx_path, len(exported.label_names), positions)
    return runtime, exported
