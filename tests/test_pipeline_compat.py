"""What distilbench writes with its defaults opens where users expect it to: a checkpoint in plain
`transformers.pipeline` and the Auto classes, an exported bundle in onnxruntime, with no code from distilbench
and without trust_remote_code (issue 36, section 4).

The checks run in a separate Python that never imports distilbench: inside this process distilbench has
registered its own heads with the Auto classes, which would open a custom-code checkpoint without
trust_remote_code and hide the very failure these tests are about.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distilbench.config import HEAD_HELP, load_config
from distilbench.experiments.compare import compare
from distilbench.models.registry import load_classifier, resolve_head
from distilbench.runs import model_slug

# Opens each directory as a user without distilbench would: pipeline and the Auto classes for a checkpoint,
# onnxruntime for an exported bundle. Writes {directory: probabilities per text, or the error} to a JSON file.
OUTSIDE = r"""
import json, sys
import numpy as np
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

answer, texts, directories = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
result = {}
for directory in directories:
    try:
        config = AutoConfig.from_pretrained(directory)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        tokenizer = AutoTokenizer.from_pretrained(directory)
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
        if directory.endswith("onnx"):
            import onnxruntime
            session = onnxruntime.InferenceSession(directory + "/model.onnx", providers=["CPUExecutionProvider"])
            feed = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
            result[directory] = {"onnx_logits": session.run(["logits"], feed)[0].tolist(), "labels": labels}
            continue
        import torch
        model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        with torch.no_grad():
            auto = model(**tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt"))
        classifier = pipeline("text-classification", model=directory, top_k=None, truncation=True, max_length=32)
        scores = [{s["label"]: s["score"] for s in row} for row in classifier(texts)]
        result[directory] = {
            "class": type(model).__name__,
            "auto": auto.logits.softmax(-1).tolist(),
            "pipeline": [[row[label] for label in labels] for row in scores],
            "labels": labels,
        }
    except Exception as exc:
        result[directory] = {"error": f"{type(exc).__name__}: {exc}"}
assert not any(name.startswith("distilbench") for name in sys.modules), "distilbench was imported"
with open(answer, "w") as handle:
    json.dump(result, handle)
"""


def open_outside_distilbench(directories: list[Path], texts: list[str]) -> dict[str, dict]:
    """What a Python without distilbench makes of each directory (see OUTSIDE)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    answer = Path(directories[0]).parent / "outside.json"
    done = subprocess.run(
        [sys.executable, "-c", OUTSIDE, str(answer), json.dumps(texts), *map(str, directories)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(directories[0]).parent,  # not the repository: nothing there on the import path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(answer.read_text())


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def sentence_transformers_like(model_dir: Path, target: Path) -> Path:
    """A copy of a tiny BERT with a sentence-transformers mean-pooling module: what `--head auto` gave the mean
    head (as it gives minilm-l6 and mpnet-base)."""
    import shutil

    shutil.copytree(model_dir, target)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return target


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, learnable_bert_dir, shared_data):
    """compare with distilbench's defaults (no --head) on a sentence-transformers-like teacher and its student;
    only the sizes are small and the backend fixed, so the saved test predictions are torch-fp32's."""
    tmp = tmp_path_factory.mktemp("pipeline-compat")
    teacher = sentence_transformers_like(learnable_bert_dir, tmp / "st-teacher")
    config = load_config(
        None,
        {
            "data": str(shared_data("news-headlines.csv")),
            "label_column": "category",
            "models": [str(teacher), f"student:{teacher}"],
            "max_samples": 200,
            "epochs": 1,
            "max_length": 32,
            "backend": "torch-fp32",
            "measure_speed": False,
            "out": str(tmp / "run"),
        },
    )
    compare(config, progress=False)
    return config, teacher, tmp / "run"


def test_the_default_head_is_the_architectures_own_even_where_auto_picks_the_mean_head(default_run):
    config, teacher, _ = default_run
    assert config.head == "standard"
    assert resolve_head(str(teacher), "auto") == "mean"  # the teacher is one auto gave the mean head
    assert resolve_head("minilm-l6", "auto") == "mean" and resolve_head("minilm-l6", config.head) == "standard"
    assert "trust_remote_code=True" in HEAD_HELP and "within the 95 %% intervals" in HEAD_HELP


def test_default_checkpoints_and_their_bundle_open_without_remote_code(default_run, tmp_path):
    """Each best checkpoint opens in plain transformers (pipeline and the Auto classes), with no code beside
    its weights, and gives the probabilities distilbench saved for the same test texts; so does the teacher's
    exported bundle in plain onnxruntime."""
    pytest.importorskip("onnxruntime")
    from distilbench.runtime.export import export_model

    config, _, run = default_run
    bests = {spec: (run / "models" / model_slug(spec) / "best").resolve() for spec in config.models}
    bundle = tmp_path / "teacher-onnx"
    export_model(bests[config.models[0]], bundle)
    for directory in (*bests.values(), bundle):
        assert not list(directory.glob("*.py"))
        assert "auto_map" not in json.loads((directory / "config.json").read_text())
    saved = {
        spec: pd.read_csv(run / "results" / model_slug(spec) / "test_predictions.csv").head(6) for spec in config.models
    }
    texts = saved[config.models[0]]["text"].tolist()
    outside = open_outside_distilbench([*bests.values(), bundle], texts)
    classes = []
    for spec, best in bests.items():
        opened = outside[str(best)]
        assert "error" not in opened, opened
        assert saved[spec]["text"].tolist() == texts
        ours = saved[spec][[f"prob_{label}" for label in opened["labels"]]].to_numpy()
        np.testing.assert_allclose(opened["pipeline"], ours, atol=1e-4)
        np.testing.assert_allclose(opened["auto"], ours, atol=1e-4)
        labels = [opened["labels"][i] for i in np.argmax(opened["pipeline"], axis=1)]
        assert labels == saved[spec]["predicted"].tolist()
        classes.append(opened["class"])
    assert classes == ["BertForSequenceClassification", "DistilBertForSequenceClassification"]
    opened = outside[str(bundle)]
    assert "error" not in opened, opened
    ours = saved[config.models[0]][[f"prob_{label}" for label in opened["labels"]]].to_numpy()
    np.testing.assert_allclose(softmax(np.asarray(opened["onnx_logits"])), ours, atol=1e-4)


def test_opt_in_heads_need_remote_code_but_their_bundles_do_not(tmp_path, tiny_bert_dir):
    """The cost HEAD_HELP states: plain transformers refuses a checkpoint with one of distilbench's own heads
    unless trust_remote_code=True (which is why they are not the default). Its exported bundle needs no code:
    the graph holds the head, and the bundle's config is its encoder's, with the labels and thresholds."""
    pytest.importorskip("onnxruntime")
    import torch

    from distilbench.runtime.backends import load_exported
    from distilbench.runtime.export import export_model
    from distilbench.runtime.inference import backend_logits, logits_to_probs
    from distilbench.runtime.predict import stored_thresholds

    texts = ["a short text", "another one, a little longer than the first"]
    checkpoints, bundles, expected = {}, {}, {}
    for head in ("mean", "thesis"):
        torch.manual_seed(0)
        model, tokenizer = load_classifier(str(tiny_bert_dir), "multilabel", ["toxic", "insult"], head=head)
        with torch.no_grad():  # logits of order 1, so that the comparisons below mean something
            model.head[-1].weight.mul_(40.0)
        model.config.update({"distilbench": {"thresholds": {"toxic": 0.3, "insult": 0.8}}})
        checkpoints[head], bundles[head] = tmp_path / head, tmp_path / f"{head}-onnx"
        model.save_pretrained(checkpoints[head])
        tokenizer.save_pretrained(checkpoints[head])
        assert list(checkpoints[head].glob("*.py"))  # the head's code travels with the checkpoint
        export_model(checkpoints[head], bundles[head])
        assert not list(bundles[head].glob("*.py"))
        config = json.loads((bundles[head] / "config.json").read_text())
        assert "auto_map" not in config and config["model_type"] == "bert"
        assert config["distilbench"] == {"thresholds": {"toxic": 0.3, "insult": 0.8}, "head": head}
        with torch.no_grad():
            expected[head] = torch.sigmoid(model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits)
        runtime, exported = load_exported(bundles[head], "onnx-fp32")  # distilbench reads it as before
        assert (exported.task, exported.label_names) == ("multilabel", ["toxic", "insult"])
        assert stored_thresholds(exported.config, exported.label_names).tolist() == [0.3, 0.8]
        logits, _ = backend_logits(runtime, exported.tokenizer, texts, max_length=32)
        np.testing.assert_allclose(logits_to_probs("multilabel", logits), expected[head].numpy(), atol=1e-4)
    outside = open_outside_distilbench([*checkpoints.values(), *bundles.values()], texts)
    for head in ("mean", "thesis"):
        assert "trust_remote_code" in outside[str(checkpoints[head])].get("error", ""), outside
        opened = outside[str(bundles[head])]
        assert "error" not in opened and opened["labels"] == ["toxic", "insult"], opened
        probs = 1 / (1 + np.exp(-np.asarray(opened["onnx_logits"])))
        np.testing.assert_allclose(probs, expected[head].numpy(), atol=1e-4)
