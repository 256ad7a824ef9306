"""Inference backends: one call interface over PyTorch (fp32, bf16, int8) and ONNX Runtime (fp32, int8).

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

ONNX export uses the TorchScript exporter (`dynamo=False`, fast and simple with dynamic axes) and
falls back to the torch.export-based one. Both export the default sdpa attention with padding masks
correctly; the export wrapper must be in eval mode, because the exporter restores the wrapper's
train/eval mode afterwards, which would switch the wrapped model into training mode (dropout on).
"""

from __future__ import annotations

import copy
import inspect
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .console import DistilbenchError
from .fused import can_fuse, first_token_only, fuse_encoder_layers
from .inference import MODEL_INPUTS

log = logging.getLogger(__name__)

BACKENDS = ("torch-fp32", "torch-bf16", "torch-bf16-compiled", "torch-int8", "onnx-fp32", "onnx-int8")
ALIASES = {"onnx": "onnx-fp32"}
ONNX_OPSET = 18
ONNX_INSTALL = "pip install onnxruntime onnx onnxscript"


class Backend:
    """A classifier in one runtime: int64 arrays (batch, seq) in, float32 logits (batch, num_labels) out."""

    name: str
    input_names: list[str]
    num_labels: int
    first_token_only: bool = False  # the encoder's last layer computes the first token alone (fused.py)

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} inputs={self.input_names}>"


class TorchBackend(Backend):
    """A PyTorch module run under inference_mode, with inputs moved to its device."""

    def __init__(self, name: str, model: nn.Module, input_names: list[str]):
        self.name = name
        self.model = model
        self.input_names = input_names
        self.num_labels = model.config.num_labels
        self.device = _model_device(model)
        self.first_token_only = first_token_only(model)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(np.ascontiguousarray(batch[k], dtype=np.int64)).to(self.device)
                  for k in self.input_names}
        logits = self.model(**inputs).logits
        return logits.float().cpu().numpy()


class OnnxBackend(Backend):
    """An ONNX Runtime CPU session over an exported graph; feeds only the inputs the graph declares."""

    def __init__(self, name: str, path: Path, num_labels: int):
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # no busy-waiting between calls: spinning ORT threads would steal the cores from whatever runs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.name = name
        self.path = path
        self.num_labels = num_labels
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(batch[k], dtype=np.int64) for k in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return logits.astype(np.float32, copy=False)


def load_backend(model, name: str, *, work_dir: str | Path | None = None, cache_key: str | None = None) -> Backend:
    """Wrap a loaded (eval-mode, fp32) transformers classifier in the named backend.

    ONNX backends write model.onnx (and model.int8.onnx) to `work_dir`, a fresh temporary
    directory when None.
    """
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise DistilbenchError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)} "
                               f"(or 'onnx' for onnx-fp32)")
    if model.training:  # dropout would make logits random; same as inference.predict_logits
        model.eval()
    inputs = model_input_names(model)
    device = _model_device(model)
    if name == "torch-fp32":
        return TorchBackend(name, model, inputs)
    if name == "torch-bf16":
        bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
        if can_fuse(bf16):  # CPU: encoder layers on prepacked oneDNN products (fused.py)
            fuse_encoder_layers(bf16)
        return TorchBackend(name, bf16, inputs)
    if name == "torch-bf16-compiled":
        # inductor with frozen (prepacked) weights and dynamic shapes: one compilation of tens of seconds,
        # then fused kernels; pays off for large inputs of small models, where per-op overhead dominates
        bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
        return TorchBackend(name, torch.compile(bf16, dynamic=True, options={"freezing": True}), inputs)
    if name == "torch-int8":
        if device.type != "cpu":
            raise DistilbenchError(f"backend torch-int8 runs on CPU only; the model is on {device}. "
                                   "Move it to the CPU or choose torch-bf16.")
        engine = _quantized_engine()
        log.debug("torch-int8: dynamic quantization with engine %s", engine)
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).float().eval(),
                                                               {nn.Linear}, dtype=torch.qint8)
        return TorchBackend(name, quantized, inputs)
    _import_onnxruntime()
    directory = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="distilbench-onnx-"))
    directory.mkdir(parents=True, exist_ok=True)
    if device.type != "cpu":  # ONNX Runtime runs on the CPU here: export a CPU copy
        model = copy.deepcopy(model).cpu()
    fp32_path = export_onnx(model, directory / "model.onnx", inputs)
    if name == "onnx-fp32":
        return OnnxBackend(name, fp32_path, model.config.num_labels)
    return OnnxBackend(name, quantize_onnx(fp32_path, directory / "model.int8.onnx"), model.config.num_labels)


def model_input_names(model: nn.Module) -> list[str]:
    """The tokenizer outputs the model uses: token_type_ids only where its encoder takes them."""
    accepted = inspect.signature(model.forward).parameters
    prefix = getattr(model, "base_model_prefix", "")
    encoder = getattr(model, prefix, None) if prefix else None
    if isinstance(encoder, nn.Module) and encoder is not model:  # e.g. the thesis head drops token types
        encoder_params = inspect.signature(encoder.forward).parameters
        accepted = {k: v for k, v in accepted.items() if k in encoder_params}
    return [k for k in MODEL_INPUTS if k in accepted]


class _LogitsOnly(nn.Module):
    """Explicit tensor inputs in, logits out: the shape the ONNX exporters want."""

    def __init__(self, model: nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{k: tensors[k] for k in self.input_names}).logits


def export_onnx(model: nn.Module, path: Path, input_names: list[str]) -> Path:
    """Export a CPU fp32 copy of `model` to `path`, dynamic batch and sequence axes, output 'logits'."""
    wrapper = _LogitsOnly(copy.deepcopy(model).float().cpu(), input_names).eval()
    # A padded dummy batch, so the traced graph keeps the attention-mask path.
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    dummy = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(dummy[k] for k in input_names)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # TracerWarnings and the legacy-exporter deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=input_names,
                              output_names=["logits"], opset_version=ONNX_OPSET,
                              dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in input_names},
                                            "logits": {0: "batch"}})
    except ImportError as exc:
        raise DistilbenchError(f"ONNX export needs more packages ({exc}): {ONNX_INSTALL}") from None
    except Exception as exc:  # noqa: BLE001 - any tracing failure: try the torch.export-based exporter
        log.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
        _export_dynamo(wrapper, args, path, input_names)
    log.info("exported ONNX model to %s in %.1f s", path, time.perf_counter() - start)
    return path


def _export_dynamo(wrapper: nn.Module, args: tuple, path: Path, input_names: list[str]) -> None:
    """The torch.export-based exporter, with batch and sequence declared dynamic."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=input_names,
                              output_names=["logits"], opset_version=ONNX_OPSET, verbose=False,
                              dynamic_shapes=tuple({0: batch, 1: sequence} for _ in input_names))
    except ImportError as exc:
        raise DistilbenchError(f"ONNX export needs more packages ({exc}): {ONNX_INSTALL}") from None
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistilbenchError(f"could not export {type(wrapper.model).__name__} to ONNX: {reason}") from None


def quantize_onnx(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization of an ONNX graph's weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = fp32_path
    prepared = fp32_path.with_name(fp32_path.stem + ".pre.onnx")
    try:  # ORT's recommended pre-processing; its symbolic shape inference cannot follow BERT graphs
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        source = prepared
    except Exception as exc:  # noqa: BLE001 - quantization works without it
        log.debug("ONNX quantization pre-processing skipped: %s", exc)
    root = logging.getLogger()  # onnxruntime.quantization logs a line per tensor on the root logger
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        quantize_dynamic(str(source), str(int8_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return int8_path


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
    raise DistilbenchError("backend torch-int8 needs a PyTorch build with quantized CPU kernels "
                           "(fbgemm/x86 or qnnpack); choose torch-fp32 or onnx-int8 instead")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise DistilbenchError(f"ONNX backends need onnxruntime and onnx: {ONNX_INSTALL}") from None
    return onnxruntime
