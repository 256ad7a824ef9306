"""An exported bundle runs without torch and transformers (issue 39 §1): `distilbench predict`, the Python API's
`load(bundle).predict(texts)` and `serve` import neither, the tokenizer read from tokenizer.json gives the ids
of the checkpoint's transformers tokenizer, and the predictions are the checkpoint's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distilbench.runtime.tokenizer import BundleTokenizer

TEXTS = [
    "stock market fell sharply today",
    "the home team won the match",
    "ok",
    "",
    "   ",
    "a longer text about new phones, batteries and screens, so that the batch is padded " * 3,
    "word " * 300,  # past every limit: truncated
    "Ünïcödé façade — naïve café, 東京で雨が降っています, Москва, القاهرة, 🙂 emoji",
    "Der schnelle braune Fuchs springt über den faulen Hund. El niño comió paella.",
    "line one\nline two\ttabbed",
]

# runs `code` in a fresh interpreter, then says which of the watched heavy modules it imported
GUARD = textwrap.dedent(
    """
    import atexit, json, os, sys
    def _report():
        heavy = sorted(name for name in os.environ["IMPORT_WATCH"].split(",") if name in sys.modules)
        with open(os.environ["IMPORT_REPORT"], "w") as handle:
            json.dump(heavy, handle)
    atexit.register(_report)
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_bert_dir):
    from test_onnx_export import save_checkpoint

    return save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("bert-ckpt"), "multiclass", ["a", "b", "c"])


@pytest.fixture(scope="module")
def multilabel_checkpoint(tmp_path_factory, tiny_distilbert_dir):
    from test_onnx_export import save_checkpoint

    return save_checkpoint(
        tiny_distilbert_dir,
        tmp_path_factory.mktemp("distilbert-ckpt"),
        "multilabel",
        ["toxic", "insult"],
        {"toxic": 0.3, "insult": 0.8},
    )


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    from distilbench.runtime.export import export_model

    out = tmp_path_factory.mktemp("bundles") / "bert"
    export_model(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def multilabel_bundle(multilabel_checkpoint, tmp_path_factory):
    from distilbench.runtime.export import export_model

    out = tmp_path_factory.mktemp("bundles") / "distilbert"
    export_model(multilabel_checkpoint, out)
    return out


def torch_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The checkpoint's probabilities in torch-fp32, through the same loop."""
    from distilbench.runtime.classifier import load

    return load(model_dir, backend="torch-fp32").predict_proba(texts)


def run_without_torch(
    code: str, tmp_path: Path, *args: str, watch: tuple[str, ...] = ("torch", "transformers"), stdin: str | None = None
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `code` (Python, argv = args) in a fresh interpreter; returns the process and the heavy modules of
    `watch` (torch, transformers) it had imported when it exited."""
    report = tmp_path / "imported.json"
    script = tmp_path / "run.py"
    script.write_text(GUARD + textwrap.dedent(code))
    env = {**os.environ, "IMPORT_REPORT": str(report), "IMPORT_WATCH": ",".join(watch), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), *args]
    process = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=300)
    assert process.returncode == 0, process.stderr
    return process, json.loads(report.read_text())


def assert_same_encoding(ours, theirs) -> None:
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert (name in ours) == (name in theirs), name
        if name in theirs:
            assert [list(row) for row in ours[name]] == [list(row) for row in theirs[name]], name


@pytest.mark.parametrize("max_length", [8, 32, 512])
def test_bundle_tokenizer_gives_the_transformers_ids(bundle, max_length) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(bundle)
    ours = BundleTokenizer(bundle)
    kwargs = {"truncation": True, "max_length": max_length, "padding": False}
    for with_types in (True, False):
        expected = reference(TEXTS, return_token_type_ids=with_types, **kwargs)
        encoded = ours(TEXTS, return_token_type_ids=with_types, **kwargs)
        assert_same_encoding(encoded, expected)
        assert [bool(e.overflowing) for e in encoded.encodings] == [bool(e.overflowing) for e in expected.encodings]
    assert ours.pad_token_id == reference.pad_token_id
    assert ours.padding_side == reference.padding_side
    assert ours.model_max_length == reference.model_max_length
    assert ours.model_input_names == list(reference.model_input_names)


@pytest.fixture(scope="module")
def roberta_tokenizer_dir(tmp_path_factory) -> Path:
    """A RoBERTa-style tokenizer (byte-level BPE, <s> ... </s>, pad id 1, no token types), trained on the texts
    here and saved by transformers as a checkpoint's would be: no such tokenizer ships with the tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(TEXTS * 5, trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=64,
    )
    path = tmp_path_factory.mktemp("roberta-tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("max_length", [6, 64])
def test_bundle_tokenizer_gives_the_ids_of_a_roberta_style_tokenizer(roberta_tokenizer_dir, max_length) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    ours = BundleTokenizer(roberta_tokenizer_dir)
    expected = reference(TEXTS, truncation=True, max_length=max_length, padding=False)
    encoded = ours(TEXTS, truncation=True, max_length=max_length, padding=False)
    assert_same_encoding(encoded, expected)
    assert "token_type_ids" not in encoded
    assert ours.model_input_names == list(reference.model_input_names) == ["input_ids", "attention_mask"]
    assert ours.pad_token_id == reference.pad_token_id == 1 and ours.model_max_length == 64


def test_bundle_tokenizer_batches_like_transformers(bundle) -> None:
    """The one inference loop pads and sorts the bundle tokenizer's ids as it does the transformers one's."""
    from transformers import AutoTokenizer

    from distilbench.runtime.batching import padded_batches

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ours = list(padded_batches(BundleTokenizer(bundle), TEXTS, 4, 64, names))
    theirs = list(padded_batches(AutoTokenizer.from_pretrained(bundle), TEXTS, 4, 64, names))
    assert len(ours) == len(theirs)
    for (index, batch), (ref_index, ref_batch) in zip(ours, theirs):
        assert list(index) == list(ref_index)
        for name in names:
            np.testing.assert_array_equal(batch[name], ref_batch[name])


def test_batches_padded_to_a_multiple_give_the_same_logits(bundle) -> None:
    """A backend's pad_multiple (OpenVINO's 4: fewer shapes) pads each batch to a multiple of tokens, never past
    the encoder's positions; the extra padding is masked, so every text's logits stay the same."""
    from distilbench.runtime.batching import backend_logits, padded_batches
    from distilbench.runtime.onnx_backend import load_exported

    names = ["input_ids", "attention_mask", "token_type_ids"]
    tokenizer = BundleTokenizer(bundle)
    plain = list(padded_batches(tokenizer, TEXTS, 4, 64, names))
    padded = list(padded_batches(tokenizer, TEXTS, 4, 64, names, multiple=8))
    for (index, batch), (same_index, wide) in zip(plain, padded, strict=True):
        width = batch["input_ids"].shape[1]
        assert list(index) == list(same_index) and wide["input_ids"].shape[1] == -(-width // 8) * 8
        assert (wide["attention_mask"][:, width:] == 0).all()
        np.testing.assert_array_equal(wide["input_ids"][:, :width], batch["input_ids"])
    capped = list(padded_batches(tokenizer, TEXTS, 4, 64, names, positions=9, multiple=8))
    assert max(batch["input_ids"].shape[1] for _, batch in capped) <= 9  # 16 would pass the encoder's positions
    runtime, _ = load_exported(bundle, "onnx-fp32")
    reference, _ = backend_logits(runtime, tokenizer, TEXTS, batch_size=4)
    runtime.pad_multiple = 8
    np.testing.assert_allclose(backend_logits(runtime, tokenizer, TEXTS, batch_size=4)[0], reference, atol=1e-5)


def test_bundle_tokenizer_pads_like_transformers(bundle) -> None:
    """Called as a transformers tokenizer often is (padding=True, return_tensors="np"): the same arrays."""
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(bundle)(TEXTS, padding=True, truncation=True, return_tensors="np")
    encoded = BundleTokenizer(bundle)(TEXTS, padding=True, truncation=True, return_tensors="np")
    assert set(encoded) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(encoded[name], expected[name])


def test_bundle_tokenizer_reads_the_padding_side_and_pad_token(bundle, tmp_path) -> None:
    """Left padding and another pad token in tokenizer_config.json are what the loop pads with."""
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    config_path = copy / "tokenizer_config.json"
    settings = json.loads(config_path.read_text())
    settings.update({"padding_side": "left", "pad_token": "[UNK]", "model_max_length": 16})
    config_path.write_text(json.dumps(settings))
    tokenizer = BundleTokenizer(copy)
    assert tokenizer.padding_side == "left" and tokenizer.model_max_length == 16
    assert tokenizer.pad_token_id == tokenizer._tokenizer.token_to_id("[UNK]")


def test_python_api_on_a_bundle_imports_no_torch(bundle, checkpoint, tmp_path) -> None:
    code = """
    import json, sys
    import distilbench as db
    classifier = db.load(sys.argv[1])
    texts = json.loads(sys.argv[2])
    print(json.dumps({"labels": classifier.predict(texts), "probs": classifier.predict_proba(texts).tolist()}))
    """
    process, heavy = run_without_torch(code, tmp_path, str(bundle), json.dumps(TEXTS))
    assert heavy == []
    result = json.loads(process.stdout.strip().splitlines()[-1])
    expected = torch_probabilities(checkpoint, TEXTS)
    np.testing.assert_allclose(np.array(result["probs"]), expected, atol=1e-4)
    assert result["labels"] == [["a", "b", "c"][i] for i in expected.argmax(axis=1)]


def test_cli_predict_on_a_bundle_imports_no_torch(bundle, checkpoint, tmp_path) -> None:
    texts = [text.replace("\n", " ") for text in TEXTS if text.strip()]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    code = """
    import sys
    from distilbench.cli import main
    main(["predict", "--model", sys.argv[1], "--input", sys.argv[2], "--output", sys.argv[3]])
    """
    # a JSON-lines file out needs no pyarrow (the [parquet] extra): the runtime install writes it
    watch = ("torch", "transformers", "sklearn", "scipy", "pyarrow")
    _, heavy = run_without_torch(code, tmp_path, str(bundle), str(source), str(out), watch=watch)
    assert heavy == []
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(len(texts)))
    probs = np.array([[r["probabilities"][name] for name in ("a", "b", "c")] for r in records])
    np.testing.assert_allclose(probs, torch_probabilities(checkpoint, texts), atol=1e-4)


def test_cli_predict_from_stdin_loads_only_the_runtime(bundle, checkpoint, tmp_path) -> None:
    """A bundle's cold start (one text on stdin, JSON lines out) loads none of the libraries the base install
    leaves out (torch, transformers, scikit-learn, scipy, pyarrow) nor pandas (a table reader it does not need
    here, 0.2-0.4 s of the start) nor huggingface_hub (50 ms, for progress bars it would switch off), nor tqdm
    and PyYAML (35 ms, for a progress bar it does not show and a config it does not read): `pip install
    distilbench` alone runs it, and runs it fast."""
    code = """
    import sys
    from distilbench.cli import main
    main(["predict", "--model", sys.argv[1], "--input", "-", "--no-progress"])
    """
    watch = ("torch", "transformers", "sklearn", "scipy", "pyarrow", "pandas", "huggingface_hub", "tqdm", "yaml")
    text = "stock market fell sharply today"
    process, heavy = run_without_torch(code, tmp_path, str(bundle), watch=watch, stdin=text + "\n")
    assert heavy == []
    record = json.loads(process.stdout.strip().splitlines()[-1])
    probs = np.array([[record["probabilities"][name] for name in ("a", "b", "c")]])
    np.testing.assert_allclose(probs, torch_probabilities(checkpoint, [text]), atol=1e-4)


def test_multilabel_bundle_keeps_its_thresholds_without_torch(multilabel_bundle, multilabel_checkpoint, tmp_path):
    code = """
    import json, sys
    import distilbench as db
    classifier = db.load(sys.argv[1])
    texts = json.loads(sys.argv[2])
    print(json.dumps({"labels": classifier.predict(texts), "probs": classifier.predict_proba(texts).tolist()}))
    """
    process, heavy = run_without_torch(code, tmp_path, str(multilabel_bundle), json.dumps(TEXTS))
    assert heavy == []
    result = json.loads(process.stdout.strip().splitlines()[-1])
    expected = torch_probabilities(multilabel_checkpoint, TEXTS)
    np.testing.assert_allclose(np.array(result["probs"]), expected, atol=1e-4)
    thresholds = {"toxic": 0.3, "insult": 0.8}
    assert result["labels"] == [
        [name for name, p in zip(("toxic", "insult"), row) if p >= thresholds[name]] for row in expected
    ]


def test_serve_on_a_bundle_imports_no_torch(bundle, checkpoint, tmp_path) -> None:
    code = """
    import json, sys
    from fastapi.testclient import TestClient
    from distilbench.serving.app import create_app
    with TestClient(create_app(sys.argv[1], threads=1)) as client:
        answer = client.post("/predict", json={"texts": json.loads(sys.argv[2])})
        metadata = client.get("/metadata").json()
    print(json.dumps({"status": answer.status_code, "body": answer.json(), "metadata": metadata}))
    """
    texts = ["stock market fell sharply today", "ok", "Ünïcödé café 東京"]
    process, heavy = run_without_torch(code, tmp_path, str(bundle), json.dumps(texts))
    assert heavy == []
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, result["body"]
    expected = torch_probabilities(checkpoint, texts)
    predictions = result["body"]["predictions"]
    probs = np.array([[p["probabilities"][name] for name in ("a", "b", "c")] for p in predictions])
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_evaluate_on_a_bundle_imports_no_torch(bundle, checkpoint, tmp_path) -> None:
    """`distilbench evaluate` on a bundle: no torch, and the checkpoint's metrics (torch-fp32) on the same data."""
    from distilbench import api

    texts = [text.replace("\n", " ") for text in TEXTS if text.strip()] * 3
    data = tmp_path / "held.csv"
    labels = [["a", "b", "c"][i % 3] for i in range(len(texts))]
    data.write_text("text,label\n" + "".join(f'"{t.replace(chr(34), "")}",{y}\n' for t, y in zip(texts, labels)))
    out = tmp_path / "metrics.json"
    code = """
    import sys
    from distilbench.cli import main
    main(["evaluate", "--model", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3], "--no-progress"])
    """
    _, heavy = run_without_torch(code, tmp_path, str(bundle), str(data), str(out))
    assert heavy == []
    ours = json.loads(out.read_text())
    theirs = api.evaluate(checkpoint, str(data), backend="torch-fp32", progress=False)
    assert ours["backend"] == "onnx-fp32" and ours["samples"] == theirs["samples"] == len(texts)
    for metric in ("accuracy", "f1_macro"):
        assert ours[metric] == pytest.approx(theirs[metric], abs=1e-9), metric
    assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-4)
    assert set(ours["intervals"]) == set(theirs["intervals"])


def test_evaluate_on_a_bundle_refuses_check_fp32(bundle, tmp_path) -> None:
    from distilbench import api
    from distilbench.core.console import DistilbenchError

    data = tmp_path / "held.csv"
    data.write_text("text,label\nstock market fell,a\nthe team won,b\n")
    with pytest.raises(DistilbenchError, match="checkpoint it (was exported|came) from"):
        api.evaluate(bundle, str(data), check_fp32=True, progress=False)


def test_numpy_loss_is_the_training_loss() -> None:
    import torch

    from distilbench.runtime.batching import loss_from_logits

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (12, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 12)
    cross_entropy = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels))
    assert loss_from_logits("multiclass", logits, labels) == pytest.approx(float(cross_entropy))
    targets = rng.integers(0, 2, (12, 3)).astype(np.float32)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(targets))
    assert loss_from_logits("multilabel", logits, targets) == pytest.approx(float(bce))
