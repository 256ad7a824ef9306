"""`distilbench export` and the ONNX cache: graphs built once per checkpoint, exported directories that run in
plain ONNX Runtime and as the model of predict, serve and bench."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from distilbench.cli.commands import main
from distilbench.core.cache import cache_dir, checkpoint_key, exclusive_lock
from distilbench.core.console import DistilbenchError
from distilbench.models.inputs import model_input_names
from distilbench.runtime import export as onnx_export
from distilbench.runtime.backends import load_backend, load_exported, load_model_dir
from distilbench.runtime.predict import stored_thresholds

TEXTS = [
    "stock market fell sharply today",
    "the home team won the match",
    "ok",
    "a longer text about new phones, batteries and screens, so that the batch is padded",
]


def save_checkpoint(encoder_dir: Path, out: Path, task: str, labels: list[str], thresholds: dict | None = None) -> Path:
    """A tiny random classifier saved the way training saves its checkpoints, with a head sharp enough
    that logits are O(1) and tolerances mean something."""
    from distilbench.models.registry import load_classifier

    torch.manual_seed(0)
    model, tokenizer = load_classifier(str(encoder_dir), task, labels)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)
    if thresholds:  # where compare stores the thresholds tuned on validation
        model.config.update({"distilbench": {"thresholds": thresholds}})
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tiny_bert_dir):
    return save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("bert-ckpt"), "multiclass", ["a", "b", "c"])


@pytest.fixture(scope="module")
def distilbert_dir(tmp_path_factory, tiny_distilbert_dir):
    return save_checkpoint(
        tiny_distilbert_dir,
        tmp_path_factory.mktemp("distilbert-ckpt"),
        "multilabel",
        ["toxic", "insult"],
        {"toxic": 0.3, "insult": 0.8},
    )


@pytest.fixture(scope="module")
def exported(bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "bert-onnx"
    info = onnx_export.export_model(bert_dir, out)
    return out, info


def torch_logits(model_dir: Path, texts: list[str]) -> np.ndarray:
    from distilbench.models.registry import load_trained

    model, tokenizer, _, _ = load_trained(model_dir)
    names = model_input_names(model)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**{k: encoded[k] for k in names}).logits.numpy()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as code:
        main(argv)
    return code.value.code, capsys.readouterr().err


def test_the_cache_lives_where_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()
    monkeypatch.delenv("DISTILBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "distilbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "distilbench"


def test_checkpoint_key_follows_config_and_weights(bert_dir, tmp_path):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(bert_dir, copy)
    key = checkpoint_key(copy)
    assert len(key) == 16 and checkpoint_key(copy) == key
    (copy / "tokenizer_config.json").write_text("{}")  # not part of the model's state
    assert checkpoint_key(copy) == key
    weights = copy / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # saved again
    assert checkpoint_key(copy) != key
    key = checkpoint_key(copy)
    config = json.loads((copy / "config.json").read_text())
    config["distilbench"] = {"thresholds": {"a": 0.4}}
    (copy / "config.json").write_text(json.dumps(config))
    assert checkpoint_key(copy) != key
    with pytest.raises(DistilbenchError, match="no readable config.json"):
        checkpoint_key(tmp_path)


def test_a_second_load_reuses_the_cached_graph(bert_dir, monkeypatch):
    from distilbench.models.registry import load_trained

    calls = []
    export = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: calls.append(a[1]) or export(*a, **k))
    model, tokenizer, _, _ = load_trained(bert_dir)
    key = checkpoint_key(bert_dir)
    first = load_backend(model, "onnx-fp32", cache_key=key)
    assert len(calls) == 1 and first.path.is_relative_to(cache_dir() / "onnx" / key)
    mtime = first.path.stat().st_mtime_ns
    second = load_backend(model, "onnx-fp32", cache_key=key)
    int8 = load_backend(model, "onnx-int8", cache_key=key)  # quantizes the cached fp32 graph: no new export
    again = load_backend(model, "onnx-int8", cache_key=key)
    assert len(calls) == 1
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime and again.path == int8.path
    assert not list((cache_dir() / "onnx" / key).glob(".*building*"))  # no temporary build directories left
    batch = {k: np.asarray(v, dtype=np.int64) for k, v in tokenizer(TEXTS, padding=True, return_tensors="np").items()}
    np.testing.assert_allclose(first(batch), torch_logits(bert_dir, TEXTS), atol=1e-4)
    without_key = load_backend(model, "onnx-fp32")  # an in-memory model: built in a work directory, as before
    assert len(calls) == 2 and not without_key.path.is_relative_to(cache_dir())


def test_a_concurrent_builder_that_finishes_first_wins(bert_dir, monkeypatch, tmp_path):
    """Another process renames its entry into place while this one builds: this one drops its copy and uses
    the entry that is there."""
    from distilbench.models.registry import load_trained

    model, _, _, _ = load_trained(bert_dir)
    key = "concurrent-test"
    build = onnx_export.build_onnx

    def build_while_another_finishes(model, names, directory, **options):
        other = tmp_path / "other"
        build(model, names, other)
        (other / "built.json").write_text("{}")
        other.rename(cache_dir() / "onnx" / key / onnx_export.cache_variant(None))
        return build(model, names, directory, **options)

    monkeypatch.setattr(onnx_export, "build_onnx", build_while_another_finishes)
    path = onnx_export.cached_onnx(model, model_input_names(model), key)
    assert path.is_file() and onnx_export.onnx_session(path) is not None
    assert [p.name for p in (cache_dir() / "onnx" / key).iterdir() if not p.name.endswith(".lock")] == [
        onnx_export.cache_variant(None)
    ]


def test_a_second_builder_waits_for_the_first(bert_dir, monkeypatch):
    """While one process builds an entry (holding its lock), another asking for it waits, then uses that
    entry instead of exporting again."""
    import shutil
    import threading

    from distilbench.models.registry import load_trained

    model, _, _, _ = load_trained(bert_dir)
    names = model_input_names(model)
    built = onnx_export.cached_onnx(model, names, checkpoint_key(bert_dir))
    key, variant = "waiting-test", onnx_export.cache_variant(None)
    root = cache_dir() / "onnx" / key
    root.mkdir(parents=True)
    calls, result = [], {}
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: calls.append(a))
    with exclusive_lock(root / f".{variant}.lock"):  # "the first builder"
        waiting = threading.Thread(target=lambda: result.update(path=onnx_export.cached_onnx(model, names, key)))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()  # blocked on the lock
        shutil.copytree(built.parent, root / variant)  # the first builder's entry appears
    waiting.join(30)
    assert result["path"] == root / variant / "model.onnx" and calls == []


@pytest.mark.parametrize(("kind", "fuse"), [("bert", False), ("bert", True), ("distilbert", True)])
def test_exported_graph_equals_pytorch_and_runs_in_plain_onnxruntime(kind, fuse, bert_dir, distilbert_dir, tmp_path):
    import onnxruntime

    source = bert_dir if kind == "bert" else distilbert_dir
    out = tmp_path / "exported"
    info = onnx_export.export_model(source, out, fuse=fuse)
    assert info["check"]["passed"] and info["check"]["max_abs_logit_diff"] < 1e-3
    if fuse:  # ONNX Runtime's optimizer ran: its fused operators replace attention, LayerNorms and GELU
        assert info["fused_operators"].get("Attention") and info["fused_operators"].get("SkipLayerNormalization")
    else:
        assert info["fused_operators"] == {}
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    names = [i.name for i in session.get_inputs()]
    assert names == (
        ["input_ids", "attention_mask", "token_type_ids"] if kind == "bert" else ["input_ids", "attention_mask"]
    )
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="np")
    logits = session.run(["logits"], {k: np.asarray(encoded[k], dtype=np.int64) for k in names})[0]
    np.testing.assert_allclose(logits, torch_logits(source, TEXTS), atol=1e-4)
    saved = json.loads((out / "export.json").read_text())
    assert saved["check"] == info["check"] and saved["backend"] == "onnx-fp32"


def test_the_graph_weights_are_external_data_that_onnx_runtime_maps(exported):
    import onnx

    out, _ = exported
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    external = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and (out / "model.onnx").stat().st_size < (out / "model.onnx.data").stat().st_size
    assert {entry.value for t in external for entry in t.external_data if entry.key == "location"} == {
        "model.onnx.data"
    }
    assert oct((out / "model.onnx.data").stat().st_mode & 0o777) == oct((out / "model.onnx").stat().st_mode & 0o777)


def test_exported_directory_keeps_labels_thresholds_and_task(distilbert_dir, tmp_path):
    out = tmp_path / "ml-int8"
    info = onnx_export.export_model(distilbert_dir, out, quantize="int8")
    assert info["backend"] == "onnx-int8" and info["check"]["passed"]
    backend, model = load_exported(out)
    assert backend.name == "onnx-int8" and model.task == "multilabel" and model.label_names == ["toxic", "insult"]
    assert stored_thresholds(model.config, model.label_names).tolist() == [0.3, 0.8]
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "toxic", "1": "insult"} and config["label2id"] == {"toxic": 0, "insult": 1}
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()


def test_the_bundle_lists_every_file_with_its_checksum(exported):
    out, info = exported
    assert info["bundle_format"] == onnx_export.BUNDLE_FORMAT and info["quantized_on"] is None
    on_disk = {item.name for item in out.iterdir() if item.name != "export.json"}
    assert set(info["files"]) == on_disk and {"model.onnx", "model.onnx.data", "config.json"} <= on_disk
    assert info["files"]["model.onnx.data"]["bytes"] == (out / "model.onnx.data").stat().st_size
    assert json.loads((out / "export.json").read_text())["files"] == info["files"]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:1000]), "truncated"),
        (lambda d: (d / "model.onnx.data").write_bytes((d / "model.onnx.data").read_bytes()[:1000]), "truncated"),
        (lambda d: (d / "tokenizer.json").unlink(), "is missing"),
        (  # same size, other bytes
            lambda d: (d / "tokenizer_config.json").write_bytes((d / "tokenizer_config.json").read_bytes().swapcase()),
            "differs from the file exported",
        ),
    ],
    ids=["truncated-graph", "truncated-weights", "missing-tokenizer", "changed-file"],
)
def test_a_damaged_bundle_is_refused_with_a_clear_message(exported, tmp_path, damage, problem):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(exported[0], copy)
    onnx_export.read_exported(copy)  # intact: loads
    damage(copy)
    with pytest.raises(DistilbenchError, match=f"{problem}.*bundle is damaged"):
        onnx_export.read_exported(copy)


def test_an_int8_bundle_records_the_cpu_it_was_quantized_on(distilbert_dir, tmp_path):
    from distilbench.runtime.machine import cpu_model

    info = onnx_export.export_model(distilbert_dir, tmp_path / "int8", quantize="int8")
    assert info["quantized_on"]["cpu"] == cpu_model() and isinstance(info["quantized_on"]["flags"], list)


def test_a_failed_check_leaves_no_directory(bert_dir, tmp_path, capsys):
    out = tmp_path / "strict"
    code, err = run_cli(
        ["export", "--model", str(bert_dir), "--quantize", "int8", "--tolerance", "0", "--out", str(out)], capsys
    )
    assert code == 2 and "does not match PyTorch" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_errors_are_one_clear_line(bert_dir, exported, tmp_path, capsys):
    cases = [
        (["export", "--model", str(tmp_path), "--out", str(tmp_path / "x")], "not a saved model directory"),
        (["export", "--model", str(bert_dir), "--out", str(exported[0])], "exists already"),
        (["export", "--model", str(exported[0]), "--out", str(tmp_path / "x")], "exported ONNX model already"),
        (["predict", "--model", str(exported[0]), "--backend", "torch-fp32"], "exported ONNX model"),
        (["predict", "--model", str(exported[0]), "--backend", "onnx-int8"], "not onnx-int8"),
    ]
    for argv, message in cases:
        code, err = run_cli(argv, capsys)
        assert code == 2 and err.startswith("distilbench: error:") and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1
    for flag, value in (("--format", "tflite"), ("--quantize", "int4")):  # argparse knows the choices
        code, err = run_cli(["export", "--model", str(bert_dir), flag, value, "--out", str(tmp_path / "x")], capsys)
        assert code == 2 and f"argument {flag}: invalid choice: '{value}'" in err
    assert not (tmp_path / "x").exists()


def test_export_help(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["export", "--help"])
    assert exit_code.value.code == 0
    out = capsys.readouterr().out
    assert "--quantize" in out and "model.onnx" in out


@pytest.mark.parametrize("backend", ["auto", "onnx-fp32"])
def test_predict_on_exported_directory_equals_the_checkpoint(bert_dir, exported, tmp_path, capsys, backend):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    records = {}
    for name, model, use in (("checkpoint", bert_dir, "torch-fp32"), ("exported", exported[0], backend)):
        out = tmp_path / f"{name}.jsonl"
        code, err = run_cli(
            [
                "predict",
                "--model",
                str(model),
                "--input",
                str(source),
                "--output",
                str(out),
                "--backend",
                use,
                "--no-progress",
            ],
            capsys,
        )
        assert code == 0, err
        records[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in records["exported"]] == [r["label"] for r in records["checkpoint"]]
    for got, want in zip(records["exported"], records["checkpoint"]):
        np.testing.assert_allclose(list(got["probabilities"].values()), list(want["probabilities"].values()), atol=1e-5)


def test_serve_and_bench_take_an_exported_directory(exported, bert_dir):
    from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench
    from distilbench.serving.app import Classifier

    out, info = exported
    classifier = Classifier(out)
    assert classifier.backend_name == "onnx-fp32" and classifier.architecture["model_type"] == "bert"
    reference = Classifier(bert_dir, backend="torch-fp32")
    got, want = classifier.predict(TEXTS), reference.predict(TEXTS)
    assert [r["label"] for r in got] == [r["label"] for r in want]

    report = run_bench(
        [str(out)],
        ["onnx-fp32"],
        source=BenchTexts(texts=TEXTS),
        options=BenchOptions(samples=8, repeats=1, warmup=0, latency_samples=2, memory=False, metric=False),
        progress=False,
        show=False,
    )
    (row,) = report["results"]
    assert row["backend"] == "onnx-fp32" and row["params"]["total"] == info["params"]["total"] > 0
    with pytest.raises(DistilbenchError, match="exported ONNX model"):
        run_bench(
            [str(out)],
            ["torch-fp32"],
            source=BenchTexts(texts=TEXTS),
            options=BenchOptions(samples=8, repeats=1, memory=False),
            progress=False,
            show=False,
        )


def test_unknown_model_types_keep_the_plain_graph(tmp_path, caplog):
    from transformers import GPT2Config

    assert onnx_export.optimizer_settings(GPT2Config()) is None
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(b"not really a graph")
    with caplog.at_level("INFO", logger="distilbench.runtime.export"):
        assert onnx_export.optimize_onnx(plain, tmp_path / "out.onnx", GPT2Config(), ["input_ids"]) == {}
    assert (tmp_path / "out.onnx").read_bytes() == plain.read_bytes()
    assert "does not know model type 'gpt2'" in caplog.text


def test_load_model_dir_opens_both_kinds(bert_dir, exported):
    checkpoint = load_model_dir(bert_dir, "onnx-fp32")
    onnx_dir = load_model_dir(exported[0], "auto")
    assert checkpoint.model is not None and onnx_dir.model is None
    assert checkpoint.label_names == onnx_dir.label_names == ["a", "b", "c"]
    batch = {
        k: np.asarray(v, dtype=np.int64)
        for k, v in onnx_dir.tokenizer(TEXTS, padding=True, return_tensors="np").items()
    }
    np.testing.assert_allclose(onnx_dir.backend(batch), checkpoint.backend(batch), atol=1e-5)
