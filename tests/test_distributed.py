"""Distributed training: `distilbench train` under torchrun with 2 CPU processes (gloo) ends as one process does."""

import json
import os
import subprocess
import sys

import pytest

from conftest import shared_file


@pytest.fixture(scope="module")
def dropout_free_bert(tmp_path_factory, minilm_tokenizer):
    """A tiny random BERT without dropout: dropout masks are the one thing two processes draw differently."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    path = tmp_path_factory.mktemp("dropout-free-bert")
    BertModel(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


def train(model_dir, out, processes: int) -> dict:
    """400 rows: 288 for training, 18 global batches of 16 (no short last batch that DDP would pad)."""
    args = [
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(shared_file("news-headlines.csv")),
        "--label-column",
        "category",
        "--max-samples",
        "400",
        "--epochs",
        "2",
        "--train-batch-size",
        "16",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "24",
        "--precision",
        "fp32",
        "--backend",
        "torch-fp32",
        "--no-speed",
        "--no-progress",
        "--out",
        str(out),
    ]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *launcher, "-m", "distilbench", *args], env=env, text=True, capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = done.stdout
    comparison = json.loads((out / "comparison.json").read_text())
    stats = json.loads(next((out / "results").glob("*/training_stats.json")).read_text())
    test = json.loads(next((out / "results").glob("*/test_stats.json")).read_text())
    return {"stdout": stdout, "row": comparison["rows"][0], "epochs": stats["epochs"], "test": test}


def test_two_gloo_processes_match_one_process(tmp_path, dropout_free_bert):
    one = train(dropout_free_bert, tmp_path / "one", 1)
    two = train(dropout_free_bert, tmp_path / "two", 2)
    # One process sees each global batch of 16 whole; two see 8 each and average their gradients. The sums
    # are taken in a different order and each half is padded to its own length, so results agree to float
    # rounding: 1e-4 on losses, and the same predictions.
    assert two["stdout"].count("epoch 1:") == 1  # the second process prints nothing
    for a, b in zip(one["epochs"], two["epochs"]):
        assert a["epoch"] == b["epoch"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)  # averaged over both processes
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4)
        assert b["val_accuracy"] == a["val_accuracy"]  # computed over the whole validation split
    assert two["row"]["best_epoch"] == one["row"]["best_epoch"]
    assert two["test"]["samples"] == one["test"]["samples"] == 80  # the whole test split, not a shard
    assert two["test"]["accuracy"] == one["test"]["accuracy"]
    assert two["test"]["loss"] == pytest.approx(one["test"]["loss"], abs=1e-4)
    assert len(list((tmp_path / "two" / "models").glob("*/epoch-*"))) == 2  # one writer: one set of checkpoints


def test_two_processes_distil_a_student_with_teacher_outputs_computed_once(tmp_path, dropout_free_bert):
    args = [
        "compare",
        "--models",
        f"{dropout_free_bert},student:{dropout_free_bert}",
        "--data",
        str(shared_file("news-headlines.csv")),
        "--label-column",
        "category",
        "--max-samples",
        "400",
        "--epochs",
        "1",
        "--train-batch-size",
        "16",
        "--max-length",
        "24",
        "--precision",
        "fp32",
        "--backend",
        "torch-fp32",
        "--no-speed",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "distilbench",
            *args,
        ],
        env=env,
        text=True,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("computing the teacher's outputs once") == 1
    rows = json.loads((tmp_path / "run" / "comparison.json").read_text())["rows"]
    assert rows[0]["method"] == "fine-tuned on labels" and "distilled from the fine-tuned" in rows[1]["method"]
    assert len(list((tmp_path / "run" / "cache").glob("*.npy"))) == 1
