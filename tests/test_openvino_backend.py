"""OpenVINO backends (openvino-fp32, openvino-bf16, openvino-int8 from NNCF): logits that match fp32 and do not depend
on a text's batch mates, the int8 guard and its record, candidates of `auto`, and bundles that run through them
without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.runtime import auto as backend_choice
from distilbench.runtime.machine import cpu_native_bf16
from distilbench.runtime.static_quant import StaticCalibration

pytest.importorskip("openvino", reason="the OpenVINO backends need openvino (pip install 'distilbench[openvino]')")
pytest.importorskip("nncf", reason="openvino-int8 needs nncf to quantize (pip install 'distilbench[train]')")

from test_static_int8 import LABELS, _checkpoint, _texts  # noqa: E402 (after the importorskip lines above)


@pytest.fixture(scope="module", autouse=True)
def module_cache(tmp_path_factory):
    """One cache for the module: the int8 model quantized on the validation split is built once (NNCF takes
    seconds) and reused by auto's candidates, the record's test and the export."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILBENCH_CACHE", str(tmp_path_factory.mktemp("ov-cache")))
        yield


@pytest.fixture(scope="module")
def confident(tmp_path_factory, tiny_bert_dir):
    return _checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("ov-confident-run"), predicted_labels=True)


def _validation(tokenizer) -> StaticCalibration:
    """The calibration auto and export make from the checkpoint's validation split (_checkpoint's val.csv)."""
    return StaticCalibration(_texts(120, seed=1), tokenizer, source="validation split")


@pytest.fixture(scope="module")
def near_ties(tmp_path_factory, learnable_bert_dir):
    return _checkpoint(
        learnable_bert_dir, tmp_path_factory.mktemp("ov-near-ties-run"), near_ties=True, predicted_labels=True
    )


def _invariant(backend, tokenizer, texts: list[str], atol: float) -> np.ndarray:
    """Logits of `texts` in batches of 64; asserts the same texts shuffled in batches of 7, and alone, get the same
    labels and logits within `atol`."""
    from distilbench.runtime.inference import backend_logits

    order = np.random.default_rng(0).permutation(len(texts))
    first, _ = backend_logits(backend, tokenizer, texts, batch_size=64)
    shuffled, _ = backend_logits(backend, tokenizer, [texts[i] for i in order], batch_size=7)
    alone, _ = backend_logits(backend, tokenizer, texts[:30], batch_size=1)
    labels = first.argmax(axis=1)
    assert (shuffled.argmax(axis=1) == labels[order]).all(), backend.name
    assert (alone.argmax(axis=1) == labels[:30]).all(), backend.name
    assert np.abs(shuffled - first[order]).max() < atol, backend.name
    assert np.abs(alone - first[:30]).max() < atol, backend.name
    return first


def test_every_auto_candidate_gives_a_text_the_same_label_whatever_its_batch(confident):
    """As test_backend_choice's check, over every candidate of auto here, the OpenVINO ones included (int8
    calibrated on other texts, as auto calibrates it); each also agrees with torch-fp32."""
    from distilbench.core.cache import checkpoint_key
    from distilbench.runtime.backends import BATCH_DEPENDENT, load_backend
    from distilbench.runtime.inference import backend_logits

    best, model, tokenizer = confident
    texts = _texts(240, seed=7)
    calibration = _validation(tokenizer)
    candidates = backend_choice.candidate_backends("cpu", with_texts=True)
    assert {"openvino-fp32", "openvino-int8"} <= set(candidates) and not set(candidates) & set(BATCH_DEPENDENT)
    reference, _ = backend_logits(load_backend(model, "torch-fp32"), tokenizer, texts, batch_size=64)
    for name in candidates:
        extra = {"calibration": calibration} if name in backend_choice.CALIBRATED else {}
        backend = load_backend(model, name, cache_key=checkpoint_key(best), **extra)
        # fp32: same kernels whatever the batch (~1e-6); bf16/int8 products round the same way in any batch, but
        # OpenVINO picks kernels by shape, so sums may be ordered differently: still far below a label's margin
        atol = 1e-4 if name.endswith("fp32") else 2e-2
        logits = _invariant(backend, tokenizer, texts, atol)
        assert (logits.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.99, name
        if name == "openvino-fp32":
            assert np.abs(logits - reference).max() < 1e-3


def test_openvino_int8_is_quantized_with_fixed_ranges_and_recorded(confident):
    from distilbench.core.cache import checkpoint_key
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.openvino_backend import openvino_record

    best, model, tokenizer = confident
    calibration = _validation(tokenizer)
    backend = load_backend(model, "openvino-int8", cache_key=checkpoint_key(best), calibration=calibration)
    xml = backend.path.read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # int8 indeed
    record = openvino_record(backend.path)
    assert record["calibration_texts"] == 120 and record["calibration_source"] == "validation split"
    assert record["agreement_with_fp32"] >= 0.99 and record["quantized_nodes"] > 0 and not record["excluded_nodes"]
    # reused from the cache, not quantized again; without calibration, the one built last
    again = load_backend(model, "openvino-int8", cache_key=checkpoint_key(best), calibration=calibration)
    assert again.path == backend.path
    assert load_backend(model, "openvino-int8", cache_key=checkpoint_key(best)).path == backend.path
    with pytest.raises(DistilbenchError, match="--backend auto"):
        load_backend(model, "openvino-int8", cache_key="no-such-checkpoint")


def test_openvino_int8_keeps_products_fp32_until_the_guard_holds(near_ties, tmp_path):
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.openvino_backend import openvino_record

    _, model, tokenizer = near_ties
    strict = StaticCalibration(_texts(64, seed=9), tokenizer, min_agreement=1.0)
    backend = load_backend(model, "openvino-int8", work_dir=tmp_path, calibration=strict)
    record = openvino_record(backend.path)
    assert record["tried"][0]["kept_fp32"] == "nothing"
    assert record["tried"][0]["agreement_with_fp32"] < 1.0, "full int8 should flip a near-tie here"
    assert record["kept_fp32"][0] == "classifier head" and record["excluded_nodes"]
    assert [step["kept_fp32"] for step in record["tried"]][1:] == record["kept_fp32"]
    assert backend.note and "kept fp32" in backend.note


def test_openvino_candidates_follow_what_is_installed_and_the_cpu(monkeypatch):
    from distilbench.runtime import machine, openvino_backend

    monkeypatch.setattr(backend_choice, "native_precisions", lambda device: ["fp32"])
    monkeypatch.setattr(machine, "cpu_native_bf16", lambda: True)
    with_ov = backend_choice.candidate_backends(torch.device("cpu"), with_texts=True)
    assert with_ov[-3:] == ["openvino-fp32", "openvino-bf16", "openvino-int8"]
    assert "openvino-int8" not in backend_choice.candidate_backends(torch.device("cpu"))  # int8 needs texts
    monkeypatch.setattr(machine, "cpu_native_bf16", lambda: False)
    assert "openvino-bf16" not in backend_choice.candidate_backends(torch.device("cpu"), with_texts=True)
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda int8=False: False)
    assert not any(n.startswith("openvino") for n in backend_choice.candidate_backends("cpu", with_texts=True))
    assert backend_choice.candidate_backends(torch.device("cuda")) == ["torch-fp32"]  # CPU-only: never on a GPU


def test_openvino_bf16_is_refused_on_a_cpu_without_native_bf16(confident, monkeypatch, tmp_path):
    from distilbench.runtime import machine
    from distilbench.runtime.backends import load_backend

    monkeypatch.setattr(machine, "cpu_native_bf16", lambda: False)
    with pytest.raises(DistilbenchError, match="native bf16"):
        load_backend(confident[1], "openvino-bf16", work_dir=tmp_path)


@pytest.fixture(scope="module")
def int8_bundle(confident, tmp_path_factory):
    from distilbench.runtime.export import export_model

    bundle = tmp_path_factory.mktemp("ov-bundle") / "bundle"
    return bundle, export_model(confident[0], bundle, quantize="openvino-int8")


def test_an_openvino_int8_bundle_records_its_guard_and_runs_as_auto(int8_bundle, confident):
    from distilbench.runtime.onnx_backend import check_backend, load_exported
    from distilbench.runtime.openvino_backend import INT8_MODEL

    bundle, info = int8_bundle
    assert info["backend"] == "openvino-int8" and info["quantize"] == "openvino-int8"
    assert {INT8_MODEL, "model.openvino-int8.bin", "model.onnx"} <= set(info["files"])  # in the manifest
    assert info["static"]["calibration_source"] == "validation split" and info["static"]["calibration_texts"] == 120
    assert info["static"]["agreement_with_fp32"] >= 0.99 and "openvino" in info["versions"]
    runtime, exported = load_exported(bundle, "auto")
    assert runtime.name == "openvino-int8" and runtime.path.name == INT8_MODEL
    assert check_backend("onnx-fp32", bundle) == "onnx-fp32"  # its fp32 graph runs too
    with pytest.raises(DistilbenchError, match="runs as"):
        check_backend("onnx-int8-static", bundle)
    texts = _texts(100, seed=11)
    int8 = _invariant(runtime, exported.tokenizer, texts, 2e-2)
    fp32 = _invariant(load_exported(bundle, "onnx-fp32")[0], exported.tokenizer, texts, 1e-4)
    assert (int8.argmax(axis=1) == fp32.argmax(axis=1)).mean() >= 0.99


def test_the_int8_model_keeps_its_float_weights_in_fp16(int8_bundle):
    """What NNCF leaves in float (the embeddings) is saved in fp16: an fp32 embedding table stayed mapped in memory
    whole; the agreement recorded is the saved model's."""
    bundle, info = int8_bundle
    int8_weights = (bundle / "model.openvino-int8.bin").stat().st_size
    assert int8_weights < 0.6 * (bundle / "model.onnx.data").stat().st_size
    assert info["static"]["agreement_with_fp32"] >= 0.99


@pytest.fixture(scope="module")
def bf16_bundle(confident, tmp_path_factory):
    """A bundle whose `export --quantize auto` chose openvino-bf16 (auto's measurement replaced by its answer)."""
    from distilbench.runtime import export

    bundle = tmp_path_factory.mktemp("ov-bf16") / "bundle"
    chosen = {"chosen": "openvino-bf16", "candidates": {}, "bundle_backend": "openvino-bf16"}
    original = export.auto_bundle_backend
    export.auto_bundle_backend = lambda *args: ("openvino-bf16", chosen)
    try:
        return bundle, export.export_model(confident[0], bundle, quantize="auto")
    finally:
        export.auto_bundle_backend = original


@pytest.mark.skipif(not cpu_native_bf16(), reason="openvino-bf16 needs a CPU with native bf16")
def test_an_openvino_bf16_bundle_holds_its_model_with_fp16_weights(bf16_bundle):
    from distilbench.runtime.onnx_backend import load_exported
    from distilbench.runtime.openvino_backend import BF16_MODEL

    bundle, info = bf16_bundle
    assert info["backend"] == "openvino-bf16" and {BF16_MODEL, "model.openvino-bf16.bin"} <= set(info["files"])
    record = info["openvino_bf16"]
    assert record["kept"] and record["weights"] == "fp16" and record["agreement_with_fp32"] >= 0.99
    assert record["calibration_source"] == "validation split" and record["calibration_texts"] == 120
    half = (bundle / "model.onnx.data").stat().st_size / 2
    assert abs((bundle / "model.openvino-bf16.bin").stat().st_size - half) < 0.05 * half
    runtime, exported = load_exported(bundle, "auto")
    assert runtime.name == "openvino-bf16" and runtime.path.name == BF16_MODEL
    assert load_exported(bundle, "openvino-fp32")[0].path.name == "model.onnx"  # fp32 runs the fp32 graph
    texts = _texts(100, seed=13)
    bf16 = _invariant(runtime, exported.tokenizer, texts, 2e-2)
    fp32 = _invariant(load_exported(bundle, "onnx-fp32")[0], exported.tokenizer, texts, 1e-4)
    assert (bf16.argmax(axis=1) == fp32.argmax(axis=1)).mean() >= 0.99


def test_a_bf16_model_under_the_guard_is_left_out_of_the_bundle(confident, monkeypatch, tmp_path, capsys):
    from distilbench.runtime import export, openvino_backend
    from distilbench.runtime.bundle import read_exported
    from distilbench.runtime.onnx_backend import openvino_graph

    def disagreeing(fp32_graph, out, calibration):
        out.write_text("<net/>")
        out.with_suffix(".bin").write_bytes(b"0" * 10)
        return {"weights": "fp16", "agreement_with_fp32": 0.9, "calibration_texts": 120}

    monkeypatch.setattr(openvino_backend, "write_bf16_model", disagreeing)
    monkeypatch.setattr(export, "auto_bundle_backend", lambda *args: ("openvino-bf16", {"candidates": {}}))
    info = export.export_model(confident[0], tmp_path / "bundle", quantize="auto")
    assert info["openvino_bf16"]["kept"] is False and "agrees with fp32 on 90.00%" in capsys.readouterr().err
    assert not any(name.startswith("model.openvino-bf16") for name in info["files"])
    exported = read_exported(tmp_path / "bundle")
    assert openvino_graph(exported, "openvino-bf16") == exported.onnx_path


def test_a_damaged_int8_model_in_a_bundle_is_found(int8_bundle, tmp_path):
    import shutil

    from distilbench.runtime.onnx_backend import load_exported

    copy = tmp_path / "bundle"
    shutil.copytree(int8_bundle[0], copy)
    weights = copy / "model.openvino-int8.bin"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DistilbenchError, match="truncated"):
        load_exported(copy, "auto")


def test_without_openvino_an_openvino_bundle_runs_its_fp32_graph_and_says_so(int8_bundle, monkeypatch, capsys):
    from distilbench.runtime import onnx_backend

    monkeypatch.setattr(onnx_backend, "_openvino_installed", lambda: False)
    assert onnx_backend.check_backend("auto", int8_bundle[0]) == "onnx-fp32"
    assert "openvino is not installed" in capsys.readouterr().err


def test_an_fp32_bundle_runs_in_openvino_by_name(confident, tmp_path):
    from distilbench.runtime.export import export_model
    from distilbench.runtime.onnx_backend import check_backend, load_exported

    bundle = tmp_path / "fp32"
    export_model(confident[0], bundle)
    assert check_backend("auto", bundle) == "onnx-fp32"
    runtime, exported = load_exported(bundle, "openvino-fp32")
    texts = _texts(50, seed=12)
    onnx = _invariant(load_exported(bundle, "onnx-fp32")[0], exported.tokenizer, texts, 1e-4)
    assert np.abs(_invariant(runtime, exported.tokenizer, texts, 1e-4) - onnx).max() < 1e-3
    with pytest.raises(DistilbenchError, match="runs as onnx-fp32 or openvino-fp32"):
        check_backend("openvino-int8", bundle)
    # the compiled model is cached under the content key of the manifest's graph and weights (OpenVINO's own cache
    # knows a file by its path, size and time only), and a second load uses it
    from distilbench.core.cache import cache_dir
    from distilbench.runtime.bundle import graph_files
    from distilbench.runtime.openvino_backend import bundle_key

    assert graph_files(exported.onnx_path) == ("model.onnx", "model.onnx.data")
    key = bundle_key(exported.info, "model.onnx", "model.onnx.data")
    assert key and [path for path in (cache_dir() / "openvino").glob(f"{key}-ov*/*") if path.is_file()]
    assert load_exported(bundle, "openvino-fp32")[0].compile_s > 0


def test_predict_on_an_openvino_bundle_imports_no_torch(int8_bundle, tmp_path):
    source = tmp_path / "texts.csv"
    pd.DataFrame({"text": _texts(20, seed=13)}).to_csv(source, index=False)
    code = (
        "import atexit, sys; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); "
        "from distilbench.cli import main; "
        "sys.exit(main(['predict', '--model', sys.argv[1], '--input', sys.argv[2], '--no-progress']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(int8_bundle[0]), str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 20 and {r["label"] for r in records} <= set(LABELS)
    assert done.stderr.strip().splitlines()[-1] == "False"


def test_export_auto_holds_the_fastest_valid_backend_a_bundle_can_run(confident, tmp_path):
    """`export --quantize auto`: auto's measurement and guard on the checkpoint's validation split; the bundle holds
    the fastest valid candidate among those a bundle can run, and `--backend auto` on it runs that one."""
    from distilbench.runtime.export import BUNDLE_QUANTIZE, export_model
    from distilbench.runtime.onnx_backend import load_exported

    info = export_model(confident[0], tmp_path / "auto", quantize="auto")
    choice = info["auto"]
    candidates = choice["candidates"]
    assert {"openvino-fp32", "openvino-int8", "onnx-fp32"} <= set(candidates)
    valid = [name for name in BUNDLE_QUANTIZE if candidates.get(name, {}).get("valid")]
    assert info["backend"] == choice["bundle_backend"] == max(valid, key=lambda n: candidates[n]["samples_per_s"])
    assert info["quantize"] == BUNDLE_QUANTIZE[info["backend"]]
    assert choice["guard"]["source"] == "validation split" and choice["guard"]["texts"] == 120
    runtime, _ = load_exported(tmp_path / "auto", "auto")
    assert runtime.name == info["backend"]


def test_compiled_models_are_cached_per_machine(monkeypatch) -> None:
    """A model compiled where AMX runs is not loaded where only AVX2 may (a simulated AVX2 CPU, or another machine
    sharing the cache): the cache directory names the CPU flags and oneDNN's ISA limit."""
    from distilbench.runtime.openvino_backend import _compiled_cache

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DISTILBENCH_CPU_FLAGS", "avx2")  # every CPU these tests run on has AVX2
    native = _compiled_cache("samekey")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    limited = _compiled_cache("samekey")
    monkeypatch.setenv("DISTILBENCH_CPU_FLAGS", "none")  # no decisive flag at all: another CPU
    probed = _compiled_cache("samekey")
    assert native is not None and len({native, limited, probed}) == 3
    assert native.name.startswith("samekey-ov") and native.parent == limited.parent == probed.parent
