"""`--backend auto`: candidates by machine, calibration, the accuracy guard, the cache, and where it is recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.runtime import auto as backend_choice
from distilbench.runtime import machine
from distilbench.runtime.auto import (
    ChoiceSettings,
    build_backend,
    calibrate,
    candidate_backends,
    resolve_backend,
)

LABELS = ["a", "b", "c"]
WORDS = "market health film science stock virus actor planet bank vaccine music rocket".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory, tiny_bert_dir):
    """A tiny 'fine-tuned' multiclass checkpoint inside a run directory, with a labelled validation split."""
    from distilbench.models.registry import load_classifier

    torch.manual_seed(3)
    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", LABELS)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)  # confident predictions, so that backends agree where they should
    root = tmp_path_factory.mktemp("run")
    best = root / "models" / "tiny" / "best"
    model.save_pretrained(best)
    tokenizer.save_pretrained(best)
    (root / "data").mkdir()
    texts = _texts(120, seed=1)
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        predicted = model.eval()(**encoded).logits.argmax(dim=1).numpy()
    labels = [LABELS[i] for i in predicted]  # labels the fp32 model gets right: a metric drop is visible
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "data" / "val.csv", index=False)
    return best, model, tokenizer


class _Fake:
    """A backend wrapper: `flip` turns every prediction into another class; it answers instantly."""

    def __init__(self, inner, name: str, flip: bool):
        self.inner, self.name, self.flip = inner, name, flip
        self.input_names, self.num_labels = inner.input_names, inner.num_labels
        self.first_token_only = False
        self.answers = {}

    def __call__(self, batch):
        key = batch["input_ids"].tobytes()
        if key not in self.answers:  # computed once per batch: later calls cost nothing, so it is fastest
            logits = self.inner(batch)
            self.answers[key] = np.roll(logits, 1, axis=1) if self.flip else logits
        return self.answers[key]


def _with_fake(monkeypatch, fake_name: str, flip: bool) -> None:
    from distilbench.runtime import backends

    real = backends.load_backend

    def load(model, name, **kwargs):
        backend = real(model, "torch-fp32" if name == fake_name else name, **kwargs)
        return _Fake(backend, name, flip) if name == fake_name else backend

    monkeypatch.setattr(backends, "load_backend", load)
    monkeypatch.setattr(
        backend_choice, "candidate_backends", lambda device, with_texts=False: ["torch-fp32", fake_name]
    )


def test_candidates_follow_the_machine(monkeypatch):
    import distilbench.runtime.openvino_backend

    # OpenVINO's candidates follow its install and are tested in test_openvino_backend.py
    monkeypatch.setattr(distilbench.runtime.openvino_backend, "openvino_available", lambda int8=False: False)
    monkeypatch.setattr(backend_choice, "native_precisions", lambda device: ["fp32"])
    cpu = candidate_backends(torch.device("cpu"), with_texts=True)
    assert cpu == ["torch-fp32", "onnx-fp32", "onnx-int8-static"]  # no emulated bf16, no dynamic int8
    assert candidate_backends(torch.device("cpu"), with_texts=False) == ["torch-fp32", "onnx-fp32"]  # static: texts
    monkeypatch.setattr(backend_choice, "native_precisions", lambda device: ["fp32", "bf16"])
    assert candidate_backends(torch.device("cpu"), with_texts=True) == [
        "torch-fp32",
        "torch-bf16",
        "onnx-fp32",
        "onnx-int8-static",
    ]
    assert candidate_backends(torch.device("cuda")) == ["torch-fp32", "torch-bf16"]  # nothing CPU-only on a GPU
    monkeypatch.setattr(backend_choice, "native_precisions", lambda device: ["fp32", "fp16"])
    assert candidate_backends(torch.device("cuda")) == ["torch-fp32"]


def test_every_candidate_gives_a_text_the_same_label_whatever_its_batch(run_checkpoint, tmp_path):
    """A text's label must not depend on the other texts predicted with it: the same texts in another order and
    other batch sizes get the same labels from every backend auto may choose on this machine (static int8
    calibrated as auto calibrates it: on other texts, with the guard's 99 %)."""
    from distilbench.runtime.backends import BATCH_DEPENDENT, load_backend
    from distilbench.runtime.inference import backend_logits
    from distilbench.runtime.static_quant import StaticCalibration

    _, model, tokenizer = run_checkpoint
    texts = _texts(300, seed=7)
    order = np.random.default_rng(0).permutation(len(texts))
    calibration = StaticCalibration(_texts(120, seed=1), tokenizer)
    candidates = candidate_backends("cpu", with_texts=True)
    assert "onnx-int8-static" in candidates and not set(candidates) & set(BATCH_DEPENDENT)
    for name in candidates:
        extra = {"calibration": calibration, "work_dir": tmp_path / name} if name in backend_choice.CALIBRATED else {}
        backend = load_backend(model, name, **extra)
        first, _ = backend_logits(backend, tokenizer, texts, batch_size=64)
        shuffled, _ = backend_logits(backend, tokenizer, [texts[i] for i in order], batch_size=7)
        alone, _ = backend_logits(backend, tokenizer, texts[:40], batch_size=1)
        labels = first.argmax(axis=1)
        assert (shuffled.argmax(axis=1) == labels[order]).all(), name
        assert (alone.argmax(axis=1) == labels[:40]).all(), name
        # the logits themselves, so that a batch-dependent backend fails here even where no label flips (dynamic
        # int8 differs by ~1e-4 on this model; fp32 and bf16 by at most ~1e-8)
        assert np.abs(shuffled - first[order]).max() < 1e-5, name
        assert np.abs(alone - first[:40]).max() < 1e-5, name


def test_a_dynamic_int8_backend_asked_for_by_name_warns_that_labels_depend_on_batch_mates(run_checkpoint, capsys):
    from distilbench.runtime import backends

    _, model, _ = run_checkpoint
    backends._warn_batch_dependent.cache_clear()
    backends.load_backend(model, "torch-int8")
    assert "depend on the other texts in its batch" in capsys.readouterr().err
    assert "torch-int8" in backends.BATCH_DEPENDENT and "onnx-int8" in backends.BATCH_DEPENDENT


def test_flags_env_removes_bf16_from_the_candidates(monkeypatch):
    monkeypatch.setenv(machine.FLAGS_ENV, "avx2")
    assert "torch-bf16" not in candidate_backends("cpu", with_texts=True)


def test_a_fast_backend_that_agrees_is_chosen(run_checkpoint, monkeypatch, tmp_path):
    best, model, tokenizer = run_checkpoint
    _with_fake(monkeypatch, "onnx-int8", flip=False)
    backend, record = calibrate(
        model,
        tokenizer,
        task="multiclass",
        label_names=LABELS,
        guard=(_texts(80), None, "held sample"),
        device="cpu",
        batch_size=16,
        show=False,
    )
    assert record["chosen"] == "onnx-int8" and backend.name == "onnx-int8"
    assert record["candidates"]["onnx-int8"]["agreement_with_fp32"] == 1.0
    assert record["candidates"]["onnx-int8"]["samples_per_s"] > record["candidates"]["torch-fp32"]["samples_per_s"]


def test_a_backend_that_flips_predictions_is_refused(run_checkpoint, monkeypatch):
    best, model, tokenizer = run_checkpoint
    _with_fake(monkeypatch, "onnx-int8", flip=True)
    backend, record = calibrate(
        model,
        tokenizer,
        task="multiclass",
        label_names=LABELS,
        guard=(_texts(80), None, "held sample"),
        device="cpu",
        batch_size=16,
        show=False,
    )
    assert record["chosen"] == "torch-fp32" and backend.name == "torch-fp32"
    refused = record["candidates"]["onnx-int8"]
    assert not refused["valid"] and "agrees with fp32 on 0.0% of texts" in refused["refused"]
    assert refused["samples_per_s"] > record["candidates"]["torch-fp32"]["samples_per_s"]  # fast, yet refused


def test_the_metric_guard_uses_labels(run_checkpoint, monkeypatch):
    best, model, tokenizer = run_checkpoint
    _with_fake(monkeypatch, "onnx-int8", flip=True)
    texts, labels, source = backend_choice.validation_texts(best)
    assert source == "validation split" and len(texts) == 120
    _, record = calibrate(
        model,
        tokenizer,
        task="multiclass",
        label_names=LABELS,
        guard=(texts, labels, source),
        device="cpu",
        batch_size=16,
        show=False,
        settings=ChoiceSettings(min_agreement=0.0),
    )  # agreement alone would let it pass
    entry = record["candidates"]["onnx-int8"]
    assert entry["accuracy_delta_points"] == pytest.approx(-100.0)
    assert "accuracy 100.00 points below fp32's" in entry["refused"] and record["chosen"] == "torch-fp32"


def test_choice_is_cached_per_checkpoint_and_machine(run_checkpoint, monkeypatch, tmp_path):
    best, model, tokenizer = run_checkpoint
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    _with_fake(monkeypatch, "onnx-int8", flip=False)
    name, record = resolve_backend(best, "auto", device="cpu", batch_size=16, show=False)
    assert name == "onnx-int8" and not record["cached"] and record["guard"]["source"] == "validation split"

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(backend_choice, "calibrate", no_calibration)
    name, record = resolve_backend(best, "auto", device="cpu", batch_size=16, show=False)
    assert name == "onnx-int8" and record["cached"]
    backend, record = build_backend(model, tokenizer, best, "auto", device="cpu", batch_size=16, show=False)
    assert backend.name == "onnx-int8" and record["cached"]
    with pytest.raises(AssertionError, match="calibrated again"):  # --recalibrate
        resolve_backend(
            best, "auto", device="cpu", batch_size=16, show=False, settings=ChoiceSettings(recalibrate=True)
        )
    monkeypatch.setattr(backend_choice, "machine_fingerprint", lambda: "another-machine")
    with pytest.raises(AssertionError, match="calibrated again"):  # another machine
        resolve_backend(best, "auto", device="cpu", batch_size=16, show=False)


def test_explicit_backend_needs_no_choice(run_checkpoint):
    best, _, _ = run_checkpoint
    assert resolve_backend(best, "torch-int8") == ("torch-int8", None)


def test_checkpoint_outside_a_run_calibrates_on_held_texts(run_checkpoint, tmp_path, monkeypatch):
    best, model, tokenizer = run_checkpoint
    alone = tmp_path / "alone"
    model.save_pretrained(alone)
    tokenizer.save_pretrained(alone)
    _with_fake(monkeypatch, "torch-int8", flip=False)
    with pytest.raises(DistilbenchError, match="pass --backend explicitly"):
        resolve_backend(alone, "auto", device="cpu", show=False)
    asked = []

    def held() -> list[str]:
        asked.append(True)
        return _texts(40)

    name, record = resolve_backend(alone, "auto", device="cpu", batch_size=8, held_texts=held, show=False)
    assert asked and record["guard"] == {
        "texts": 40,
        "source": "held sample (input)",
        "labels": False,
        "min_agreement": 0.99,
        "max_metric_drop": 0.5,
    }
    assert json.loads(json.dumps(record)) == record  # JSON-ready for the results files


def test_settings_are_checked():
    with pytest.raises(DistilbenchError, match="--min-agreement"):
        ChoiceSettings(min_agreement=1.5).validate()
    with pytest.raises(DistilbenchError, match="--max-metric-drop"):
        ChoiceSettings(max_metric_drop=-1).validate()
