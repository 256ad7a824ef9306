"""Inference backends against the plain fp32 forward, on tiny random BERT, DistilBERT-student and thesis-head models."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.models.inputs import model_input_names
from distilbench.runtime.backends import BACKENDS, load_backend
from distilbench.runtime.inference import backend_logits
from distilbench.runtime.machine import cpu_flags, cpu_native_bf16
from distilbench.runtime.static_quant import StaticCalibration

LABELS = ["a", "b", "c"]
TEXTS = [
    "a rather longer sentence, so that the batch needs padding for the shorter ones here",
    "short",
    "a medium length text about something",
    "one more text of a middling size for the batch",
    "tiny",
    "the longest text of them all, which goes on and on about nothing in particular and then some more words",
]
KINDS = ("bert", "student", "thesis", "mean")


def _sharpen_head(model) -> None:
    """Random heads give logits near 0.01; scale the last Linear so logits are O(1) and tolerances mean something."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)


@pytest.fixture(scope="module")
def models(tiny_bert_dir):
    """kind -> (model, tokenizer, a copy of its state) for a BERT, a DistilBERT student, a thesis-head BERT and a
    mean-pooling student."""
    from distilbench.models.registry import load_classifier

    specs = {
        "bert": (str(tiny_bert_dir), "standard"),
        "student": (f"student:{tiny_bert_dir}", "standard"),
        "thesis": (str(tiny_bert_dir), "thesis"),
        "mean": (f"student:{tiny_bert_dir}", "mean"),
    }
    out = {}
    for kind, (spec, head) in specs.items():
        torch.manual_seed(1)
        model, tokenizer = load_classifier(spec, "multiclass", LABELS, head=head)
        model.eval()
        _sharpen_head(model)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out[kind] = (model, tokenizer, state)
    return out


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    """Each backend built once per model kind, on demand."""
    cache: dict = {}

    def get(kind: str, name: str):
        if (kind, name) not in cache:
            work_dir = tmp_path_factory.mktemp(f"{kind}-{name}")
            # static int8 calibrates on texts (auto's; here the test texts)
            calibrated = name in ("onnx-int8-static", "openvino-int8")
            extra = {"calibration": StaticCalibration(TEXTS, models[kind][1])} if calibrated else {}
            cache[kind, name] = load_backend(models[kind][0], name, work_dir=work_dir, **extra)
        return cache[kind, name]

    return get


def _padded(tokenizer, texts: list[str], input_names: list[str]) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding=True, return_tensors="np")
    batch = {k: np.asarray(enc[k], dtype=np.int64) for k in enc}
    if "token_type_ids" in input_names and "token_type_ids" not in batch:
        batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    return batch


VNNI = {"avx512_vnni", "avx_vnni", "amx_int8"}


def buildable_here() -> list[str]:
    """The backends this CPU runs: all but openvino-bf16 where bf16 is not native (OpenVINO would emulate it)."""
    return [name for name in BACKENDS if name != "openvino-bf16" or cpu_native_bf16()]


def _reference(model, batch: dict[str, np.ndarray], input_names: list[str]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(batch[k]) for k in input_names}).logits.numpy()


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_backend_logits_close_to_fp32(models, built, kind, name):
    model, tokenizer, _ = models[kind]
    if name not in buildable_here():  # openvino-bf16 without native bf16: refused by name, never emulated
        with pytest.raises(DistilbenchError, match="needs a CPU with native bf16"):
            built(kind, name)
        return
    backend = built(kind, name)
    batch = _padded(tokenizer, TEXTS, model_input_names(model))
    assert batch["attention_mask"].min() == 0  # really padded
    ref = _reference(model, batch, model_input_names(model))
    assert np.abs(ref).max() > 0.3  # the sharpened head gives logits worth comparing
    out = backend(batch)
    assert out.dtype == np.float32 and out.shape == (len(TEXTS), len(LABELS))
    diff = np.abs(out - ref).max()
    if name.endswith("fp32"):
        assert diff < 1e-4
    elif name.startswith("torch-bf16"):  # bf16 keeps ~3 significant digits: the bound grows with logits above 1
        assert diff < 0.03 * max(1.0, float(np.abs(ref).max()))
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 5 / 6
    else:  # int8: weights rounded to 1/127 of their range
        # OpenVINO's int8 on a CPU without VNNI keeps 7 bits of the activations (against saturation of the AVX2
        # products): a correlation of 0.9986 and an error of 0.09 of the largest logit measured on the simulated
        # AVX2 CPU, against 0.9999 and under 0.05 with VNNI; auto's guard judges its labels like any candidate's
        seven_bits = name == "openvino-int8" and not VNNI.intersection(cpu_flags())
        assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > (0.998 if seven_bits else 0.999)
        assert diff < (0.1 if seven_bits else 0.05) * np.abs(ref).max()  # 7 bits: about twice the error


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_padding_does_not_change_logits(models, built, kind):
    model, tokenizer, _ = models[kind]
    backend = built(kind, "onnx-fp32")
    batch = _padded(tokenizer, TEXTS, backend.input_names)
    together = backend(batch)
    for i, text in enumerate(TEXTS):
        alone = backend(_padded(tokenizer, [text], backend.input_names))
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def test_input_names_follow_the_architecture(models, built):
    assert model_input_names(models["bert"][0]) == ["input_ids", "attention_mask", "token_type_ids"]
    assert model_input_names(models["student"][0]) == ["input_ids", "attention_mask"]
    assert model_input_names(models["thesis"][0]) == ["input_ids", "attention_mask", "token_type_ids"]
    for kind in ("bert", "student"):  # the ONNX graph declares what the model takes
        assert built(kind, "onnx-fp32").input_names == model_input_names(models[kind][0])


@pytest.mark.parametrize("name", ["torch-fp32", "onnx-fp32"])
def test_backend_logits_keeps_input_order(models, built, name):
    model, tokenizer, _ = models["bert"]
    backend = built("bert", name)
    logits, seconds = backend_logits(backend, tokenizer, TEXTS, batch_size=2)
    assert logits.shape == (len(TEXTS), len(LABELS)) and seconds > 0
    for i, text in enumerate(TEXTS):
        expected = _reference(model, _padded(tokenizer, [text], backend.input_names), backend.input_names)[0]
        np.testing.assert_allclose(logits[i], expected, atol=1e-4)
    empty, _ = backend_logits(backend, tokenizer, [])
    assert empty.shape == (0, len(LABELS))


def test_caller_model_is_not_modified(models, built):
    for name in buildable_here():
        built("bert", name)
    model, _, state = models["bert"]
    assert not model.training
    assert all(type(m) is torch.nn.Linear for m in model.modules() if "Linear" in type(m).__name__)
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, state[key]), key


def test_unknown_backend_and_alias(models, tmp_path):
    model = models["student"][0]
    with pytest.raises(DistilbenchError, match=", ".join(BACKENDS)):
        load_backend(model, "tensorrt")
    backend = load_backend(model, "onnx", work_dir=tmp_path / "out")
    assert backend.name == "onnx-fp32" and (tmp_path / "out" / "model.onnx").is_file()


def test_missing_onnxruntime_is_explained(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(DistilbenchError, match="pip install onnxruntime"):
        load_backend(models["student"][0], "onnx-int8")


@pytest.mark.parametrize("name", ["torch-fp32", "onnx-fp32"])
def test_texts_longer_than_the_encoder_takes_are_cut_at_its_positions(models, built, name, capsys):
    """The tiny BERT has 128 positions while its tokenizer allows 512: every command cuts at 128 instead of
    crashing (evaluate, predict, bench and compare all run backend_logits; serve takes the same token_limit)."""
    model, tokenizer, _ = models["bert"]
    backend = built("bert", name)
    long_text = " ".join(["market"] * 400)
    assert len(tokenizer(long_text)["input_ids"]) > 128 >= backend.max_positions == 128
    logits, _ = backend_logits(backend, tokenizer, [long_text, "short"], batch_size=2)
    cut = tokenizer([long_text], truncation=True, max_length=128, return_tensors="np")
    expected = _reference(
        model, {k: np.asarray(cut[k], dtype=np.int64) for k in backend.input_names}, backend.input_names
    )
    np.testing.assert_allclose(logits[0], expected[0], atol=1e-4)
    from distilbench.runtime import inference

    inference._warned_cap.clear()  # warned once per process
    backend_logits(backend, tokenizer, [long_text], max_length=1000)  # asked for more than the model takes
    assert "texts are cut at 128 tokens" in capsys.readouterr().err


def test_max_positions_of_each_family():
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    from distilbench.runtime.inference import max_positions, token_limit

    assert max_positions(BertConfig(max_position_embeddings=128)) == 128
    assert max_positions(DistilBertConfig()) == 512
    assert max_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # padding offset
    assert max_positions({"encoder": {"model_type": "bert", "max_position_embeddings": 64}}) == 64  # thesis head

    class Tokenizer:
        model_max_length = int(1e30)  # "no limit", as many tokenizers say

    assert token_limit(Tokenizer()) == 512 and token_limit(Tokenizer(), None, 128) == 128
    assert token_limit(Tokenizer(), 64, 128) == 64
