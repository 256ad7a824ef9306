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
from distilbench.runtime.bundle import export_info, is_exported_model, read_exported
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


def check_backend(backend: str, model_dir: str | Path | None = None) -> str:
    """A backend name with aliases applied, checked against `model_dir`: for an exported ONNX directory
    'auto' is its own graph's backend and nothing else runs it; for a checkpoint 'auto' stays 'auto'
    (backend_choice resolves it by measurement)."""
    name = ALIASES.get(backend, backend)
    if model_dir is not None and is_exported_model(model_dir):
        exported = export_info(model_dir).get("backend")
        if name == "auto":
            return exported or "onnx-fp32"
        if name not in BACKENDS:
            raise DistilbenchError(f"unknown backend '{backend}': choose auto or one of {', '.join(BACKENDS)}")
        if not name.startswith("onnx-") or (exported and name != exported):
            own = exported or "onnx-fp32"
            raise DistilbenchError(
                f"{model_dir} is an exported ONNX model: it runs only as {own} (predict and serve: "
                f"--backend auto or {own}), not {name}; for another backend, use the checkpoint "
                "it was exported from"
            )
        return name
    if name != "auto" and name not in BACKENDS:
        raise DistilbenchError(f"unknown backend '{backend}': choose auto or one of {', '.join(BACKENDS)}")
    return name


def load_exported(path: str | Path, backend: str = "auto"):
    """An exported ONNX directory in its backend: (OnnxBackend, bundle.ExportedModel), the latter with the
    tokenizer, task, label names and config (thresholds inside). Imports neither torch nor transformers."""
    name = check_backend(backend, path)
    exported = read_exported(path)
    runtime = OnnxBackend(name, exported.onnx_path, len(exported.label_names), max_positions(exported.config))
    return runtime, exported
