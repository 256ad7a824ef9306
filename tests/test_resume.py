"""Crashes and collisions: kill -9 and --resume, the run-directory lock, a full disk, atomic results."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from distilbench.config import ExperimentConfig
from distilbench.core.console import DistilbenchError
from distilbench.experiments.compare import compare
from distilbench.runs import lock_run_dir, write_json_atomic

Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def headlines(shared_data) -> Path:
    return shared_data("news-headlines.csv")


def train_args(model_dir: Path, out: Path, data: Path) -> list[str]:
    """A run long enough to be killed in the middle of an epoch: 54 steps per epoch, 2 epochs."""
    return [
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--label-column",
        "category",
        "--max-samples",
        "600",
        "--epochs",
        "2",
        "--train-batch-size",
        "8",
        "--learning-rate",
        "5e-4",
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


def distilbench(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "distilbench", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_kill_9_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path, tiny_bert_dir, headlines):
    """Killed in the middle of epoch 2 (its progress bar past step 5 of 54, epoch 1 saved and marked complete),
    the run resumes after epoch 1 and ends exactly like one that was never interrupted."""
    killed_run, full_run = tmp_path / "killed", tmp_path / "full"
    args = [arg for arg in train_args(tiny_bert_dir, killed_run, headlines) if arg != "--no-progress"]
    process = distilbench(*args)
    seen = []  # the progress bar's (epoch, step, steps), as it arrives on stderr

    def read_bar():
        for chunk in iter(lambda: os.read(process.stderr.fileno(), 1 << 16), b""):
            seen.extend(
                (int(e), int(n), int(total))
                for e, n, total in re.findall(rb"epoch (\d+)/2: +\d+%\|[^|]*\| *(\d+)/(\d+)", chunk)
            )

    reader = threading.Thread(target=read_bar, daemon=True)
    reader.start()
    wait_for(lambda: any(epoch == 2 and step >= 5 for epoch, step, _ in seen), process)  # into epoch 2
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    reader.join(10)
    epoch, step, steps = next((e, n, t) for e, n, t in seen if e == 2 and n >= 5)
    assert steps == 54 and step < steps, seen[-3:]
    # what the kill left: epoch 1 complete (checkpoint, Trainer state, stats); nothing of epoch 2 saved
    model_dir = next((killed_run / "models").iterdir())
    assert sorted(p.name for p in model_dir.glob("epoch-*")) == ["epoch-1"]
    marks = list(model_dir.glob(".trainer/checkpoint-*/distilbench-complete"))
    assert [mark.read_text() for mark in marks] == ["epoch 1\n"]
    assert [row["epoch"] for row in json.loads((model_dir / "epoch_stats.json").read_text())] == [1]
    assert not (killed_run / "comparison.json").exists()
    assert not list((killed_run / "results").glob("*/row.json"))

    resumed = distilbench("train", "--resume", "--out", str(killed_run), "--no-progress")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in out and "after epoch 1 of 2" in out

    uninterrupted = distilbench(*train_args(tiny_bert_dir, full_run, headlines))
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err

    # Same seed, same thread count, fp32: the resumed run restores weights, optimizer, scheduler and RNG
    # state, so CPU results agree to float rounding (tolerance 1e-5 on losses, exact on the rest).
    a, b = (json.loads((run / "comparison.json").read_text())["rows"][0] for run in (killed_run, full_run))
    assert a["best_epoch"] == b["best_epoch"]
    assert a["test"]["accuracy"] == b["test"]["accuracy"]
    stats = [
        json.loads(next((run / "results").glob("*/training_stats.json")).read_text())["epochs"]
        for run in (killed_run, full_run)
    ]
    assert [row["epoch"] for row in stats[0]] == [1, 2]
    for resumed_row, full_row in zip(*stats):
        assert resumed_row["val_loss"] == pytest.approx(full_row["val_loss"], abs=1e-5)
        assert resumed_row["val_accuracy"] == full_row["val_accuracy"]
    test_a, test_b = (
        json.loads(next((run / "results").glob("*/test_stats.json")).read_text()) for run in (killed_run, full_run)
    )
    assert test_a["loss"] == pytest.approx(test_b["loss"], abs=1e-5)
    assert not list(killed_run.glob("models/*/.trainer"))  # the resume state is removed once training ends


def small_config(tmp_path, model_dir, data: Path, **overrides) -> ExperimentConfig:
    values = dict(
        task="multiclass",
        data=str(data),
        label_column="category",
        max_samples=200,
        epochs=1,
        train_batch_size=16,
        max_length=24,
        precision="fp32",
        backend="torch-fp32",
        measure_speed=False,
        models=[str(model_dir)],
        out=str(tmp_path / "run"),
    )
    values.update(overrides)
    return ExperimentConfig(**values).validate()


def test_resume_keeps_finished_models_and_trains_only_the_rest(tmp_path, tiny_bert_dir, headlines, monkeypatch):
    config = small_config(tmp_path, tiny_bert_dir, headlines, models=[str(tiny_bert_dir), f"student:{tiny_bert_dir}"])
    import distilbench.training.finetune as training_module

    real = training_module.train_model
    trained = []

    def crash_on_second(*args, **kwargs):
        trained.append(1)
        if len(trained) == 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(training_module, "train_model", crash_on_second)
    with pytest.raises(RuntimeError):
        compare(config, progress=False)
    assert not (tmp_path / "run" / "comparison.json").exists()

    trained.clear()
    monkeypatch.setattr(training_module, "train_model", lambda *a, **k: trained.append(1) or real(*a, **k))
    rows = compare(config, progress=False, resume=True)
    assert len(trained) == 1  # the finished first model was kept, not retrained
    assert [row["model"] for row in rows] == config.models
    assert (tmp_path / "run" / "comparison.json").is_file()


def test_resume_refuses_changed_settings_and_missing_runs(tmp_path, tiny_bert_dir, headlines, capsys):
    from distilbench.cli.commands import main

    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--resume", "--out", str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert "nothing to resume" in capsys.readouterr().err

    compare(small_config(tmp_path, tiny_bert_dir, headlines), progress=False)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--resume", "--out", str(tmp_path / "run"), "--epochs", "3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "epochs (run: 1, given: 3)" in err and "Traceback" not in err


def test_a_locked_run_directory_refuses_a_second_run(tmp_path, tiny_bert_dir, headlines):
    config = small_config(tmp_path, tiny_bert_dir, headlines)
    (tmp_path / "run").mkdir()
    holder = lock_run_dir(tmp_path / "run")  # another run holds it
    try:
        with pytest.raises(DistilbenchError, match="in use by another distilbench run"):
            compare(config, progress=False)
        with pytest.raises(DistilbenchError, match="in use"):
            compare(config, overwrite=True, progress=False)
    finally:
        holder.close()
    compare(config, progress=False)  # released: the run goes ahead
    assert (tmp_path / "run" / "comparison.json").is_file()


def test_a_full_disk_is_reported_before_training_starts(tmp_path, tiny_bert_dir, headlines, monkeypatch):
    import distilbench.runs as runs

    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DistilbenchError, match="only 0.00 GB are free"):
        compare(small_config(tmp_path, tiny_bert_dir, headlines), progress=False)
    assert not list((tmp_path / "run").glob("models/*/epoch-*"))


def test_the_space_check_counts_the_averaged_checkpoints(tmp_path, tiny_bert_dir, headlines, monkeypatch):
    """With 3 epochs, --average-checkpoints 4 saves two averages (epochs 2-3 and 1-3) beside the three epochs:
    the check asks for their room too, before training starts."""
    import distilbench.experiments.compare as compare_module

    asked = []

    def record(directory, needed, what):
        asked.append(needed)
        raise DistilbenchError("checked")

    monkeypatch.setattr(compare_module, "check_free_space", record)
    for average in (0, 4):
        config = small_config(tmp_path / str(average), tiny_bert_dir, headlines, epochs=3, average_checkpoints=average)
        with pytest.raises(DistilbenchError, match="checked"):
            compare(config, progress=False)
    assert asked[1] / asked[0] == pytest.approx((3 + 2 + 4) / (3 + 4))


def test_disk_errors_end_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import distilbench.experiments.compare as compare_module
    from distilbench.cli.commands import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "data" / "train.csv"))

    monkeypatch.setattr(compare_module, "prepare_data", full)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--data", "builtin:bbc-news", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and "the disk is full while writing" in err and "--resume" in err


def test_an_atomic_write_that_fails_leaves_the_earlier_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"accuracy": 0.9})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        write_json_atomic(path, {"accuracy": 0.1})
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_an_unwritable_output_directory_fails_before_any_work(tmp_path, capsys):
    from distilbench.cli.commands import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--data", "builtin:bbc-news", "--out", str(blocker / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("distilbench: error: cannot write to --out")
