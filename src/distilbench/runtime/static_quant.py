"""Static int8 ONNX graphs: ONNX Runtime's `quantize_static` calibrated on real texts, and partial quantization
where a fully quantized graph disagrees with fp32.

Dynamic int8 (export.quantize_onnx) scales every activation by the range of its batch, so a text's logits depend
on its batch mates. Here the activation scales are measured once, on calibration texts (the run's validation split,
or the texts `auto` calibrates on), and fixed in the graph: QDQ format, int8 weights per channel (QInt8), uint8
activations (QUInt8), as ONNX Runtime recommends for CPUs; only the matrix products (MatMul, Gemm) are quantized.

Then the graph's predictions are compared with the fp32 graph's on the same texts. Under the guard
(`min_agreement`), the products that hurt agreement most stay fp32, in this order, until the guard holds or
nothing is quantized: the classifier head (every product outside the encoder layers), the last layer's output
projections, the rest of the last layer, then each layer below, from the top. The record (which nodes stayed
fp32, the measured agreement) goes into the graph's cache entry and an export's export.json.

Measured once (2-core AMD EPYC, 1 thread, onnxruntime 1.32) on MiniLM-L6 with an untrained 4-class head, whose
logits nearly tie, calibrated and judged on 256 built-in BBC titles: full static int8 agreed with fp32 on 72.3 %
(dynamic int8: 96.9 % on 256 others); keeping the head fp32 74.6 %, then layers from the top 77.7 ... 87.1 %, so the
99 % guard kept every product fp32 (build: 47 s, nine quantizations). MinMax ranges with a moving average gave
79.7 %, symmetric int8 activations 72.7 %, percentile ranges (fixed-length batches: ONNX Runtime's histograms need
them) 75.4 %, leaving the attention products (activation by activation) fp32 73.8 %. Not yet measured: a converged
classifier, whose margins are far wider; SmoothQuant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("MatMul", "Gemm")
MIN_AGREEMENT = 0.99  # the guard of `auto` (ChoiceSettings.min_agreement)
CALIBRATION_BATCH = 32
LAYER_PATTERN = re.compile(r"/(?:layer|layers|h|block|blocks)\.(\d+)/")
OUTPUT_PROJECTION = re.compile(r"(attention/output/dense|/output/dense|out_lin|/lin2/|o_proj|out_proj|fc2|dense_4h)")


@dataclass
class StaticCalibration:
    """The texts whose activations set the fixed int8 scales, how they are tokenized, and the agreement with fp32
    (on the same texts) that a quantized graph must reach before products are kept fp32."""

    texts: list[str]
    tokenizer: object
    max_length: int | None = None
    source: str = "calibration texts"
    min_agreement: float = MIN_AGREEMENT
    multilabel: bool = False  # predictions are logits >= 0 per label instead of the argmax

    def key(self) -> str:
        """A short hash of the texts, the tokenization length and the guard: part of the cache entry's name."""
        digest = hashlib.sha256(f"{self.max_length}\0{self.min_agreement:g}\0{self.multilabel}".encode())
        for text in self.texts:
            digest.update(b"\0" + text.encode())
        return digest.hexdigest()[:12]

    def feeds(self, input_names: list[str]) -> list[dict[str, np.ndarray]]:
        """The texts as int64 batches of the graph's inputs, tokenized, sorted and padded as the inference loop
        does (inference.padded_batches), so that calibration sees the activations predictions will."""
        from distilbench.runtime.inference import padded_batches

        return [
            batch
            for _, batch in padded_batches(self.tokenizer, self.texts, CALIBRATION_BATCH, self.max_length, input_names)
        ]


class _FeedReader:
    """ONNX Runtime's CalibrationDataReader over prepared batches."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _reader(feeds: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_FeedReader, CalibrationDataReader):
        pass

    return Reader(feeds)


def quantizable_nodes(graph: Path) -> list[str]:
    """Names of the graph's matrix products, in graph order."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in QUANTIZED_OPS]


def exclusion_steps(nodes: list[str]) -> list[tuple[str, list[str]]]:
    """What to keep fp32 next, step by step: (what, its nodes): the head (products outside the encoder layers),
    the last layer's output projections, the rest of the last layer, then every layer below from the top. A graph
    whose node names show no layers goes from the head straight to everything."""
    layers: dict[int, list[str]] = {}
    head = []
    for name in nodes:
        match = LAYER_PATTERN.search(name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(name)
        else:
            head.append(name)
    steps = [("classifier head", head)] if head else []
    if not layers:
        rest = [name for name in nodes if name not in head]
        return steps + ([("every product", rest)] if rest else [])
    for index in sorted(layers, reverse=True):
        if index == max(layers):
            projections = [name for name in layers[index] if OUTPUT_PROJECTION.search(name)]
            if projections:
                steps.append((f"layer {index} output projections", projections))
            rest = [name for name in layers[index] if name not in projections]
            if rest:
                steps.append((f"layer {index}", rest))
        else:
            steps.append((f"layer {index}", layers[index]))
    return steps


def _predictions(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    return logits >= 0 if multilabel else logits.argmax(axis=1)


def _logits(graph: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    from distilbench.runtime.onnx_backend import onnx_session

    session = onnx_session(graph, threads=1)
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(["logits"], {k: feed[k] for k in names})[0] for feed in feeds])


def agreement(reference: np.ndarray, logits: np.ndarray, multilabel: bool) -> float:
    """Share of texts whose predicted label(s) equal the reference's."""
    same = _predictions(logits, multilabel) == _predictions(reference, multilabel)
    return float((same if same.ndim == 1 else same.all(axis=1)).mean())


def _quantize(source: Path, out: Path, feeds: list[dict[str, np.ndarray]], exclude: list[str]) -> None:
    """One quantize_static run: QDQ, per-channel QInt8 weights, QUInt8 activations, MinMax calibration."""
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        with quantization_logs_quiet():
            quantize_static(
                str(source),
                str(out),
                _reader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
    except Exception as exc:  # noqa: BLE001 - one clear error: `auto` then refuses this candidate with the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistilbenchError(f"static int8 quantization failed ({reason}); use onnx-fp32 or torch-fp32") from None
    finally:
        for leftover in out.parent.glob("augmented_model*.onnx"):  # the calibrator's copy, where it leaves one
            leftover.unlink(missing_ok=True)


# Each step is a whole quantization and calibration (about 5 s for MiniLM-L6 on 2 cores, more for bigger models),
# paid once per checkpoint by `auto`: past the head and the top layer, keeping more products fp32 costs more time
# than the int8 graph can win back (on MiniLM-L6, only all-fp32 reached 99 % agreement on an untrained head).
MAX_EXCLUSION_STEPS = 3


def quantize_static_onnx(fp32_path: Path, out: Path, calibration: StaticCalibration) -> dict:
    """Static int8 of the fp32 graph `fp32_path` into `out`, keeping products fp32 step by step
    (exclusion_steps, at most MAX_EXCLUSION_STEPS) until its predictions agree with fp32's on
    `calibration.min_agreement` of the calibration texts; a graph that never gets there is recorded with its
    agreement, and auto's guard refuses it. Returns the record: calibration size and source, the nodes kept
    fp32, the agreement measured."""
    from distilbench.runtime.onnx_backend import import_onnxruntime

    import_onnxruntime()
    if not calibration.texts:
        raise DistilbenchError("static int8 needs calibration texts: pass a validation split or texts to predict")
    prepared = prepare_for_quantization(fp32_path, out.with_name(out.stem + ".pre.onnx"))
    try:
        feeds = calibration.feeds(_input_names(fp32_path))
        reference = _logits(fp32_path, feeds)
        nodes = quantizable_nodes(prepared)
        excluded: list[str] = []
        kept: list[str] = []
        tried = []
        for what, step in [("nothing", []), *exclusion_steps(nodes)[:MAX_EXCLUSION_STEPS]]:
            excluded += step
            if step:
                kept.append(what)
            if len(excluded) == len(nodes):  # nothing left to quantize: the fp32 graph it is
                shutil.copyfile(fp32_path, out)
                measured = 1.0
            else:
                _quantize(prepared, out, feeds, excluded)
                measured = agreement(reference, _logits(out, feeds), calibration.multilabel)
            tried.append({"kept_fp32": what, "agreement_with_fp32": measured})
            log.info("static int8 with %s kept fp32: agreement with fp32 %.2f%%", what, 100 * measured)
            if measured >= calibration.min_agreement:
                break
    finally:
        prepared.unlink(missing_ok=True)
    return quantization_record(calibration, measured, len(nodes), excluded, kept, tried)


def quantization_record(
    calibration: StaticCalibration, measured: float, nodes: int, excluded: list, kept: list, tried: list
) -> dict:
    """What a calibrated int8 model records (ONNX Runtime's static int8, OpenVINO's NNCF int8): its calibration,
    the agreement measured with fp32, the nodes quantized and those kept fp32, and each step tried."""
    return {
        "calibration_texts": len(calibration.texts),
        "calibration_source": calibration.source,
        "min_agreement": calibration.min_agreement,
        "agreement_with_fp32": measured,
        "quantized_nodes": nodes - len(excluded),
        "excluded_nodes": excluded,
        "kept_fp32": kept,
        "tried": tried,
    }


def static_record(graph: Path) -> dict | None:
    """The record of a static int8 graph (static.json beside it: calibration, nodes kept fp32, agreement), or
    None for another graph."""
    try:
        return json.loads((Path(graph).parent / "static.json").read_text())
    except (OSError, ValueError):
        return None


def _input_names(graph: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(graph), load_external_data=False).graph.input]


@contextmanager
def quantization_logs_quiet() -> Iterator[None]:
    """onnxruntime.quantization logs a line per tensor on the root logger: warnings only while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def prepare_for_quantization(fp32_path: Path, prepared: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, constant folding) into `prepared`; the fp32
    graph itself where it fails (its symbolic shape inference cannot follow BERT graphs, so it is skipped)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - quantization works without it
        log.debug("ONNX quantization pre-processing skipped: %s", exc)
        shutil.copyfile(fp32_path, prepared)
    return prepared
