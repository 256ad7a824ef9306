"""Static int8 (onnx-int8-static): activation scales fixed from calibration texts, so a text's logits do not depend
on its batch mates; its agreement with fp32 measured and recorded; products kept fp32 where the guard would fail;
a candidate of `auto`, and a quantization of `distilbench export`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.runtime import auto as backend_choice
from distilbench.runtime.static_quant import (
    MAX_EXCLUSION_STEPS,
    StaticCalibration,
    agreement,
    exclusion_steps,
    static_record,
)

LABELS = ["a", "b", "c"]
WORDS = "market health film science stock virus actor planet bank vaccine music rocket".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(n)]


def _checkpoint(encoder_dir, root, near_ties: bool = False, predicted_labels: bool = False):
    """A tiny random multiclass checkpoint in a run directory (RUN/models/tiny/best) with a validation split: a
    sharp head (confident predictions), or with `near_ties` one whose first two classes nearly tie on every text,
    so that int8's rounding flips some of them. The split's labels cycle through the classes, or with
    `predicted_labels` are the model's own predictions."""
    from distilbench.models.registry import load_classifier

    torch.manual_seed(3)
    model, tokenizer = load_classifier(str(encoder_dir), "multiclass", LABELS)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)
        if near_ties:
            last.weight[1] = last.weight[0] + 0.02 * (last.weight[1] - last.weight[0])
            last.weight[2] = -last.weight[0]
            last.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))  # class 2 never wins
            probe = tokenizer(_texts(64, seed=2), padding=True, return_tensors="pt")
            logits = model.eval()(**probe).logits
            last.bias[1] += float((logits[:, 0] - logits[:, 1]).median())  # classes 0 and 1 tie, each wins half
    best = root / "models" / "tiny" / "best"
    model.save_pretrained(best)
    tokenizer.save_pretrained(best)
    (root / "data").mkdir()
    texts = _texts(120, seed=1)
    labels = [LABELS[i % 3] for i in range(len(texts))]
    if predicted_labels:
        with torch.no_grad():
            predicted = model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits.argmax(dim=1)
        labels = [LABELS[i] for i in predicted.numpy()]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "data" / "val.csv", index=False)
    return best, model.eval(), tokenizer


@pytest.fixture(scope="module")
def confident(tmp_path_factory, tiny_bert_dir):
    return _checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("confident-run"), near_ties=False)


@pytest.fixture(scope="module")
def near_ties(tmp_path_factory, learnable_bert_dir):
    return _checkpoint(learnable_bert_dir, tmp_path_factory.mktemp("near-ties-run"), near_ties=True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _ops(graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(graph)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_static_graph_is_quantized_and_its_logits_do_not_depend_on_the_batch(confident, tmp_path):
    """Fixed activation scales: the same texts in another order, in batches of 7 and alone give the same logits
    (dynamic int8 differs by ~1e-4 here, see test_backend_choice)."""
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.inference import backend_logits

    _, model, tokenizer = confident
    calibration = StaticCalibration(_texts(96, seed=2), tokenizer, min_agreement=0.0)  # all quantized
    backend = load_backend(model, "onnx-int8-static", work_dir=tmp_path, calibration=calibration)
    ops = _ops(backend.path)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0  # QDQ
    assert static_record(backend.path)["excluded_nodes"] == []
    texts = _texts(200, seed=7)
    order = np.random.default_rng(0).permutation(len(texts))
    first, _ = backend_logits(backend, tokenizer, texts, batch_size=64)
    shuffled, _ = backend_logits(backend, tokenizer, [texts[i] for i in order], batch_size=7)
    alone, _ = backend_logits(backend, tokenizer, texts[:30], batch_size=1)
    assert np.abs(shuffled - first[order]).max() < 1e-5
    assert np.abs(alone - first[:30]).max() < 1e-5
    fp32, _ = backend_logits(load_backend(model, "torch-fp32"), tokenizer, texts, batch_size=64)
    assert 0 < np.abs(first - fp32).max() < 0.5  # int8 indeed, and close to fp32


def test_agreement_with_fp32_is_measured_and_recorded_in_the_cache_entry(confident, cache):
    from distilbench.core.cache import checkpoint_key
    from distilbench.models.inputs import model_input_names
    from distilbench.runtime.export import cached_onnx
    from distilbench.runtime.static_quant import _logits

    best, model, tokenizer = confident
    texts = _texts(80, seed=4)
    calibration = StaticCalibration(texts, tokenizer, source="test texts")
    inputs = model_input_names(model)
    graph = cached_onnx(model, inputs, checkpoint_key(best), "int8-static", calibration=calibration)
    built = json.loads((graph.parent / "built.json").read_text())
    record = built["static"]
    assert built["quantize"] == "int8-static" and record == static_record(graph)
    assert record["calibration_texts"] == 80 and record["calibration_source"] == "test texts"
    fp32 = cached_onnx(model, inputs, checkpoint_key(best))
    feeds = calibration.feeds(inputs)
    assert record["agreement_with_fp32"] == agreement(_logits(fp32, feeds), _logits(graph, feeds), False)
    assert record["agreement_with_fp32"] >= 0.99 and record["quantized_nodes"] > 0
    # reused, not rebuilt; another calibration set is another entry; without one, the latest entry is used
    assert cached_onnx(model, inputs, checkpoint_key(best), "int8-static", calibration=calibration) == graph
    assert cached_onnx(model, inputs, checkpoint_key(best), "int8-static") == graph
    other = StaticCalibration(_texts(40, seed=5), tokenizer)
    assert cached_onnx(model, inputs, checkpoint_key(best), "int8-static", calibration=other) != graph


def test_without_calibration_texts_nor_a_cached_graph_it_says_how_to_get_one(confident, cache):
    from distilbench.runtime.backends import load_backend

    best, model, _ = confident
    with pytest.raises(DistilbenchError, match="--backend auto"):
        load_backend(model, "onnx-int8-static", cache_key="no-such-checkpoint")


def test_exclusion_steps_go_from_the_head_down_the_layers():
    nodes = [
        "/model/bert/encoder/layer.0/attention/self/query/MatMul",
        "/model/bert/encoder/layer.0/output/dense/MatMul",
        "/model/bert/encoder/layer.1/attention/self/query/MatMul",
        "/model/bert/encoder/layer.1/attention/output/dense/MatMul",
        "/model/bert/encoder/layer.1/output/dense/MatMul",
        "/model/bert/pooler/dense/Gemm",
        "/model/classifier/Gemm",
    ]
    steps = exclusion_steps(nodes)
    assert [what for what, _ in steps] == ["classifier head", "layer 1 output projections", "layer 1", "layer 0"]
    assert steps[0][1] == nodes[5:]
    assert steps[1][1] == nodes[3:5] and steps[2][1] == nodes[2:3]
    assert sorted(sum((step for _, step in steps), [])) == sorted(nodes)  # every product, once
    assert exclusion_steps(["a/MatMul", "b/MatMul"]) == [("classifier head", ["a/MatMul", "b/MatMul"])]


def test_partial_quantization_keeps_the_products_that_break_the_guard_in_fp32(near_ties, tmp_path):
    """A head that leaves near-ties: full static int8 flips some of them, so a strict guard (100 % agreement) keeps
    products fp32, head first, until it holds; the record says which and what was measured."""
    from distilbench.runtime.backends import load_backend

    _, model, tokenizer = near_ties
    texts = _texts(150, seed=9)
    full = load_backend(
        model,
        "onnx-int8-static",
        work_dir=tmp_path / "full",
        calibration=StaticCalibration(texts, tokenizer, min_agreement=0.0),
    )
    full_record = static_record(full.path)
    assert full_record["agreement_with_fp32"] < 1.0, "full quantization should flip a near-tie here"
    strict = StaticCalibration(texts, tokenizer, min_agreement=1.0)
    partial = load_backend(model, "onnx-int8-static", work_dir=tmp_path / "partial", calibration=strict)
    record = static_record(partial.path)
    assert record["excluded_nodes"] and record["kept_fp32"][0] == "classifier head"
    assert record["tried"][0]["agreement_with_fp32"] < 1.0
    assert [step["kept_fp32"] for step in record["tried"]][1:] == record["kept_fp32"]
    # at most MAX_EXCLUSION_STEPS steps past full int8 (each is a whole quantization); one that still misses the
    # guard is recorded with its agreement, and auto's guard refuses it
    assert len(record["tried"]) <= 1 + MAX_EXCLUSION_STEPS
    if record["agreement_with_fp32"] < 1.0:
        assert len(record["tried"]) == 1 + MAX_EXCLUSION_STEPS
    assert record["quantized_nodes"] < full_record["quantized_nodes"]
    assert _ops(partial.path).get("QuantizeLinear", 0) < _ops(full.path)["QuantizeLinear"]
    assert partial.note and "kept fp32" in partial.note


def _fast(monkeypatch, fast_name: str) -> None:
    """`fast_name` answers each batch it has seen instantly (its logits are its own), so it is the fastest."""
    from distilbench.runtime import backends

    real = backends.load_backend

    class Memo:
        def __init__(self, inner):
            self.inner, self.name, self.path = inner, inner.name, getattr(inner, "path", None)
            self.input_names, self.num_labels, self.first_token_only = inner.input_names, inner.num_labels, False
            self.answers = {}

        def __call__(self, batch):
            key = batch["input_ids"].tobytes()
            if key not in self.answers:
                self.answers[key] = self.inner(batch)
            return self.answers[key]

    def load(model, name, **kwargs):
        backend = real(model, name, **kwargs)
        return Memo(backend) if name == fast_name else backend

    monkeypatch.setattr(backends, "load_backend", load)


def test_auto_may_choose_static_int8_and_never_a_batch_dependent_backend(confident, cache, monkeypatch):
    from distilbench.runtime.backends import BATCH_DEPENDENT

    best, model, tokenizer = confident
    monkeypatch.setattr(backend_choice, "native_precisions", lambda device: ["fp32"])
    candidates = backend_choice.candidate_backends("cpu", with_texts=True)
    assert "onnx-int8-static" in candidates and not set(candidates) & set(BATCH_DEPENDENT)
    assert "onnx-int8-static" not in backend_choice.candidate_backends("cpu", with_texts=False)  # nothing to calibrate
    _fast(monkeypatch, "onnx-int8-static")
    backend, record = backend_choice.build_backend(model, tokenizer, best, "auto", device="cpu", batch_size=16)
    assert record["chosen"] == "onnx-int8-static" and backend.name == "onnx-int8-static"
    assert record["chosen"] not in BATCH_DEPENDENT
    entry = record["candidates"]["onnx-int8-static"]
    assert entry["valid"] and entry["static"]["calibration_texts"] == 120  # the run's validation split
    assert entry["static"]["calibration_source"] == "validation split" and "excluded_nodes" in entry["static"]
    # a later process (predict's workers) loads the cached choice and the cached static graph without texts
    name, cached = backend_choice.resolve_backend(best, "auto", device="cpu", batch_size=16, show=False)
    assert name == "onnx-int8-static" and cached["cached"]
    from distilbench.runtime.backends import load_model_dir

    assert load_model_dir(best, name).backend.path == backend.path


def test_export_int8_static_records_calibration_exclusions_and_agreement(confident, cache, tmp_path):
    from distilbench.runtime.backends import load_exported
    from distilbench.runtime.export import export_model
    from distilbench.runtime.inference import backend_logits

    best, model, tokenizer = confident
    info = export_model(best, tmp_path / "bundle", quantize="int8-static")
    assert info["backend"] == "onnx-int8-static" and info["quantize"] == "int8-static"
    static = info["static"]
    assert static["calibration_texts"] == 120 and static["calibration_source"] == "validation split"
    assert isinstance(static["excluded_nodes"], list) and static["agreement_with_fp32"] >= 0.99
    assert json.loads((tmp_path / "bundle" / "export.json").read_text())["static"] == static
    runtime, _ = load_exported(tmp_path / "bundle")
    assert runtime.name == "onnx-int8-static"
    texts = _texts(20, seed=11)
    logits, _ = backend_logits(runtime, tokenizer, texts, batch_size=8)
    with torch.no_grad():
        reference = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    assert (logits.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.9


def test_partial_quantization_stops_as_soon_as_the_guard_holds(near_ties, tmp_path, monkeypatch):
    """Measured agreement under the guard until the head is kept fp32: only the head stays fp32, the encoder's
    products stay int8."""
    from distilbench.runtime import static_quant
    from distilbench.runtime.backends import load_backend

    _, model, tokenizer = near_ties
    measured = iter([0.9, 0.995])
    monkeypatch.setattr(static_quant, "agreement", lambda reference, logits, multilabel: next(measured))
    calibration = StaticCalibration(_texts(60, seed=3), tokenizer)
    backend = load_backend(model, "onnx-int8-static", work_dir=tmp_path, calibration=calibration)
    record = static_record(backend.path)
    assert record["kept_fp32"] == ["classifier head"] and record["agreement_with_fp32"] == 0.995
    assert record["excluded_nodes"] == ["/model/bert/pooler/dense/Gemm", "/model/classifier/Gemm"]
    assert record["quantized_nodes"] > 0 and _ops(backend.path)["QuantizeLinear"] > 0
    assert [step["agreement_with_fp32"] for step in record["tried"]] == [0.9, 0.995]
