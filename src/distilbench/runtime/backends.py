"""Inference backends: one call interface over PyTorch (fp32, bf16, int8), ONNX Runtime (fp32, int8) and OpenVINO
(fp32, bf16, int8; openvino_backend.py).

A backend wraps a loaded classifier and maps a padded batch of int64 numpy arrays (batch, seq) to
float32 logits (batch, num_labels), so speed comparisons time the same work in every runtime.
The caller's model keeps its weights (it is only put in eval mode): bf16, int8 and ONNX work on a copy.

torch-bf16 casts a copy of the model to bfloat16 rather than running torch.autocast over the fp32
model. Measured on this 2-core AVX512-BF16 CPU (with a benchmark running beside it, 1 thread), a
MiniLM-L6 classifier (hidden 384, 6 layers), batch 32, padded random texts, per forward:

    seq 32:   fp32 178 ms   autocast 58.5 ms   bf16 copy 42.6 ms
    seq 128:  fp32 780 ms   autocast 230 ms    bf16 copy 185 ms

(with 2 threads shared with the benchmark: fp32 988/1472, autocast 1377/1619, bf16 copy 859/1054 ms).
Autocast re-casts every weight on every call; the bf16 copy does not. Both agreed with fp32 on the
argmax of all 32 inputs; the largest logit difference was 0.0010 (copy) and 0.0004 (autocast).
On a CPU with oneDNN bf16 kernels, the copy's encoder layers are then fused (fused.py): prepacked
weights, one Q/K/V product, activations and residual additions inside the products, no work on
padding, and a last layer that computes only the first token where the head reads nothing else.

ONNX graphs are built by onnx_export.py: once per checkpoint in the cache (cache.py) when the caller
passes the checkpoint's key, else in a work directory on every call (models that live only in memory).
An exported directory (`distilbench export`) runs as it is, with its own graph.
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilbench.core.console import DistilbenchError, warn
from distilbench.models.inputs import model_input_names
from distilbench.runtime.export import build_onnx, cached_onnx, is_exported_model, static_record
from distilbench.runtime.fused import can_fuse, first_token_only, fuse_encoder_layers
from distilbench.runtime.inference import max_positions
from distilbench.runtime.machine import pick_device
from distilbench.runtime.names import BACKENDS
from distilbench.runtime.onnx_backend import (  # noqa: F401 (torch-free; callers import them from here too)
    ALIASES,
    Backend,
    OnnxBackend,
    check_backend,
    import_onnxruntime,
    load_exported,
)

log = logging.getLogger(__name__)

# Dynamic quantization scales the activations by each batch's range, so a text's logits (and, near a tie, its
# label) depend on the other texts in its batch: measured on 3,000 headlines, 0.8 % of labels changed with the
# order of the input. `auto` never chooses these; asked for by name, they warn once.
BATCH_DEPENDENT = ("torch-int8", "onnx-int8")
BATCH_DEPENDENT_WARNING = (
    "{name} quantizes activations per batch: a text's label can depend on the other texts in its batch "
    "(its order, batch size, worker); --backend auto never chooses it. Use torch-fp32 or onnx-fp32 for "
    "predictions that do not depend on batch mates"
)


class TorchBackend(Backend):
    """A PyTorch module run under inference_mode, with inputs moved to its device."""

    def __init__(self, name: str, model: nn.Module, input_names: list[str]):
        self.name = name
        self.model = model
        self.input_names = input_names
        self.num_labels = model.config.num_labels
        self.max_positions = max_positions(model.config)
        self.device = _model_device(model)
        self.first_token_only = first_token_only(model)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {
            k: torch.from_numpy(np.ascontiguousarray(batch[k], dtype=np.int64)).to(self.device)
            for k in self.input_names
        }
        logits = self.model(**inputs).logits
        return logits.float().cpu().numpy()


def load_backend(
    model,
    name: str,
    *,
    work_dir: str | Path | None = None,
    cache_key: str | None = None,
    calibration=None,
) -> Backend:
    """Wrap a loaded (eval-mode, fp32) transformers classifier in the named backend.

    ONNX backends: with `cache_key` (cache.checkpoint_key of the directory the model was loaded from) the
    graph is built once and reused from the cache; without one it is built in `work_dir` (model.onnx, and
    the quantized graph), a fresh temporary directory when None. onnx-int8-static is calibrated on
    `calibration` (static_quant.StaticCalibration); without it, the static graph cached last for `cache_key`.
    """
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise DistilbenchError(
            f"unknown backend '{name}': choose one of {', '.join(BACKENDS)} (or 'onnx' for onnx-fp32)"
        )
    if model.training:  # dropout would make logits random; same as inference.predict_logits
        model.eval()
    inputs = model_input_names(model)
    device = _model_device(model)
    if name in BATCH_DEPENDENT:
        _warn_batch_dependent(name)
    if name == "torch-fp32":
        return TorchBackend(name, model, inputs)
    if name == "torch-bf16":
        bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
        note = None
        if can_fuse(bf16) and not fuse_encoder_layers(bf16):  # CPU: encoder layers on prepacked oneDNN products
            note = (
                f"torch-bf16: fused.py does not know the layers of {_model_type(model)} (it fuses BERT- and "
                "DistilBERT-style layers); the plain bf16 model ran"
            )
            log.info(note)
        backend = TorchBackend(name, bf16, inputs)
        backend.note = note
        return backend
    if name == "torch-bf16-compiled":
        # inductor with frozen (prepacked) weights and dynamic shapes: one compilation of tens of seconds,
        # then fused kernels; pays off for large inputs of small models, where per-op overhead dominates
        bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
        return TorchBackend(name, torch.compile(bf16, dynamic=True, options={"freezing": True}), inputs)
    if name == "torch-int8":
        if device.type != "cpu":
            raise DistilbenchError(
                f"backend torch-int8 runs on CPU only; the model is on {device}. "
                "Move it to the CPU or choose torch-bf16."
            )
        engine = _quantized_engine()
        log.debug("torch-int8: dynamic quantization with engine %s", engine)
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model).float().eval(), {nn.Linear}, dtype=torch.qint8
            )
        return TorchBackend(name, quantized, inputs)
    import_onnxruntime()
    if device.type != "cpu":  # ONNX Runtime and OpenVINO run on the CPU here: export a CPU copy
        model = copy.deepcopy(model).cpu()
    if name.startswith("openvino-"):
        return _openvino_backend(model, name, inputs, work_dir, cache_key, calibration)
    quantize = {"onnx-int8": "int8", "onnx-int8-static": "int8-static"}.get(name)
    if cache_key is not None:
        graph = cached_onnx(model, inputs, cache_key, quantize, calibration=calibration)
    else:
        directory = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="distilbench-onnx-"))
        graph = build_onnx(model, inputs, directory, quantize, calibration=calibration)
    backend = OnnxBackend(name, graph, model.config.num_labels, max_positions(model.config))
    record = static_record(graph) if quantize == "int8-static" else None
    if record and record["excluded_nodes"]:
        backend.note = (
            f"onnx-int8-static: {len(record['excluded_nodes'])} matrix products kept fp32 "
            f"({', '.join(record['kept_fp32'])}) for {record['agreement_with_fp32']:.1%} agreement with fp32"
        )
    return backend


def _openvino_backend(model, name: str, inputs: list[str], work_dir, cache_key: str | None, calibration) -> Backend:
    """An OpenVINO backend over the checkpoint's fp32 ONNX graph (cached like the ONNX backends'); openvino-int8
    over the NNCF model quantized beside that graph on `calibration` (without it, the one built last)."""
    from distilbench.runtime.openvino_backend import OpenVinoBackend, cached_openvino_int8, check_native_bf16

    check_native_bf16(name)  # before the export, which takes seconds
    if cache_key is not None:
        graph = cached_onnx(model, inputs, cache_key, None)
    else:
        directory = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="distilbench-onnx-"))
        graph = build_onnx(model, inputs, directory)
    if name == "openvino-int8":
        graph = cached_openvino_int8(graph, calibration)
    return OpenVinoBackend(name, graph, model.config.num_labels, max_positions(model.config))


@functools.cache
def _warn_batch_dependent(name: str) -> None:
    """Once per process and backend: the labels of a dynamically quantized backend depend on batch mates."""
    warn(BATCH_DEPENDENT_WARNING.format(name=name))


@dataclass
class LoadedModel:
    """A fine-tuned classifier ready to predict: its backend and what is needed around it."""

    backend: Backend
    tokenizer: object
    task: str
    label_names: list[str]
    config: object  # transformers config: labels, thresholds (predict.stored_thresholds), architecture
    model: nn.Module | None = None  # the PyTorch model; None for an exported ONNX directory


def load_model_dir(
    model_dir: str | Path, backend: str, *, device: str = "auto", work_dir: str | Path | None = None
) -> LoadedModel:
    """A checkpoint directory (ONNX graphs from the cache) or an exported ONNX directory in `backend` (for a
    checkpoint, a backend by name: backend_choice.resolve_backend resolves 'auto' first)."""
    from distilbench.core.cache import checkpoint_key
    from distilbench.models.registry import load_trained

    if is_exported_model(model_dir):
        runtime, exported = load_exported(model_dir, backend)
        return LoadedModel(runtime, exported.tokenizer, exported.task, exported.label_names, exported.config)
    model, tokenizer, task, label_names = load_trained(model_dir)
    model.to(pick_device(device))
    runtime = load_backend(model, check_backend(backend), work_dir=work_dir, cache_key=checkpoint_key(model_dir))
    return LoadedModel(runtime, tokenizer, task, label_names, model.config, model)


def _model_type(model: nn.Module) -> str:
    """The encoder's model type (the thesis head's encoder, for it)."""
    config = getattr(model, "config", None)
    encoder = getattr(config, "encoder", None)
    if isinstance(encoder, dict) and encoder.get("model_type"):
        return encoder["model_type"]
    return getattr(config, "model_type", type(model).__name__)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _quantized_engine() -> str:
    """The quantized-kernel engine for torch-int8, choosing one when none is set."""
    engines = torch.backends.quantized.supported_engines
    current = torch.backends.quantized.engine
    if current in engines and current != "none":
        return current
    for engine in ("x86", "fbgemm", "onednn", "qnnpack"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            return engine
    raise DistilbenchError(
        "backend torch-int8 needs a PyTorch build with quantized CPU kernels "
        "(fbgemm/x86 or qnnpack); choose torch-fp32 or onnx-int8 instead"
    )
