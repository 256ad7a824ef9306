"""The command line: help on every verb, config files and flags, and one clear line per user error."""

import argparse
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import shared_file
from distilbench.cli.commands import main
from distilbench.runtime.auto import ChoiceSettings
from distilbench.runtime.options import InferenceOptions
from distilbench.runtime.predict import ChunkOptions


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


VERBS = [
    "compare",
    "train",
    "distill",
    "distill-general",
    "evaluate",
    "predict",
    "serve",
    "report",
    "bench",
    "export",
    "tune",
    "cascade",
]


def test_the_verbs_are_the_documented_ones():
    from distilbench.cli.commands import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(verbs) == sorted(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(capsys, verb):
    code, out, _ = run_cli(capsys, verb, "--help")
    assert code == 0
    assert out.startswith(f"usage: distilbench {verb}") and "--help" in out
    if verb in ("compare", "train", "distill", "evaluate", "tune"):
        assert "--data" in out and "--max-length" in out and "--label-columns" in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "distilbench", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("distilbench ")


def test_python_dash_m_distilbench(tmp_path):
    """`python -m distilbench` is the command itself: output, and the exit code of an error, as the script."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    version = subprocess.run(
        [sys.executable, "-m", "distilbench", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert version.returncode == 0 and version.stdout.startswith("distilbench ")
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilbench",
            "evaluate",
            "--model",
            str(tmp_path / "none"),
            "--data",
            str(tmp_path / "none.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("distilbench: error: ")
    usage = subprocess.run([sys.executable, "-m", "distilbench", "evaluate"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "--model" in usage.stderr


# --------------------------------------------------------------------------- every verb's flags, as parsed


class Called(Exception):
    """Raised by a stand-in for a command's function, carrying what the CLI passed to it."""


def _capture(monkeypatch, module: str, name: str) -> list:
    """Replace module.name (what distilbench.api hands the CLI's arguments to) by a stand-in with its signature
    that records its calls; a run-writing verb's API then re-opens no run (api.open_run stands in too)."""
    import functools
    import importlib

    calls = []
    original = getattr(importlib.import_module(module), name)

    @functools.wraps(original)
    def stand_in(*args, **kwargs):
        calls.append((args, kwargs))
        return {} if name != "report" else ("r.html", "r.md")

    monkeypatch.setattr(f"{module}.{name}", stand_in)
    monkeypatch.setattr("distilbench.api.open_run", lambda path: None)
    return calls


TOXIC_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@pytest.mark.parametrize("verb", ["compare", "train"])
def test_run_verbs_pass_every_flag_as_a_setting(capsys, monkeypatch, tmp_path, verb):
    calls = _capture(monkeypatch, "distilbench.experiments.compare", "compare")
    model_flag = ["--models", "minilm-l6, student:minilm-l6"] if verb == "compare" else ["--model", "minilm-l6"]
    if verb == "compare":  # train has no teacher in its run to distil from
        model_flag.append("--no-distill")
    code, _, err = run_cli(
        capsys,
        verb,
        *model_flag,
        "--task",
        "multilabel",
        "--data",
        "d.csv",
        "--label-columns",
        ",".join(TOXIC_LABELS),
        "--val-data",
        "v.csv",
        "--test-data",
        "t.csv",
        "--max-samples",
        "9",
        "--max-chars",
        "99",
        "--epochs",
        "3",
        "--head",
        "thesis",
        "--head-init",
        "random",
        "--learning-rate",
        "1e-4",
        "--threshold-metric",
        "f1",
        "--no-speed",
        "--keep-checkpoints",
        "best",
        "--max-length",
        "16",
        "--seed",
        "7",
        "--out",
        "o",
        "--overwrite",
        "--no-progress",
    )
    assert code == 0, err
    (config,), kwargs = calls[0]
    assert config.label_columns == TOXIC_LABELS
    assert config.models == (["minilm-l6", "student:minilm-l6"] if verb == "compare" else ["minilm-l6"])
    assert (config.task, config.data, config.val_data, config.test_data) == ("multilabel", "d.csv", "v.csv", "t.csv")
    assert (config.max_samples, config.max_chars, config.epochs, config.head, config.learning_rate) == (
        9,
        99,
        3,
        "thesis",
        1e-4,
    )
    assert config.head_init == "random"  # the multilabel default is the probe
    assert (config.threshold_metric, config.distill, config.measure_speed, config.keep_checkpoints) == (
        "f1",
        verb == "train",
        False,
        "best",
    )
    assert (config.max_length, config.seed, config.out) == (16, 7, "o")
    assert kwargs == {"overwrite": True, "progress": False, "resume": False}


def test_distill_passes_its_flags(capsys, monkeypatch):
    calls = _capture(monkeypatch, "distilbench.experiments.compare", "distill")
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        "T",
        "--student",
        "student:T",
        "--data",
        "d.csv",
        "--label-columns",
        "a,b",
        "--alpha",
        "0.3",
        "--temperature",
        "4",
        "--out",
        "o",
    )
    assert code == 0, err
    (config, teacher, student), kwargs = calls[0]
    assert (teacher, student, config.label_columns, config.alpha, config.temperature) == (
        "T",
        "student:T",
        ["a", "b"],
        0.3,
        4.0,
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--label-columns", ",".join(TOXIC_LABELS)], {"label_columns": TOXIC_LABELS}),
        (["--label-columns", " toxic , insult ,"], {"label_columns": ["toxic", "insult"]}),
        (["--label-column", "tags", "--label-separator", "|"], {"label_column": "tags", "label_separator": "|"}),
        (
            ["--text-column", "body", "--max-chars", "50", "--batch-size", "8", "--backend", "torch-fp32"],
            {"text_column": "body", "max_chars": 50, "eval_batch_size": 8, "backend": "torch-fp32"},
        ),
    ],
)
def test_evaluate_passes_its_flags(capsys, monkeypatch, flags, expected):
    """evaluate took --label-columns as a string, then as a list of its characters."""
    calls = _capture(monkeypatch, "distilbench.experiments.compare", "evaluate")
    code, _, err = run_cli(capsys, "evaluate", "--model", "M", "--data", "d.csv", "--output", "m.json", *flags)
    assert code == 0, err
    (model, source, config, out, *_), _ = calls[0]
    assert (model, source, out) == ("M", "d.csv", "m.json")
    assert {key: getattr(config, key) for key in expected} == expected


def test_distill_general_passes_its_flags(capsys, monkeypatch, tmp_path):
    calls = _capture(monkeypatch, "distilbench.training.distillation", "distill_general")
    texts = tmp_path / "t.csv"
    pd.DataFrame({"body": ["one  text", "", "two"]}).to_csv(texts, index=False)
    code, _, err = run_cli(
        capsys,
        "distill-general",
        "--teacher",
        "T",
        "--student",
        "student:T",
        "--data",
        str(texts),
        "--text-column",
        "body",
        "--out",
        "o",
        "--epochs",
        "2",
        "--train-batch-size",
        "4",
        "--alpha-mse",
        "0.5",
        "--seed",
        "3",
        "--no-progress",
    )
    assert code == 0, err
    (teacher, student, read, out, options), kwargs = calls[0]
    assert (teacher, student, read, out) == ("T", "student:T", ["one text", "two"], "o")
    assert (options.epochs, options.batch_size, options.alpha_mse, options.seed, kwargs["progress"]) == (
        2,
        4,
        0.5,
        3,
        False,
    )


def test_predict_passes_its_flags(capsys, monkeypatch):
    calls = _capture(monkeypatch, "distilbench.runtime.predict", "predict")
    code, _, err = run_cli(
        capsys,
        "predict",
        "--model",
        "M",
        "--input",
        "i.csv",
        "--output",
        "o.jsonl",
        "--text-column",
        "body",
        "--backend",
        "onnx-int8",
        "--batch-size",
        "8",
        "--max-length",
        "64",
        "--chunk-rows",
        "100",
        "--workers",
        "2",
        "--resume",
        "--no-progress",
        "--min-agreement",
        "0.95",
        "--max-metric-drop",
        "1",
        "--recalibrate",
    )
    assert code == 0, err
    (model, source, output), kwargs = calls[0]
    assert (model, source, output) == ("M", "i.csv", "o.jsonl")
    assert kwargs == {
        "inference": InferenceOptions(
            backend="onnx-int8",
            batch_size=8,
            max_length=64,
            choice=ChoiceSettings(min_agreement=0.95, max_metric_drop=1.0, recalibrate=True),
        ),
        "chunks": ChunkOptions(text_column="body", chunk_rows=100, workers=2, resume=True),
        "progress": False,
    }


def test_serve_passes_its_flags(capsys, monkeypatch):
    calls = _capture(monkeypatch, "distilbench.serving.app", "serve")
    code, _, err = run_cli(
        capsys,
        "serve",
        "--model",
        "M",
        "--port",
        "0",
        "--max-batch-size",
        "8",
        "--max-texts",
        "4",
        "--on-long-text",
        "reject",
        "--max-pending",
        "9",
        "--threads",
        "1",
    )
    assert code == 0, err
    (model,), kwargs = calls[0]
    limits = kwargs["limits"]
    assert model == "M" and kwargs["port"] == 0 and kwargs["threads"] == 1
    assert (limits.max_batch_size, limits.max_texts, limits.on_long_text, limits.max_pending) == (8, 4, "reject", 9)
    assert kwargs["choice"] == ChoiceSettings()  # the guard's defaults


def test_report_passes_its_run_directory(capsys, monkeypatch):
    calls = _capture(monkeypatch, "distilbench.api", "report")
    code, out, err = run_cli(capsys, "report", "--run", "runs/x")
    assert code == 0, err
    assert calls[0] == ((), {"run": "runs/x"}) and "r.html" in out


def test_bench_passes_its_flags(capsys, monkeypatch):
    calls = _capture(monkeypatch, "distilbench.benchmarking.bench", "run_bench")
    code, _, err = run_cli(
        capsys,
        "bench",
        "--models",
        "A,B",
        "--backends",
        "torch-fp32, onnx-int8",
        "--data",
        "d.csv",
        "--label-columns",
        "toxic,insult",
        "--samples",
        "16",
        "--repeats",
        "2",
        "--no-memory",
    )
    assert code == 0, err
    (models, backends), kwargs = calls[0]
    assert (models, backends) == (["A", "B"], ["torch-fp32", "onnx-int8"])
    assert kwargs["source"].label_columns == ["toxic", "insult"] and kwargs["source"].data == "d.csv"
    assert kwargs["options"].samples == 16 and kwargs["options"].repeats == 2 and kwargs["options"].memory is False
    code, _, err = run_cli(capsys, "bench", "--models", "A")
    # no --backends: None, the candidates of auto on this machine (run_bench asks the machine probe)
    assert code == 0 and calls[1][0][1] is None and calls[1][1]["source"].label_columns is None
    code, _, err = run_cli(capsys, "bench", "--models", "A", "--min-agreement", "1.5")
    assert code == 2 and "--min-agreement must be between 0 and 1" in err


# --------------------------------------------------------------------------- evaluate on multilabel data, for real


@pytest.fixture(scope="module")
def multilabel_checkpoint(tmp_path_factory, tiny_bert_dir):
    """An (untrained) multilabel classifier over the toxic labels, saved as distilbench saves its checkpoints."""
    from distilbench.models.registry import load_classifier

    model, tokenizer = load_classifier(str(tiny_bert_dir), "multilabel", TOXIC_LABELS)
    path = tmp_path_factory.mktemp("ml-checkpoint")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_evaluate_scores_multilabel_data_from_the_cli(capsys, tmp_path, multilabel_checkpoint):
    toxic = pd.read_csv(shared_file("toxic-comments.csv"), nrows=60)
    data = tmp_path / "toxic.csv"
    toxic.to_csv(data, index=False)
    out = tmp_path / "metrics.json"
    code, stdout, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(multilabel_checkpoint),
        "--data",
        str(data),
        "--label-columns",
        ",".join(TOXIC_LABELS),
        "--backend",
        "torch-fp32",
        "--max-length",
        "16",
        "--output",
        str(out),
        "--no-progress",
    )
    assert code == 0, err
    metrics = json.loads(out.read_text())
    assert metrics["task"] == "multilabel" and metrics["samples"] == 60 and 0 <= metrics["hamming_score"] <= 1
    assert "hamming_score" in stdout
    # the labels found by name, without the flag; and a list column of label names, the same scores
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(multilabel_checkpoint),
        "--data",
        str(data),
        "--backend",
        "torch-fp32",
        "--max-length",
        "16",
        "--output",
        str(tmp_path / "by-name.json"),
        "--no-progress",
    )
    assert code == 0, err
    lists = tmp_path / "lists.jsonl"
    pd.DataFrame(
        {"text": toxic["text"], "labels": [[n for n in TOXIC_LABELS if row[n]] for _, row in toxic.iterrows()]}
    ).to_json(lists, orient="records", lines=True)
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(multilabel_checkpoint),
        "--data",
        str(lists),
        "--backend",
        "torch-fp32",
        "--max-length",
        "16",
        "--output",
        str(tmp_path / "lists.json"),
        "--no-progress",
    )
    assert code == 0, err
    for other in ("by-name.json", "lists.json"):
        assert json.loads((tmp_path / other).read_text())["hamming_score"] == metrics["hamming_score"]


def test_evaluate_refuses_labels_the_model_does_not_know(capsys, tmp_path, multilabel_checkpoint):
    lists = tmp_path / "lists.jsonl"
    lists.write_text('{"text": "a", "labels": ["toxic", "spam"]}\n{"text": "b", "labels": []}\n')
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(multilabel_checkpoint),
        "--data",
        str(lists),
        "--output",
        str(tmp_path / "m.json"),
        "--no-progress",
    )
    assert code == 2 and err.count("\n") == 1 and "labels not in the training data: 'spam'" in err
    assert not (tmp_path / "m.json").exists()
    columns = tmp_path / "two.csv"
    columns.write_text("text,toxic,insult\na,1,0\n")
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(multilabel_checkpoint),
        "--data",
        str(columns),
        "--label-columns",
        "toxic,insult",
        "--no-progress",
    )
    assert code == 2 and "not the training labels (missing 'severe_toxic'" in err


@pytest.fixture
def headlines_csv(tmp_path):
    frame = pd.DataFrame({"text": [f"headline number {i}" for i in range(40)], "category": ["business", "health"] * 20})
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
    message = error_case(
        capsys,
        tmp_path,
        "compare",
        "--task",
        "multilabel",
        "--data",
        str(path),
        "--label-columns",
        "toxic,insult",
        "--models",
        "minilm-l6",
    )
    assert "toxic" in message and "0/1" in message


def test_unknown_model_without_network(capsys, tmp_path, headlines_csv, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error_case(
        capsys,
        tmp_path,
        "compare",
        "--data",
        str(headlines_csv),
        "--label-column",
        "category",
        "--models",
        "no-such-org/no-such-model",
        "--epochs",
        "1",
    )
    assert "no-such-org/no-such-model" in message and "Hub" in message


def test_existing_run_directory_is_not_overwritten_silently(capsys, tmp_path, headlines_csv):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    message = error_case(
        capsys, tmp_path, "compare", "--data", str(headlines_csv), "--label-column", "category", "--models", "minilm-l6"
    )
    assert "--overwrite" in message
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_project_with_a_config_yaml_survives_overwrite_and_resume(capsys, tmp_path, headlines_csv, monkeypatch, flag):
    """`compare --out . --overwrite` in a repository holding a config.yaml used to delete the repository."""
    from test_runs import a_project, snapshot

    project = tmp_path / "project"
    project.mkdir()
    before = a_project(project)
    monkeypatch.chdir(project)
    code, _, err = run_cli(
        capsys,
        "compare",
        "--data",
        str(headlines_csv),
        "--label-column",
        "category",
        "--models",
        "minilm-l6",
        "--out",
        ".",
        flag,
        "--no-progress",
    )
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "not a distilbench run" in err or "holds no distilbench run" in err
    assert ".git" in err and "config.yaml" in err
    assert snapshot(project) == before


def test_split_warnings_reach_the_user(capsys, tmp_path, monkeypatch):
    """Notes about stratification used to be logged at INFO, below what the CLI shows."""
    import distilbench.experiments.compare as compare_module
    from distilbench.core.console import DistilbenchError

    def stop(*args, **kwargs):
        raise DistilbenchError("stopped after the data (test)")

    monkeypatch.setattr(compare_module, "run_model", stop)
    path = tmp_path / "tiny-class.csv"
    pd.DataFrame(
        {"text": [f"headline {i}" for i in range(41)], "label": ["business", "health"] * 20 + ["science"]}
    ).to_csv(path, index=False)
    code, _, err = run_cli(
        capsys, "train", "--model", "minilm-l6", "--data", str(path), "--out", str(tmp_path / "r"), "--no-progress"
    )
    assert code == 2 and "stopped after the data" in err
    assert "warning: 1 of 3 classes are too small to stratify the test split ('science')" in err
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"  # 'threat' only in the separate test file
    pd.DataFrame(
        {"text": [f"comment {i}" for i in range(40)], "toxic": [i % 2 for i in range(40)], "threat": [0] * 40}
    ).to_csv(train, index=False)
    pd.DataFrame({"text": ["a threat", "fine"], "toxic": [1, 0], "threat": [1, 0]}).to_csv(test, index=False)
    code, _, err = run_cli(
        capsys,
        "train",
        "--task",
        "multilabel",
        "--label-columns",
        "toxic,threat",
        "--model",
        "minilm-l6",
        "--data",
        str(train),
        "--test-data",
        str(test),
        "--out",
        str(tmp_path / "m"),
        "--no-progress",
    )
    assert code == 2 and "stopped after the data" in err
    assert "warning: 1 label with no positive example in the training split: 'threat'" in err


def test_average_checkpoints_flag_reaches_the_settings_and_a_bad_count_is_one_line(capsys, tmp_path):
    from distilbench.cli.commands import build_parser

    args = build_parser().parse_args(["compare", "--average-checkpoints", "3", "--threshold-metric", "calibrated"])
    assert args.verb_spec.arguments(args) == {"average_checkpoints": 3, "threshold_metric": "calibrated"}
    message = error_case(
        capsys,
        tmp_path,
        "compare",
        "--data",
        str(shared_file("news-headlines.csv")),
        "--label-column",
        "category",
        "--models",
        "minilm-l6",
        "--average-checkpoints",
        "1",
    )
    assert "--average-checkpoints" in message and "0 (off) or 2 or more" in message


def test_bad_config_file(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochz: 3\n")
    message = error_case(capsys, tmp_path, "compare", "--config", str(config))
    assert "epochz" in message


def test_config_file_and_flags_combine_and_flags_win(capsys, tmp_path, tiny_bert_dir):
    data = shared_file("news-headlines.csv")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "multiclass",
                "data": str(data),
                "label_column": "category",
                "max_samples": 200,
                "epochs": 5,
                "models": [str(tiny_bert_dir)],
                "max_length": 24,
                "precision": "fp32",
            }
        )
    )
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys,
        "train",
        "--config",
        str(config),
        "--epochs",
        "1",
        "--model",
        f"student:{tiny_bert_dir}",
        "--head",
        "thesis",
        "--out",
        str(out),
        "--no-progress",
    )
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


def test_distill_reads_list_labelled_data_with_the_teachers_labels(
    capsys, tmp_path, monkeypatch, multilabel_checkpoint
):
    """distill forced --label-columns to the teacher's labels, so data with a list column could not be used."""
    import distilbench.experiments.compare as compare_module
    from distilbench.core.console import DistilbenchError

    seen = {}

    def stop(spec, config, splits, label_names, *args, **kwargs):
        seen.update(splits=splits, label_names=label_names)
        raise DistilbenchError("stopped after the data (test)")

    monkeypatch.setattr(compare_module, "run_model", stop)
    lists = tmp_path / "lists.jsonl"
    lists.write_text(
        "".join(
            json.dumps({"text": f"comment {i}", "labels": [["toxic"], ["insult", "toxic"], []][i % 3]}) + "\n"
            for i in range(30)
        )
    )
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        str(multilabel_checkpoint),
        "--student",
        f"student:{multilabel_checkpoint}",
        "--data",
        str(lists),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert code == 2 and "stopped after the data" in err, err
    assert seen["label_names"] == TOXIC_LABELS
    assert list(seen["splits"]["train"].columns) == ["text", *TOXIC_LABELS]
    lists.write_text('{"text": "a", "labels": ["spam"]}\n' * 10)
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        str(multilabel_checkpoint),
        "--student",
        f"student:{multilabel_checkpoint}",
        "--data",
        str(lists),
        "--out",
        str(tmp_path / "run2"),
        "--no-progress",
    )
    assert code == 2 and "labels not in the training data: 'spam'" in err
