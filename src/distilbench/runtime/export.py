"""ONNX graphs of classifiers: export, ONNX Runtime's transformer fusions, int8 quantization, a cache of
built graphs, and `distilbench export` (a directory that runs in plain ONNX Runtime and in optimum).

Export uses the TorchScript exporter (`dynamo=False`, fast and simple with dynamic axes) and falls back
to the torch.export-based one. Both export the default sdpa attention with padding masks correctly;
the export wrapper must be in eval mode, because the exporter restores the wrapper's train/eval mode
afterwards, which would switch the wrapped model into training mode (dropout on).

With `fuse` (`export --fuse`) the graph, exported with eager attention, goes through ONNX Runtime's
transformer optimizer (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization; CPU
kernels only, fp32 kept) for the model types it knows (BERT, DistilBERT, RoBERTa types; the thesis head
by its encoder); unknown types keep the plain graph with a log note, and a fused graph that disagrees
with the plain one on a padded batch is dropped. int8 is dynamic quantization of the weights, per
channel (activations quantized at run time); int8-static (static_quant.py) fixes the activation scales from
calibration texts, so that a text's logits do not depend on its batch mates.

Measured with benchmarks/onnx_graphs.py (results in benchmarks/results/onnx_graphs*.json) on this AMD
EPYC (avx2, avx512f, avx512_bf16, avx512_vnni), 2 cores shared with three other engineers' processes
(load average 5-7), 1 thread; torch 2.13, onnxruntime 1.32. MiniLM-L6 fine-tuned for one epoch on
2,160 headlines; accuracy on 2,000 other headlines (torch-fp32 0.7025); speed as time per round relative
to the plain fp32 graph in the same round (median of 15 rounds of 160 headlines and of 10
rounds of 96 toxic comments, ~25 tokens; batches of 32):

    graph                    accuracy  agrees with fp32  max |logit diff|  time: headlines  comments
    torch-fp32               0.7025    2000/2000         -                 1.23             1.18
    plain fp32               0.7025    2000/2000         5e-7              1.00             1.00
    fused fp32               0.7025    2000/2000         7e-7              1.11             1.05
    plain int8 per-tensor    0.6885    1921/2000         0.18              0.43             0.42
    plain int8 per-channel   0.7040    1968/2000         0.086             0.44             0.43
    fused int8 per-tensor    0.6875    1925/2000         0.17              0.48             0.48
    fused int8 per-channel   0.7005    1963/2000         0.097             0.47             0.48

Hence int8 weights per channel (less than half the disagreements with fp32 of per-tensor, at the same
speed), and no fusions by default: as accurate, but 5-12% slower here (ONNX Runtime's own session
optimizations already fuse much of the plain graph at load time). Not measured: sequences of 128+
tokens, several threads, AVX2-only CPUs; `export --fuse` and bench are there to try it on another CPU.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilbench.core.console import DistilbenchError, say, warn
from distilbench.runtime.bundle import (  # noqa: F401 (reading a bundle needs no torch; imported from here too)
    BUNDLE_FORMAT,
    GRAPH_DATA_FILE,
    GRAPH_FILE,
    ExportedModel,
    export_info,
    file_sha256,
    is_exported_model,
    read_exported,
    verify_bundle,
)
from distilbench.runtime.names import QUANTIZATIONS  # dynamic int8; static int8 (static_quant.py)
from distilbench.runtime.onnx_backend import import_onnxruntime, onnx_session  # noqa: F401
from distilbench.runtime.static_quant import (
    StaticCalibration,
    prepare_for_quantization,
    quantization_logs_quiet,
    quantize_static_onnx,
    static_record,
)

log = logging.getLogger(__name__)

ONNX_OPSET = 18
ONNX_INSTALL = "pip install onnxruntime onnx onnxscript"
FORMATS = ("onnx",)
GRAPH_NAMES = {None: "model.onnx", "int8": "model.int8.onnx", "int8-static": "model.int8-static.onnx"}
QUANTIZED_BACKENDS = {
    None: "onnx-fp32",
    "int8": "onnx-int8",
    "int8-static": "onnx-int8-static",
    "openvino-int8": "openvino-int8",  # model.onnx (fp32) and the NNCF int8 model beside it (openvino_backend.py)
}
# bundle backends whose model is made or checked on calibration texts (export_calibration): the static int8 graphs,
# and openvino-bf16's fp16-weight model (compared with fp32 there)
CALIBRATED = ("onnx-int8-static", "openvino-int8", "openvino-bf16")
# `export --quantize auto`: the backends a bundle can hold, and the quantization that makes each one's graph
BUNDLE_QUANTIZE = {
    "onnx-fp32": None,
    "openvino-fp32": None,
    "openvino-bf16": None,
    "onnx-int8-static": "int8-static",
    "openvino-int8": "openvino-int8",
}
BUILD_VERSION = 1  # part of every cache entry's name: raise it when the graphs built here change
PER_CHANNEL = True  # per-channel int8 weights: closer to fp32 than per-tensor at the same speed (measured above)
FUSE_BY_DEFAULT = False  # ONNX Runtime's optimizer fusions: as accurate, but slower here (measured above)
# Hugging Face model types whose graphs ONNX Runtime's "bert" optimizer fuses (as optimum maps them)
OPTIMIZER_TYPES = {
    "bert": "bert",
    "distilbert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
}
FUSION_CHECK_ATOL = 1e-3  # fused vs plain graph, max |logit difference| on a padded dummy batch
# `export`: max |logit diff| vs PyTorch (int8: times the largest |logit|)
EXPORT_TOLERANCE = {None: 1e-3, "int8": 0.1, "int8-static": 0.1}
SAMPLE_TEXTS = [
    "Stocks rally as the central bank holds interest rates steady",
    "New study links sleep to memory in older adults",
    "Band announces world tour after ten years apart",
    "Scientists find water ice in a crater near the moon's south pole",
    "Flu season arrives early; doctors urge vaccination",
    "Quarterly profit beats forecasts, shares jump",
    "The film everyone talks about opens this weekend",
    "Engineers test a battery that charges in five minutes",
    "ok",
    'A much longer text, with commas, numbers such as 3.14 and 2024, quotes "like these", and several '
    "clauses, so that the batch is padded and the graph's attention mask really matters for the others.",
    "Merger talks between the two airlines collapse over pension costs",
    "Hospital trial of a new antibiotic shows promise against resistant bacteria",
    "Streaming service raises prices for the second time this year",
    "Satellite images reveal glacier retreat faster than expected",
    "Health officials warn of measles outbreak",
    "Oil prices fall",
]


class _LogitsOnly(nn.Module):
    """Explicit tensor inputs in, logits out: the shape the ONNX exporters want."""

    def __init__(self, model: nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{k: tensors[k] for k in self.input_names}).logits


def _dummy_batch(input_names: list[str]) -> dict[str, torch.Tensor]:
    """A padded batch, so the traced graph keeps the attention-mask path."""
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {
        k: v
        for k, v in {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}.items()
        if k in input_names
    }


def export_onnx(model: nn.Module, path: Path, input_names: list[str], eager_attention: bool = False) -> Path:
    """Export a CPU fp32 copy of `model` to `path`, dynamic batch and sequence axes, output 'logits'.

    `eager_attention`: trace the explicit attention products instead of sdpa (same results), the pattern
    that ONNX Runtime's optimizer fuses into its Attention operator."""
    exported = copy.deepcopy(model).float().cpu()
    if eager_attention and hasattr(exported, "set_attn_implementation"):
        try:
            exported.set_attn_implementation("eager")
        except (ValueError, ImportError) as exc:  # a model without eager attention: sdpa it is
            log.debug("eager attention not available (%s)", exc)
    wrapper = _LogitsOnly(exported, input_names).eval()
    dummy = _dummy_batch(input_names)
    args = tuple(dummy[k] for k in input_names)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # TracerWarnings and the legacy-exporter deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=["logits"],
                opset_version=ONNX_OPSET,
                dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in input_names}, "logits": {0: "batch"}},
            )
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
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                dynamo=True,
                input_names=input_names,
                output_names=["logits"],
                opset_version=ONNX_OPSET,
                verbose=False,
                dynamic_shapes=tuple({0: batch, 1: sequence} for _ in input_names),
            )
    except ImportError as exc:
        raise DistilbenchError(f"ONNX export needs more packages ({exc}): {ONNX_INSTALL}") from None
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistilbenchError(f"could not export {type(wrapper.model).__name__} to ONNX: {reason}") from None


def optimizer_settings(config) -> tuple[str, int, int] | None:
    """(ONNX Runtime optimizer model type, attention heads, hidden size) for a classifier's config, or
    None for a model type the optimizer does not know. The thesis head is judged by its encoder."""
    encoder = getattr(config, "encoder", None)
    if isinstance(encoder, dict) and encoder:
        from transformers import AutoConfig

        config = AutoConfig.for_model(**encoder)
    kind = OPTIMIZER_TYPES.get(getattr(config, "model_type", ""))
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if kind is None or not heads or not hidden:
        return None
    return kind, int(heads), int(hidden)


def optimize_onnx(plain: Path, optimized: Path, config, input_names: list[str]) -> dict:
    """ONNX Runtime's transformer fusions of `plain` into `optimized` (CPU kernels, fp32); the plain graph
    is copied instead for an unknown model type, or where the fused graph disagrees with it.
    Returns the fused operators and their counts ({} where nothing was fused)."""
    settings = optimizer_settings(config)
    if settings is None:
        log.info(
            "ONNX Runtime's transformer optimizer does not know model type %r: the graph stays unfused",
            getattr(config, "model_type", None),
        )
        shutil.copyfile(plain, optimized)
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    kind, heads, hidden = settings
    options = FusionOptions(kind)
    options.enable_gelu_approximation = False  # exact GELU: same results as PyTorch
    root = logging.getLogger()  # the optimizer logs every fusion on the root logger
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        onnx_model = optimize_model(
            str(plain),
            model_type=kind,
            num_heads=heads,
            hidden_size=hidden,
            optimization_options=options,
            opt_level=0,
            use_gpu=False,
        )
        fused = {op: n for op, n in onnx_model.get_fused_operator_statistics().items() if n}
        onnx_model.save_model_to_file(str(optimized))
    except Exception as exc:  # noqa: BLE001 - the plain graph is still a correct one
        log.warning("ONNX Runtime's transformer optimizer failed (%s): the graph stays unfused", exc)
        shutil.copyfile(plain, optimized)
        return {}
    finally:
        root.setLevel(level)
    difference = _graph_difference(plain, optimized, input_names)
    if difference > FUSION_CHECK_ATOL:
        log.warning("the fused ONNX graph differs from the plain one by %.2g; keeping the plain graph", difference)
        shutil.copyfile(plain, optimized)
        return {}
    log.info("ONNX Runtime fusions: %s", ", ".join(f"{op} {n}" for op, n in fused.items()) or "none")
    return fused


def _graph_difference(first: Path, second: Path, input_names: list[str]) -> float:
    """Max |logit difference| of two graphs on a padded dummy batch with varied token ids."""
    batch = {k: v.numpy() for k, v in _dummy_batch(input_names).items()}
    batch["input_ids"] = np.arange(batch["input_ids"].size).reshape(batch["input_ids"].shape) * 37 % 1000 + 100
    first_logits, second_logits = (onnx_session(path).run(["logits"], batch)[0] for path in (first, second))
    return float(np.abs(first_logits - second_logits).max())


def quantize_onnx(fp32_path: Path, int8_path: Path, per_channel: bool = PER_CHANNEL) -> Path:
    """Dynamic int8 quantization of an ONNX graph's weights (activations quantized at run time)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = prepare_for_quantization(fp32_path, int8_path.with_name(int8_path.stem + ".pre.onnx"))
    try:
        with quantization_logs_quiet():
            # shape inference cannot type the outputs of fused (com.microsoft) operators: they are fp32
            quantize_dynamic(
                str(prepared),
                str(int8_path),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path


def build_onnx(
    model: nn.Module,
    input_names: list[str],
    directory: Path,
    quantize: str | None = None,
    fuse: bool = FUSE_BY_DEFAULT,
    calibration: StaticCalibration | None = None,
) -> Path:
    """Export, (with `fuse`) fuse and (with quantize='int8' or 'int8-static', the latter on `calibration`)
    quantize `model` in `directory`: model.onnx is the fp32 graph, GRAPH_NAMES[quantize] the quantized one
    (static: with its record in static.json beside it). Returns the graph asked for."""
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / "model.onnx"
    if fuse:
        fusable = optimizer_settings(model.config) is not None
        plain = export_onnx(model, directory / "model.plain.onnx", input_names, eager_attention=fusable)
        optimize_onnx(plain, fp32, model.config, input_names)
        plain.unlink()
    else:
        export_onnx(model, fp32, input_names)
    check_graph(model, fp32, input_names)
    if quantize is None:
        return fp32
    return _quantize_graph(fp32, directory, quantize, calibration)[0]


def _quantize_graph(
    fp32: Path, directory: Path, quantize: str, calibration: StaticCalibration | None
) -> tuple[Path, dict | None]:
    """The quantized graph of `fp32` in `directory`, and for static int8 its record (also in static.json)."""
    out = directory / GRAPH_NAMES[quantize]
    if quantize != "int8-static":
        return quantize_onnx(fp32, out), None
    if calibration is None:
        raise DistilbenchError(
            "onnx-int8-static needs calibration texts: choose it with --backend auto (which calibrates on the "
            "validation split or the input), or export it with `distilbench export --quantize int8-static`"
        )
    record = quantize_static_onnx(fp32, out, calibration)
    _write_json(directory / "static.json", record)
    return out, record


def check_graph(model: nn.Module, graph: Path, input_names: list[str]) -> float:
    """The fp32 graph against the PyTorch model on a padded dummy batch: an architecture the exporter gets
    wrong fails here (one clear error; `--backend auto` then refuses the ONNX backends) instead of giving
    wrong predictions. Returns the max |logit difference|."""
    dummy = _dummy_batch(input_names)
    dummy["input_ids"] = torch.arange(dummy["input_ids"].numel()).reshape(dummy["input_ids"].shape) * 37 % 90 + 5
    parameter = next(model.parameters())
    plain = parameter.dtype == torch.float32 and parameter.device.type == "cpu" and not model.training
    reference_model = model if plain else copy.deepcopy(model).float().cpu().eval()
    with torch.inference_mode():
        reference = reference_model(**dummy).logits.numpy()
    session = onnx_session(graph)  # fed the inputs it declares: an unused one (DeBERTa's token types) is dropped
    logits = session.run(["logits"], {i.name: dummy[i.name].numpy() for i in session.get_inputs()})[0]
    difference = float(np.abs(logits - reference).max())
    tolerance = EXPORT_TOLERANCE[None] * max(1.0, float(np.abs(reference).max()))
    if not difference <= tolerance:  # also NaN
        raise DistilbenchError(
            f"the ONNX graph of this {getattr(model.config, 'model_type', type(model).__name__)} "
            f"model does not match PyTorch (max |logit diff| {difference:.3g} on a test batch, "
            f"tolerance {tolerance:.3g}); use a torch backend"
        )
    return difference


def cache_variant(quantize: str | None, fuse: bool = FUSE_BY_DEFAULT, calibration_key: str | None = None) -> str:
    """The cache entry's name for one kind of graph: what it holds (a static graph: which calibration) and which
    versions built it."""
    ort = import_onnxruntime()
    kind = (quantize or "fp32") + ("-fused" if fuse else "") + (f"-c{calibration_key}" if calibration_key else "")
    return f"{kind}-b{BUILD_VERSION}-ort{ort.__version__}-torch{torch.__version__}"


def cached_onnx(
    model: nn.Module,
    input_names: list[str],
    key: str,
    quantize: str | None = None,
    fuse: bool = FUSE_BY_DEFAULT,
    calibration: StaticCalibration | None = None,
) -> Path:
    """The graph of the checkpoint with cache key `key` (cache.checkpoint_key), built on first use in
    cache_dir()/onnx/<key>/<variant>/ and reused after (a static int8 graph: one per calibration set; without
    `calibration`, the one built last for this checkpoint). An entry is built in a temporary directory beside
    it and renamed into place, so a reader never sees half a graph; concurrent builders wait for each other
    (a file lock), and where locks do not work the first rename wins and the others drop their copy."""
    from distilbench.core.cache import cache_dir, exclusive_lock

    name = GRAPH_NAMES[quantize]
    root = cache_dir() / "onnx" / key
    if quantize == "int8-static" and calibration is None:
        return _latest_static(root, fuse)
    final = root / cache_variant(quantize, fuse, calibration.key() if quantize == "int8-static" else None)
    if (final / name).is_file():
        log.info("reusing the cached ONNX graph %s", final / name)
        return final / name
    source = cached_onnx(model, input_names, key, None, fuse) if quantize else None  # int8: from the fp32 graph
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{final.name}.lock"):  # a second builder waits for the first one's graph
        if (final / name).is_file():
            log.info("using the ONNX graph another process just built: %s", final / name)
            return final / name
        _build_entry(model, input_names, source, final, (quantize, fuse, calibration))
    return final / name


def _latest_static(root: Path, fuse: bool) -> Path:
    """The static int8 graph built last for a checkpoint (any calibration set; `auto` builds it when it
    calibrates), for a caller that has no calibration texts (predict's workers after `auto` chose it)."""
    name = GRAPH_NAMES["int8-static"]
    suffix = cache_variant(None, fuse).removeprefix("fp32" + ("-fused" if fuse else ""))
    prefix = "int8-static" + ("-fused" if fuse else "") + "-c"
    built = [
        entry / name
        for entry in (root.iterdir() if root.is_dir() else [])
        if entry.name.startswith(prefix) and entry.name.endswith(suffix) and (entry / name).is_file()
    ]
    if not built:
        raise DistilbenchError(
            "onnx-int8-static needs calibration texts and none were given: choose it with --backend auto (which "
            "calibrates on the validation split or the input and builds it), or export the checkpoint with "
            "`distilbench export --quantize int8-static`"
        )
    return max(built, key=lambda path: path.stat().st_mtime)


def _build_entry(
    model: nn.Module,
    input_names: list[str],
    source: Path | None,
    final: Path,
    kind: tuple[str | None, bool, StaticCalibration | None],
) -> None:
    """Build one cache entry (`kind`: quantize, fuse, calibration) in a temporary directory beside `final`, then
    rename it into place. built.json says what it holds; a static graph's record is in it too."""
    quantize, fuse, calibration = kind
    name = GRAPH_NAMES[quantize]
    building = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-"))
    try:
        record = None
        if source is None:
            build_onnx(model, input_names, building, fuse=fuse)
        else:
            _, record = _quantize_graph(source, building, quantize, calibration)
        _write_json(
            building / "built.json",
            {
                "quantize": quantize,
                "fused": fuse,
                "inputs": input_names,
                "build_version": BUILD_VERSION,
                "built_at": time.time(),
                **({"static": record} if record is not None else {}),
            },
        )
        try:
            building.rename(final)
        except OSError:
            if not (final / name).is_file():  # a broken entry (a file deleted by hand): replace it
                shutil.rmtree(final, ignore_errors=True)
                building.rename(final)
            else:
                log.info("another process built %s first; using its graph", final)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def portable_config(source: Path) -> dict:
    """The exported bundle's config.json: the checkpoint's, except that one of distilbench's own heads (--head mean
    or thesis, saved as custom code: an auto_map to the heads.py beside it) becomes its encoder's plain config with
    the labels, the problem type and distilbench's block (thresholds; `head` names the head). The graph holds the
    head, so the bundle needs no code from the checkpoint: it opens in AutoConfig and optimum without
    trust_remote_code."""
    from distilbench.models.registry import DISTILBENCH_KEY

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    encoder = config.get("encoder")
    if "auto_map" not in config or not isinstance(encoder, dict) or not encoder.get("model_type"):
        return config
    labels = {key: config[key] for key in ("id2label", "label2id", "problem_type") if key in config}
    block = {**(config.get(DISTILBENCH_KEY) or {}), "head": "mean" if config.get("pooling") == "mean" else "thesis"}
    plain = {key: value for key, value in encoder.items() if key not in ("architectures", "auto_map", DISTILBENCH_KEY)}
    return {**plain, **labels, DISTILBENCH_KEY: block}


def export_model(
    model_dir: str | Path,
    out: str | Path,
    *,
    fmt: str = "onnx",
    quantize: str | None = None,
    fuse: bool = FUSE_BY_DEFAULT,
    tolerance: float | None = None,
) -> dict:
    """`distilbench export`: a fine-tuned checkpoint as a directory that runs without PyTorch.

    The directory holds model.onnx (input ids, attention mask and, where the model takes them, token type
    ids; output `logits`), config.json (labels, problem type, tuned thresholds), the tokenizer files and
    export.json (what was exported, with which versions, and the check against PyTorch). It appears
    whole or not at all. Returns export.json's content.
    """
    from distilbench.core.cache import checkpoint_key
    from distilbench.models.inputs import model_input_names
    from distilbench.models.registry import load_trained

    source, out = Path(model_dir), Path(out)
    _check_export_request(source, out, fmt, quantize)
    import_onnxruntime()
    model, tokenizer, task, label_names = load_trained(source)
    model.eval()
    inputs = model_input_names(model)
    backend, choice = QUANTIZED_BACKENDS.get(quantize), None
    if quantize == "auto":  # auto's measurement and guard on the checkpoint; the bundle holds its choice
        backend, choice = auto_bundle_backend(model, tokenizer, source, task, label_names)
        quantize = BUNDLE_QUANTIZE[backend]
    calibration = export_calibration(source, tokenizer, task) if backend in CALIBRATED else None
    onnx_quantize = None if quantize == "openvino-int8" else quantize  # OpenVINO's int8 is made from the fp32 graph
    graph = cached_onnx(model, inputs, checkpoint_key(source), onnx_quantize, fuse, calibration)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    except OSError as exc:
        raise DistilbenchError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        write_bundle_graph(graph, building / GRAPH_FILE)
        quantized = _copy_openvino_int8(graph, building, calibration) if quantize == "openvino-int8" else None
        bf16 = _openvino_bf16_model(graph, building, calibration) if backend == "openvino-bf16" else None
        _write_json(building / "config.json", portable_config(source))
        tokenizer.save_pretrained(building)
        check = check_against_torch(model, tokenizer, building / GRAPH_FILE, onnx_quantize, tolerance)
        export = {"format": fmt, "quantize": quantize, "fused": fuse, "source": source, "backend": backend}
        info = _export_record(building, export, model, (task, label_names, inputs), check)
        if choice is not None:
            info["auto"] = choice
        if quantize == "int8-static":
            info["static"] = static_record(graph)
        elif quantized is not None:
            info["static"] = quantized
        if bf16 is not None:
            info["openvino_bf16"] = bf16
        _write_json(building / "export.json", info)
        _require_torch_match(check, out)
        try:
            building.rename(out)
        except OSError:
            raise DistilbenchError(f"{out} appeared while exporting; nothing was written") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    say(f"exported {source} ({quantize or 'fp32'} ONNX) -> {out}")
    return info


def _copy_openvino_int8(fp32_graph: Path, building: Path, calibration: StaticCalibration) -> dict:
    """The NNCF int8 model of `fp32_graph` (built beside it in the cache on first use) copied into the bundle being
    built; returns its record (calibration, nodes kept fp32, agreement with fp32)."""
    from distilbench.runtime.openvino_backend import INT8_MODEL, cached_openvino_int8, openvino_record

    int8 = cached_openvino_int8(fp32_graph, calibration)
    for suffix in (".xml", ".bin"):
        shutil.copyfile(int8.with_suffix(suffix), (building / INT8_MODEL).with_suffix(suffix))
    return {key: value for key, value in (openvino_record(int8) or {}).items() if key != "tried"}


def _openvino_bf16_model(fp32_graph: Path, building: Path, calibration: StaticCalibration) -> dict:
    """An openvino-bf16 bundle's compact model (openvino_backend.write_bf16_model: the graph with fp16 weights)
    written into the bundle being built, where its predictions agree with fp32's under the guard; else left out
    (the bundle's fp32 graph then runs in bf16, as before). Returns the record, with whether it was kept."""
    from distilbench.runtime.openvino_backend import BF16_MODEL, write_bf16_model

    target = building / BF16_MODEL
    record = write_bf16_model(fp32_graph, target, calibration)
    record["kept"] = record["agreement_with_fp32"] >= calibration.min_agreement
    if not record["kept"]:
        warn(
            f"the fp16-weight OpenVINO model agrees with fp32 on {record['agreement_with_fp32']:.2%} of the "
            f"calibration texts only; the bundle keeps its fp32 graph for openvino-bf16"
        )
        for suffix in (".xml", ".bin"):
            target.with_suffix(suffix).unlink(missing_ok=True)
    return record


def auto_bundle_backend(model, tokenizer, source: Path, task: str, label_names: list[str]) -> tuple[str, dict]:
    """`export --quantize auto`: auto's calibration of the checkpoint on the CPU (the run's validation split, else
    built-in titles; every candidate timed, the guard applied), then the fastest valid candidate a bundle can hold
    (BUNDLE_QUANTIZE; a faster torch backend cannot be exported). Returns it and the record of the choice."""
    from distilbench.runtime.auto import builtin_sample_texts, calibrate, validation_texts

    guard = validation_texts(source) or (builtin_sample_texts(), None, "built-in BBC News titles")
    _, record = calibrate(
        model, tokenizer, task=task, label_names=label_names, guard=guard, model_dir=source, device="cpu"
    )
    candidates = record["candidates"]
    valid = [name for name in BUNDLE_QUANTIZE if candidates.get(name, {}).get("valid")]
    chosen = max(valid, key=lambda name: candidates[name]["samples_per_s"]) if valid else "onnx-fp32"
    fastest = record["chosen"]
    note = "" if chosen == fastest else f" ({fastest}, faster here, runs only from the checkpoint)"
    say(f"bundle backend: {chosen}{note}")
    return chosen, {**{k: v for k, v in record.items() if k != "cached"}, "bundle_backend": chosen}


def export_calibration(source: Path, tokenizer, task: str) -> StaticCalibration:
    """The texts a static int8 export calibrates on: the validation split of the checkpoint's run, else the held
    sample `auto` calibrates on outside a run (built-in BBC News titles)."""
    from distilbench.runtime.auto import CALIBRATION_TEXTS, builtin_sample_texts, validation_texts

    found = validation_texts(source)
    texts, origin = (found[0], found[2]) if found else (builtin_sample_texts(), "built-in BBC News titles")
    return StaticCalibration(list(texts[:CALIBRATION_TEXTS]), tokenizer, source=origin, multilabel=task == "multilabel")


def _check_export_request(source: Path, out: Path, fmt: str, quantize: str | None) -> None:
    """Refuse, before any work, an unknown format or quantization, an existing `out`, and a source that is an
    exported model already or no fine-tuned classifier."""
    from distilbench.models.registry import read_task_labels

    if fmt not in FORMATS:
        raise DistilbenchError(f"unknown export format '{fmt}': choose {', '.join(FORMATS)}")
    if quantize not in (None, *QUANTIZATIONS):
        raise DistilbenchError(f"unknown quantization '{quantize}': choose {', '.join(QUANTIZATIONS)} (or none)")
    if out.exists():
        raise DistilbenchError(f"{out} exists already: choose another --out or delete it")
    if is_exported_model(source):
        raise DistilbenchError(f"{source} is an exported ONNX model already; export its PyTorch checkpoint")
    read_task_labels(source)  # a clear message for a directory that is no fine-tuned classifier
    if quantize == "openvino-int8":  # before the export: say what to install
        from distilbench.runtime.openvino_backend import import_nncf, import_openvino

        import_openvino()
        import_nncf()


def _export_record(building: Path, export: dict, model, described: tuple, check: dict) -> dict:
    """export.json's content for the bundle being built in `building`: what was exported (`export`: format,
    quantize, fused, source), the model (`described`: task, label names, graph inputs), the check against PyTorch,
    the versions it was made with, and the manifest of the bundle's files."""
    import onnxruntime
    import transformers

    from distilbench import __version__
    from distilbench.core.cache import checkpoint_key
    from distilbench.models.registry import count_parameters

    task, label_names, inputs = described
    quantize, source = export["quantize"], export["source"]
    info = {
        "format": export["format"],
        "quantize": quantize,
        "fused": export["fused"],
        "backend": export["backend"],
        "source": str(source.absolute()),
        "checkpoint_key": checkpoint_key(source),
        "task": task,
        "labels": label_names,
        "inputs": inputs,
        "outputs": ["logits"],
        "opset": ONNX_OPSET,
        "fused_operators": _fused_operators(building / GRAPH_FILE),
        "params": count_parameters(model),
        "check": check,
        "versions": {
            "distilbench": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
            **_openvino_versions(export["backend"]),
        },
    }
    info.update(_bundle_fields(building, quantize or (None if export["backend"] == "onnx-fp32" else export["backend"])))
    return info


def _openvino_versions(backend: str) -> dict:
    """openvino's and nncf's versions for a bundle exported for OpenVINO, else nothing."""
    if not backend.startswith("openvino-"):
        return {}
    from distilbench.runtime.openvino_backend import import_nncf, import_openvino, openvino_available

    versions = {"openvino": import_openvino().__version__}
    return {**versions, "nncf": import_nncf().__version__} if openvino_available(int8=True) else versions


def _require_torch_match(check: dict, out: Path) -> None:
    """Say how closely the exported graph matches PyTorch; refuse the export where it does not."""
    say(
        f"checked against PyTorch on {check['texts']} texts: max |logit diff| {check['max_abs_logit_diff']:.2e} "
        f"(tolerance {check['tolerance']:.2e}), argmax agreement {check['argmax_agreement']:.0%}"
    )
    if not check["passed"]:
        raise DistilbenchError(
            f"the exported graph does not match PyTorch: max |logit diff| {check['max_abs_logit_diff']:.3g} "
            f"(tolerance {check['tolerance']:.3g}), argmax agreement {check['argmax_agreement']:.0%}; "
            f"nothing was written to {out}"
        )


def _bundle_fields(directory: Path, quantize: str | None) -> dict:
    """The manifest part of export.json: its format version, the CPU an int8 (or OpenVINO) graph was made for, and the
    size and SHA-256 of every other file, so that a missing, truncated or changed file is found on loading."""
    from distilbench.runtime.machine import cpu_flags, cpu_model

    files = {
        item.name: {"bytes": item.stat().st_size, "sha256": file_sha256(item)}
        for item in sorted(directory.iterdir())
        if item.is_file() and item.name != "export.json"
    }
    quantized_on = {"cpu": cpu_model(), "flags": cpu_flags()} if quantize else None
    return {"bundle_format": BUNDLE_FORMAT, "quantized_on": quantized_on, "files": files}


def check_against_torch(
    model: nn.Module,
    tokenizer,
    graph: Path,
    quantize: str | None,
    tolerance: float | None = None,
    texts: list[str] = SAMPLE_TEXTS,
) -> dict:
    """Logits of the graph in ONNX Runtime against the PyTorch model on one padded batch of sample texts.

    Passes when the max |logit difference| is within `tolerance` (default 1e-3 for fp32; for int8, 0.1
    times the largest |logit| of PyTorch, at least 0.1). Argmax agreement is reported, not required: within
    the tolerance only texts whose top two logits are that close can change their argmax."""
    from distilbench.models.inputs import model_input_names

    names = model_input_names(model)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    batch = {k: np.asarray(encoded[k], dtype=np.int64) for k in names if k in encoded}
    if "token_type_ids" in names and "token_type_ids" not in batch:
        batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    with torch.inference_mode():
        reference = model.float().cpu()(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    session = onnx_session(graph)
    logits = session.run(["logits"], {i.name: batch[i.name] for i in session.get_inputs()})[0]
    difference = float(np.abs(logits - reference).max())
    agreement = float((logits.argmax(axis=1) == reference.argmax(axis=1)).mean())
    if tolerance is None:
        tolerance = EXPORT_TOLERANCE[quantize] * (max(1.0, float(np.abs(reference).max())) if quantize else 1.0)
    passed = difference <= tolerance
    return {
        "texts": len(texts),
        "max_abs_logit_diff": difference,
        "argmax_agreement": agreement,
        "tolerance": tolerance,
        "passed": passed,
    }


def write_bundle_graph(graph: Path, target: Path) -> None:
    """`graph` saved as a bundle's: the graph at `target`, its weights beside it as external data (GRAPH_DATA_FILE),
    which ONNX Runtime maps from disk when a session opens (bundle.GRAPH_DATA_FILE says why)."""
    import onnx

    model = onnx.load(str(graph))
    onnx.save_model(model, str(target), save_as_external_data=True, location=GRAPH_DATA_FILE, size_threshold=1024)
    shutil.copymode(target, target.with_name(GRAPH_DATA_FILE))  # onnx creates it readable by its owner alone


def _fused_operators(graph: Path) -> dict:
    """Counts of ONNX Runtime's fused (com.microsoft) operators in a graph."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(graph), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
