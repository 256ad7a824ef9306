"""The command line: help on every verb, config files and flags, and one clear line per user error."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import shared_file
from distilbench.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize("verb", ["compare", "train", "evaluate"])
def test_every_verb_has_help(capsys, verb):
    code, out, _ = run_cli(capsys, verb, "--help")
    assert code == 0
    assert "--data" in out and "--max-length" in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "distilbench.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("distilbench ")


@pytest.fixture
def headlines_csv(tmp_path):
    frame = pd.DataFrame({"text": [f"headline number {i}" for i in range(40)],
                          "category": ["business", "health"] * 20})
    path = tmp_path / "headlines.csv"
    frame.to_csv(path, index=False)
    return path


def error_case(capsys, tmp_path, *argv) -> str:
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *argv, "--out", str(out), "--no-progress")
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("distilbench: error: "), err
    assert not (out / "comparison.json").exists()
    return lines[0]


def test_missing_file(capsys, tmp_path):
    message = error_case(capsys, tmp_path, "compare", "--data", str(tmp_path / "nope.csv"), "--models", "minilm-l6")
    assert "nope.csv" in message


def test_missing_label_column(capsys, tmp_path, headlines_csv):
    message = error_case(capsys, tmp_path, "compare", "--data", str(headlines_csv), "--models", "minilm-l6")
    assert "'label'" in message and "category" in message and "--label-column" in message


def test_single_class(capsys, tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "x", "x"]}).to_csv(path, index=False)
    message = error_case(capsys, tmp_path, "compare", "--data", str(path), "--models", "minilm-l6")
    assert "at least 2 classes" in message


def test_empty_after_cleaning(capsys, tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text('text,label\n"   ",a\n" ",b\n')
    message = error_case(capsys, tmp_path, "compare", "--data", str(path), "--models", "minilm-l6")
    assert "no rows left" in message


def test_multilabel_values_must_be_binary(capsys, tmp_path):
    path = tmp_path / "ml.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "toxic": [0, 1, 2], "insult": [1, 0, 0]}).to_csv(path, index=False)
    message = error_case(capsys, tmp_path, "compare", "--task", "multilabel", "--data", str(path),
                         "--label-columns", "toxic,insult", "--models", "minilm-l6")
    assert "toxic" in message and "0/1" in message


def test_unknown_model_without_network(capsys, tmp_path, headlines_csv, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error_case(capsys, tmp_path, "compare", "--data", str(headlines_csv), "--label-column", "category",
                         "--models", "no-such-org/no-such-model", "--epochs", "1")
    assert "no-such-org/no-such-model" in message and "Hub" in message


def test_existing_run_directory_is_not_overwritten_silently(capsys, tmp_path, headlines_csv):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    message = error_case(capsys, tmp_path, "compare", "--data", str(headlines_csv), "--label-column", "category",
                         "--models", "minilm-l6")
    assert "--overwrite" in message
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_bad_config_file(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochz: 3\n")
    message = error_case(capsys, tmp_path, "compare", "--config", str(config))
    assert "epochz" in message


def test_config_file_and_flags_combine_and_flags_win(capsys, tmp_path, tiny_bert_dir):
    data = shared_file("news-headlines.csv")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "task": "multiclass", "data": str(data), "label_column": "category", "max_samples": 200,
        "epochs": 5, "models": [str(tiny_bert_dir)], "max_length": 24, "precision": "fp32"}))
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--config", str(config), "--epochs", "1",
                                "--model", f"student:{tiny_bert_dir}", "--head", "thesis", "--out", str(out),
                                "--no-progress")
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["max_samples"] == 200
    assert saved["models"] == [f"student:{tiny_bert_dir}"]
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows] == [f"student:{tiny_bert_dir}"]
    assert "accuracy" in stdout  # the printed table
    assert rows[0]["architecture"]["head"] == "thesis"


def test_evaluate_needs_a_model_directory(capsys, tmp_path, headlines_csv):
    code, _, err = run_cli(capsys, "evaluate", "--model", str(tmp_path / "none"), "--data", str(headlines_csv))
    assert code == 2 and "Traceback" not in err and "no config.json" in err
