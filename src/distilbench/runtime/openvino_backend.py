"""OpenVINO backends: the exported ONNX graph compiled by OpenVINO's CPU plugin, in fp32, in bf16 (CPUs with native
bf16 only) or as an int8 model quantized by NNCF on calibration texts. Imports neither torch nor transformers, so a
bundle runs through here as through onnx_backend.py; available only where `openvino` (and for int8 `nncf`) is
installed.

- openvino-fp32: INFERENCE_PRECISION_HINT f32 (OpenVINO's default on CPUs with AMX is bf16, so it is set).
- openvino-bf16: INFERENCE_PRECISION_HINT bf16; refused on a CPU without avx512_bf16 / amx_bf16 / Arm bf16, where
  OpenVINO would run it in fp32 or emulate it.
- openvino-int8: NNCF's post-training quantization (ModelType.TRANSFORMER: SmoothQuant, fixed activation ranges from
  the calibration texts, fast bias correction), the rest in f32. The ranges are fixed in the model, so a text's
  logits do not depend on its batch mates. As with static_quant.py, the quantized model's predictions are compared
  with fp32's on the calibration texts, and under the guard the matrix products that hurt agreement most stay fp32,
  step by step (static_quant.exclusion_steps); the record (nodes kept fp32, agreement) is saved beside the model.

Measured on this 2-core Intel Xeon (AMX, AVX512-BF16/VNNI; OpenVINO 2026.4, 1 thread, machine shared) on a
MiniLM-L6 classifier, batches of 64 sorted headlines, after a warm-up: onnxruntime fp32 300 texts/s, openvino-fp32
460, openvino-bf16 1,870, openvino-int8 1,630 (f32 rest; 1,780 with a bf16 rest). compile_model costs 0.3-0.5 s, so
compiled models are cached (compile_openvino); the first batches of each new shape run slower (kernels are made per
shape).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError
from distilbench.runtime.bundle import OPENVINO_BF16_MODEL, OPENVINO_INT8_MODEL
from distilbench.runtime.onnx_backend import Backend, session_threads

log = logging.getLogger(__name__)

OPENVINO_INSTALL = "pip install 'distilbench[openvino]'"
OPENVINO_BACKENDS = ("openvino-fp32", "openvino-bf16", "openvino-int8")
PRECISION_HINTS = {"openvino-fp32": "f32", "openvino-bf16": "bf16", "openvino-int8": "f32"}
INT8_MODEL = OPENVINO_INT8_MODEL  # its weights in model.openvino-int8.bin beside it
BF16_MODEL = OPENVINO_BF16_MODEL  # an openvino-bf16 bundle's graph with fp16 weights (write_bf16_model)
INT8_RECORD = "openvino-int8.json"
QUANTIZED_TYPES = ("MatMul",)  # the products NNCF quantizes in a transformer (Gemm arrives as MatMul)
MAX_EXCLUSION_STEPS = 3  # as static_quant.py: each step is a whole NNCF run


def openvino_available(int8: bool = False) -> bool:
    """Whether openvino (with `int8`, also nncf) can be imported, without importing it."""
    names = ("openvino", "nncf") if int8 else ("openvino",)
    return all(importlib.util.find_spec(name) is not None for name in names)


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise DistilbenchError(f"OpenVINO backends need openvino: {OPENVINO_INSTALL}") from None
    return openvino


def import_nncf():
    try:
        import nncf
    except ImportError:
        install = "pip install 'distilbench[train,openvino]'"
        raise DistilbenchError(f"openvino-int8 needs NNCF to quantize: {install}") from None
    return nncf


def check_native_bf16(name: str) -> None:
    """openvino-bf16 only where the CPU computes bf16 natively (elsewhere it is fp32 in disguise, or emulated)."""
    from distilbench.runtime.machine import cpu_native_bf16

    if name == "openvino-bf16" and not cpu_native_bf16():
        raise DistilbenchError(
            "openvino-bf16 needs a CPU with native bf16 (avx512_bf16 or amx_bf16); this one has none: "
            "use openvino-fp32, or openvino-int8 on a CPU with VNNI"
        )


def compile_openvino(path: Path, hint: str, threads: int | None = None, cache_key: str | None = None):
    """OpenVINO's CPU plugin compiling the model at `path` (ONNX or IR) with precision `hint`, one stream (one
    request at a time, as the inference loop sends them) and the thread count ONNX Runtime would get.

    With `cache_key` (a key of the model file's content), the compiled model is kept in the distilbench cache
    (openvino/<key>/) and later processes load it instead of compiling: 0.07 s instead of 0.29 s for MiniLM-L6 in
    bf16. OpenVINO's own cache knows a file by its path, size and time only (measured: a different model of the
    same size and time at the same path got the first one's compiled model), hence one directory per content."""
    ov = import_openvino()
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    threads = threads or session_threads()
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    directory = _compiled_cache(cache_key) if cache_key else None
    try:
        if directory is not None:
            core.set_property({"CACHE_DIR": str(directory)})
            return core.compile_model(str(path), "CPU", config)
        return core.compile_model(core.read_model(str(path)), "CPU", config)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistilbenchError(f"OpenVINO cannot compile {path} ({reason}); use onnx-fp32") from None


def _compiled_cache(key: str) -> Path | None:
    """cache_dir()/openvino/<key>, or None where it cannot be made (the model is then compiled on every load)."""
    from distilbench.core.cache import cache_dir

    ov = import_openvino()
    try:
        directory = cache_dir() / "openvino" / f"{key}-ov{ov.__version__.split('-')[0]}-{_machine_key()}"
        directory.mkdir(parents=True, exist_ok=True)
    except (OSError, DistilbenchError) as exc:
        log.info("no cache for compiled OpenVINO models (%s): compiling on every load", exc)
        return None
    return directory


def _machine_key() -> str:
    """A short key of the kernels this machine lets OpenVINO use (its CPU flags, and a oneDNN ISA limit where one
    is set): a model compiled for AMX is not loaded where only AVX2 may run, nor on another CPU sharing the cache."""
    import hashlib
    import os

    from distilbench.runtime.machine import cpu_flags, cpu_model

    facts = [cpu_model(), *cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA", "")]
    return hashlib.sha256("|".join(facts).encode()).hexdigest()[:8]


class OpenVinoBackend(Backend):
    """A model compiled by OpenVINO for the CPU: int64 arrays in, float32 logits out. One inference request, used
    by one caller at a time (a lock), so that threads of `serve` can share it.

    Batches are padded to a multiple of 4 tokens: OpenVINO builds kernels and buffers per input shape, and fewer
    shapes cost less memory and compile time. Measured on MiniLM-L6, the 3,000 test headlines in a fresh process,
    one thread (multiples 1, 4, 8): bf16 with fp16 weights peaked at 275, 225 and 221 MB in 1.9, 1.8 and 1.9 s;
    int8 at 364, 260 and 247 MB in 2.3, 2.1 and 2.2 s; fp32 on a simulated AVX2 CPU, where the padded tokens are
    paid in full, at 392, 327 and 317 MB in 8.3, 9.1 and 10.2 s."""

    pad_multiple = 4

    def __init__(
        self, name: str, path: Path, num_labels: int, positions: int | None = None, cache_key: str | None = None
    ):
        if name not in OPENVINO_BACKENDS:
            raise DistilbenchError(f"unknown OpenVINO backend '{name}': choose {', '.join(OPENVINO_BACKENDS)}")
        check_native_bf16(name)
        self.name = name
        self.path = Path(path)
        self.num_labels = num_labels
        self.max_positions = positions
        started = time.perf_counter()
        self.compiled = compile_openvino(self.path, PRECISION_HINTS[name], cache_key=cache_key or graph_key(self.path))
        self.compile_s = time.perf_counter() - started
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        names = [port.get_names() for port in self.compiled.outputs]
        self.output = next((i for i, found in enumerate(names) if "logits" in found), 0)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()
        record = openvino_record(self.path)
        if record and record["excluded_nodes"]:
            self.note = (
                f"openvino-int8: {len(record['excluded_nodes'])} matrix products kept fp32 "
                f"({', '.join(record['kept_fp32'])}) for {record['agreement_with_fp32']:.1%} agreement with fp32"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(batch[k], dtype=np.int64) for k in self.input_names}
        with self.lock:
            result = self.request.infer(feed)
            logits = np.array(result[self.output], dtype=np.float32)  # a copy: the request reuses its buffer
        return logits


def graph_key(path: Path) -> str | None:
    """A content key for a graph in the distilbench ONNX cache (its entries are named by the checkpoint's state and
    what was built, and never change in place), or None for a graph elsewhere (bundles pass their manifest's)."""
    import hashlib

    from distilbench.core.cache import cache_dir

    try:
        relative = Path(path).resolve().relative_to((cache_dir() / "onnx").resolve())
    except (ValueError, OSError, DistilbenchError):
        return None
    return hashlib.sha256(str(relative).encode()).hexdigest()[:16]


def bundle_key(info: dict, *names: str) -> str | None:
    """A content key for a bundle's model files from its manifest (export.json's SHA-256s, checked on loading), or
    None for a bundle whose manifest does not list them."""
    import hashlib

    files = info.get("files") or {}
    if not all(name in files for name in names):
        return None
    return hashlib.sha256("".join(files[name]["sha256"] for name in names).encode()).hexdigest()[:16]


def openvino_record(model: Path) -> dict | None:
    """The record of an openvino-int8 model (beside it: calibration, nodes kept fp32, agreement), or None."""
    try:
        return json.loads((Path(model).parent / INT8_RECORD).read_text())
    except (OSError, ValueError):
        return None


def _logits(compiled, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    return np.concatenate([np.array(request.infer({k: feed[k] for k in names})[0]) for feed in feeds])


def _nncf_quantize(model, feeds: list[dict[str, np.ndarray]], exclude: list[str]):
    """One NNCF post-training quantization of an OpenVINO model, transformer preset, ranges from `feeds`."""
    nncf = import_nncf()
    names = [port.get_any_name() for port in model.inputs]
    dataset = nncf.Dataset(feeds, lambda feed: {k: feed[k] for k in names})
    from distilbench.runtime.static_quant import quantization_logs_quiet

    try:  # NNCF draws progress bars on stdout, where predict may be writing JSON lines: they go nowhere
        with quantization_logs_quiet(), contextlib.redirect_stdout(io.StringIO()):
            nncf.set_log_level(logging.ERROR)
            return nncf.quantize(
                model,
                dataset,
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(feeds),
                ignored_scope=nncf.IgnoredScope(names=exclude, validate=False),
            )
    except Exception as exc:  # noqa: BLE001 - one clear error: `auto` then refuses this candidate with the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistilbenchError(f"NNCF int8 quantization failed ({reason}); use openvino-fp32 or onnx-fp32") from None


def quantize_openvino(fp32_graph: Path, out: Path, calibration) -> dict:
    """openvino-int8 of the fp32 ONNX graph `fp32_graph` into the IR `out` (.xml and .bin), calibrated on
    `calibration` (static_quant.StaticCalibration); matrix products kept fp32 step by step until its predictions
    agree with fp32's on `calibration.min_agreement` of the calibration texts (at most MAX_EXCLUSION_STEPS; a model
    that never gets there is saved with its agreement, and auto's guard refuses it). Writes and returns the
    record."""
    from distilbench.runtime.static_quant import agreement, exclusion_steps, quantization_record

    ov = import_openvino()
    import_nncf()
    if not calibration.texts:
        raise DistilbenchError("openvino-int8 needs calibration texts: pass a validation split or texts to predict")
    started = time.perf_counter()
    core = ov.Core()
    model = core.read_model(str(fp32_graph))
    feeds = calibration.feeds([port.get_any_name() for port in model.inputs])
    reference = _logits(compile_openvino(fp32_graph, "f32"), feeds)  # no cache_key: compiled once here
    nodes = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZED_TYPES]
    excluded, kept, tried = [], [], []
    for what, step in [("nothing", []), *exclusion_steps(nodes)[:MAX_EXCLUSION_STEPS]]:
        excluded += step
        if step:
            kept.append(what)
        quantized = _nncf_quantize(core.read_model(str(fp32_graph)), feeds, excluded)
        compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1})
        measured = agreement(reference, _logits(compiled, feeds), calibration.multilabel)
        tried.append({"kept_fp32": what, "agreement_with_fp32": measured})
        log.info("openvino-int8 with %s kept fp32: agreement with fp32 %.2f%%", what, 100 * measured)
        if measured >= calibration.min_agreement:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out), compress_to_fp16=True)  # what stays float (the embeddings) kept in fp16
    measured = agreement(reference, _logits(compile_openvino(out, "f32"), feeds), calibration.multilabel)
    record = {
        **quantization_record(calibration, measured, len(nodes), excluded, kept, tried),
        "quantize_s": time.perf_counter() - started,
        "versions": {"openvino": ov.__version__, "nncf": import_nncf().__version__},
    }
    (out.parent / INT8_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def write_bf16_model(fp32_graph: Path, out: Path, calibration) -> dict:
    """An openvino-bf16 bundle's model: the fp32 graph saved as OpenVINO IR (`out`, .xml and .bin) with its weights
    in fp16, which OpenVINO maps from disk and turns into bf16 (or, for the embeddings, reads as they are). Memory,
    measured on MiniLM-L6 (3,000 headlines, bf16): 340 MB peak from the fp32 ONNX graph, whose fp32 weights stay
    mapped beside their bf16 copies, against 274 MB from this model. Its bf16 predictions are compared with fp32's
    on `calibration`'s texts (static_quant.StaticCalibration); returns the record."""
    from distilbench.runtime.static_quant import agreement

    ov = import_openvino()
    model = ov.Core().read_model(str(fp32_graph))
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=True)
    feeds = calibration.feeds([port.get_any_name() for port in model.inputs])
    reference = _logits(compile_openvino(fp32_graph, "f32"), feeds)
    measured = agreement(reference, _logits(compile_openvino(out, "bf16"), feeds), calibration.multilabel)
    return {
        "weights": "fp16",
        "agreement_with_fp32": measured,
        "calibration_texts": len(calibration.texts),
        "calibration_source": calibration.source,
        "min_agreement": calibration.min_agreement,
    }


def int8_variant(calibration) -> str:
    """The name of an openvino-int8 entry beside its fp32 graph: which calibration, which versions."""
    ov, nncf = import_openvino(), import_nncf()
    return f"openvino-int8-c{calibration.key()}-ov{ov.__version__.split('-')[0]}-nncf{nncf.__version__}-w16"


def cached_openvino_int8(fp32_graph: Path, calibration=None) -> Path:
    """The openvino-int8 model of an fp32 graph (a cache entry, or a work directory's), built on first use in a
    directory beside the graph, one per calibration set; without `calibration` the one built last (auto builds it
    when it calibrates; predict's workers load it after). Built in a temporary directory and renamed into place."""
    from distilbench.core.cache import exclusive_lock

    root = Path(fp32_graph).parent
    if calibration is None:
        built = [path for path in root.glob(f"openvino-int8-c*/{INT8_MODEL}") if path.with_suffix(".bin").is_file()]
        if not built:
            raise DistilbenchError(
                "openvino-int8 needs calibration texts and none were given: choose it with --backend auto (which "
                "calibrates on the validation split or the input and builds it), or export the checkpoint with "
                "`distilbench export --quantize openvino-int8`"
            )
        return max(built, key=lambda path: path.stat().st_mtime)
    final = root / int8_variant(calibration)
    if (final / INT8_MODEL).is_file():
        return final / INT8_MODEL
    with exclusive_lock(root / f".{final.name}.lock"):
        if (final / INT8_MODEL).is_file():
            return final / INT8_MODEL
        building = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.building-"))
        try:
            quantize_openvino(fp32_graph, building / INT8_MODEL, calibration)
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return final / INT8_MODEL
