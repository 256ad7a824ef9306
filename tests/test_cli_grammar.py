"""The CLI grammar: every verb's help has examples that parse, every flag a verb shows reaches its one API
function (and nothing else does), old spellings warn and still work, errors say the likely fix, help is light."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from distilbench import api
from distilbench.cli import build_parser
from distilbench.cli.commands import main

VERBS = ["compare", "train", "distill", "distill-general", "evaluate", "predict", "serve", "report", "bench", "export"]
VERBS.append("tune")
VERBS.append("cascade")
API_FUNCTION = {verb: verb.replace("-", "_") for verb in VERBS}

# What each verb needs before any other flag, and the keyword arguments that gives.
BASE = {
    "compare": ([], {}),
    "train": ([], {}),
    "distill": (["--teacher", "T", "--student", "S"], {"teacher": "T", "student": "S"}),
    "distill-general": (
        ["--teacher", "T", "--student", "S", "--data", "d.txt", "--out", "o"],
        {"teacher": "T", "student": "S", "data": "d.txt", "out": "o"},
    ),
    "evaluate": (["--model", "M", "--data", "d.csv"], {"model": "M", "data": "d.csv"}),
    "predict": (["--model", "M"], {"model": "M"}),
    "serve": (["--model", "M"], {"model": "M"}),
    "report": (["--run", "R"], {"run": "R"}),
    "bench": (["--models", "A,B"], {"models": ["A", "B"]}),
    "export": (["--model", "M", "--out", "o"], {"model": "M", "out": "o"}),
    "tune": ([], {}),
    "cascade": (["--small", "A", "--big", "B", "--out", "o"], {"small": "A", "big": "B", "out": "o"}),
}

# The API argument of each flag whose name is not the flag's own (--text-column -> text_column is implied).
RENAMED = {
    "--no-progress": "progress",
    "--no-distill": "distill",
    "--no-speed": "measure_speed",
    "--no-prune": "prune",
    "--no-memory": "memory",
    "--no-metric": "metric",
    "--no-batching": "batching",
}
RENAMED_IN = {
    ("evaluate", "--batch-size"): "eval_batch_size",
    ("evaluate", "--output"): "out",
    ("bench", "--output"): "out",
}

# Flags a verb must not offer: it would ignore them (they were offered before, or belong to a sibling verb).
NOT_OFFERED = {
    "train": ["--models", "--reference", "--margin", "--no-distill", "--alpha", "--temperature", "--unlabeled"],
    "distill": ["--task", "--models", "--reference", "--margin", "--no-distill", "--no-speed"],
    "tune": ["--seeds", "--no-speed", "--reference", "--margin", "--resamples", "--keep-checkpoints", "--backend"],
    "evaluate": ["--task", "--epochs", "--max-samples", "--precision", "--seeds", "--no-speed", "--eval-batch-size"],
    "predict": ["--data", "--precision"],
    "bench": ["--out", "--precision"],
    "export": ["--device", "--no-progress"],
}


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def shown_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags --help shows (not -h, not the hidden old spellings)."""
    return [
        a
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


def a_value(action: argparse.Action) -> tuple[list[str], object]:
    """Command-line tokens that set this flag to something other than its default, and the parsed value."""
    if action.nargs == 0:
        return [], action.const
    if action.choices:
        choice = list(action.choices)[-1]
        return [choice], choice
    kind = getattr(action.type, "__name__", "str")
    if kind == "int":
        return ["7"], 7
    if kind == "float":
        return ["0.25"], 0.25
    if kind in ("comma_list", "backend_list", "model_list"):
        return ["torch-fp32,onnx-int8"], ["torch-fp32", "onnx-int8"]
    return ["x"], "x"


@pytest.fixture
def calls(monkeypatch):
    """Every API function replaced by a stand-in that records its call."""
    recorded = []

    def stand_in(name):
        def call(*args, **kwargs):
            recorded.append((name, args, kwargs))
            return ("r.html", "r.md") if name == "report" else {}

        return call

    for name in set(API_FUNCTION.values()):
        monkeypatch.setattr(api, name, stand_in(name), raising=False)
    return recorded


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# --------------------------------------------------------------------------- help and examples


@pytest.mark.parametrize("verb", VERBS)
def test_every_verbs_help_has_examples_that_parse(capsys, calls, verb):
    code, out, _ = run_cli(capsys, verb, "--help")
    assert code == 0 and "\nexamples:\n" in out
    examples = [line.strip() for line in out.split("\nexamples:\n", 1)[1].splitlines() if "distilbench " in line]
    assert len(examples) >= 2, out
    for example in examples:
        argv = shlex.split(example.split("| ", 1)[-1])[1:]
        code, _, err = run_cli(capsys, *argv)
        assert code == 0 and err == "", (example, err)  # parses, and spells nothing the deprecated way
        assert calls[-1][0] == API_FUNCTION[argv[0]]


def test_top_level_help_states_the_grammar(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for phrase in ("--model MODEL", "--models A,B", "--run RUN_DIR", "--out DIR", "--output FILE", "examples:"):
        assert phrase in out


@pytest.mark.parametrize("verb, flags", NOT_OFFERED.items())
def test_a_verb_does_not_offer_flags_it_would_ignore(capsys, verb, flags):
    _, out, _ = run_cli(capsys, verb, "--help")
    offered = {o for a in shown_flags(verb_parsers()[verb]) for o in a.option_strings}
    assert not offered & set(flags), offered & set(flags)
    assert all(f"  {flag} " not in out for flag in flags)


def test_help_groups_the_flags(capsys):
    _, out, _ = run_cli(capsys, "compare", "--help")
    for title in ("\nmodel:", "\ndata:", "\ntraining", "\ndistillation:", "\nstatistics:", "\ninference:", "\noutput:"):
        assert title in out
    assert out.index("\ndata:") < out.index("\ntraining") < out.index("\ninference:") < out.index("\noutput:")


def test_export_help_claims_only_what_tests_show(capsys):
    """It promised loading in optimum, which nothing tests; what it claims now is tested in test_onnx_export.py:
    plain ONNX Runtime (test_exported_graph_equals_pytorch_and_runs_in_plain_onnxruntime), predict
    (test_predict_on_exported_directory_equals_the_checkpoint), serve and bench
    (test_serve_and_bench_take_an_exported_directory), no directory after a failed check
    (test_a_failed_check_leaves_no_directory)."""
    _, out, _ = run_cli(capsys, "export", "--help")
    flat = " ".join(out.split())  # argparse wraps the description where the terminal's width says
    assert "optimum" not in flat.lower() and "ORTModel" not in flat
    assert "plain ONNX Runtime" in flat and "predict, serve and bench" in flat and "DIR is not written" in flat


# --------------------------------------------------------------------------- every flag reaches the API


@pytest.mark.parametrize("verb", VERBS)
def test_every_flag_a_verb_shows_reaches_its_api_function(capsys, calls, verb):
    """Each shown flag, given alone (with what the verb needs), adds exactly its argument to the one API call."""
    base_argv, base_kwargs = BASE[verb]
    code, _, err = run_cli(capsys, verb, *base_argv)
    assert code == 0, err
    assert calls[-1] == (API_FUNCTION[verb], (), base_kwargs)
    for action in shown_flags(verb_parsers()[verb]):
        option = action.option_strings[-1]
        if option in [token for token in base_argv if token.startswith("--")]:
            continue
        tokens, value = a_value(action)
        extra = ["--engine", "ray"] if verb == "predict" and option in ("--out", "--address") else []
        extra += ["--output", "o.jsonl"] if verb == "predict" and option == "--resume" else []
        code, _, err = run_cli(capsys, verb, *base_argv, *extra, option, *tokens)
        assert code == 0, (option, err)
        name = RENAMED_IN.get((verb, option)) or RENAMED.get(option) or option[2:].replace("-", "_")
        if verb == "predict" and option == "--out":
            name = "output"  # the API's one output argument: a directory on Ray
        called, args, kwargs = calls[-1]
        assert called == API_FUNCTION[verb] and args == ()
        added = {k: v for k, v in kwargs.items() if k not in base_kwargs or base_kwargs[k] != v}
        assert added.get(name) == value, (option, added)
        assert set(added) - {"engine", "output"} <= {name}, (option, added)


def accepted_arguments(verb: str) -> set[str]:
    """The keyword arguments the API function of `verb`, and what it hands them to, really uses."""
    from distilbench.config import FIELDS

    function = getattr(api, API_FUNCTION[verb])
    named = {name for name, p in inspect.signature(function).parameters.items() if p.kind != p.VAR_KEYWORD}
    if verb == "distill-general":
        from distilbench.training.distillation import GeneralDistillationOptions, distill_general

        options = {f.name for f in dataclasses.fields(GeneralDistillationOptions)}
        return named | set(inspect.signature(distill_general).parameters) | options
    guard = {"min_agreement", "max_metric_drop", "recalibrate"}
    if verb in ("compare", "train", "distill", "tune", "evaluate", "cascade"):
        return named | FIELDS
    if verb == "bench":
        from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench

        options = {f.name for cls in (BenchOptions, BenchTexts) for f in dataclasses.fields(cls)}
        return named | set(inspect.signature(run_bench).parameters) | options | guard
    if verb == "predict":
        from distilbench.runtime.options import InferenceOptions
        from distilbench.runtime.predict import ChunkOptions, predict
        from distilbench.runtime.ray_predict import RayPoolOptions, predict_on_ray

        options = {f.name for cls in (InferenceOptions, ChunkOptions, RayPoolOptions) for f in dataclasses.fields(cls)}
        ray = set(inspect.signature(predict_on_ray).parameters)
        return named | set(inspect.signature(predict).parameters) | ray | options | guard | {"engine"}
    if verb == "serve":
        from distilbench.serving.app import ServeLimits, serve

        limits = {f.name for f in dataclasses.fields(ServeLimits)}
        return named | set(inspect.signature(serve).parameters) | limits | guard
    return named


@pytest.mark.parametrize("verb", VERBS)
def test_every_argument_the_cli_passes_is_one_the_api_uses(verb):
    spec = verb_parsers()[verb].get_default("verb_spec")
    dests = {flag.dest for flag in spec.flags} | ({"access_log"} if spec.verbose_as else set())
    dests = dests - {"out"} | ({"output"} if verb == "predict" else {"out"} & {f.dest for f in spec.flags})
    assert dests <= accepted_arguments(verb), dests - accepted_arguments(verb)


# --------------------------------------------------------------------------- old spellings


DEPRECATED = [
    (["export", "M", "--out", "o"], "export's positional MODEL is deprecated; use --model MODEL", "model", "M"),
    (["report", "runs/x"], "report's positional RUN_DIR is deprecated; use --run RUN_DIR", "run", "runs/x"),
    (["bench", "A", "B"], "bench's positional MODEL is deprecated; use --models", "models", ["A", "B"]),
    (["bench", "--models", "A", "--out", "b.json"], "bench's --out FILE is deprecated; use --output", "out", "b.json"),
    (
        ["evaluate", "--model", "M", "--data", "d", "--out", "m.json"],
        "evaluate's --out FILE is deprecated; use --output",
        "out",
        "m.json",
    ),
    (
        ["evaluate", "--model", "M", "--data", "d", "--eval-batch-size", "8"],
        "evaluate's --eval-batch-size N is deprecated; use --batch-size",
        "eval_batch_size",
        8,
    ),
    (
        ["predict", "--engine", "ray", "--model", "M", "--input", "i", "--output", "dir"],
        "predict --engine ray's --output DIR is deprecated; use --out DIR",
        "output",
        "dir",
    ),
    (
        ["distill-general", "--teacher", "T", "--student", "S", "--texts", "t.txt", "--out", "o"],
        "distill-general's --texts SOURCE is deprecated; use --data",
        "data",
        "t.txt",
    ),
    (
        ["distill-general", "--teacher", "T", "--student", "S", "--data", "t", "--out", "o", "--batch-size", "4"],
        "distill-general's --batch-size N is deprecated; use --train-batch-size",
        "train_batch_size",
        4,
    ),
]


@pytest.mark.parametrize("argv, warning, argument, value", DEPRECATED, ids=[" ".join(d[0][:3]) for d in DEPRECATED])
def test_every_old_spelling_warns_and_still_works(capsys, calls, argv, warning, argument, value):
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert err.startswith("distilbench: warning: ") and warning in err and err.count("\n") == 1, err
    assert calls[-1][2][argument] == value


# --------------------------------------------------------------------------- errors say the likely fix


@pytest.mark.parametrize(
    "argv, fix",
    [
        (["compare", "--label-column", "toxic,insult"], "use --task multilabel --label-columns toxic,insult"),
        (["evaluate", "--model", "M", "--data", "d", "--label-column", "a, b"], "--label-columns a,b"),
        (["train", "--model", "minilm-l6,mpnet-base"], "distilbench compare --models minilm-l6,mpnet-base"),
        (["compare", "--label-colum", "category"], "--label-colum (did you mean --label-column?)"),
        (["train", "--no-distill"], "--no-distill (a flag of compare, not of train)"),
        (["serve", "--model", "M", "-v"], "put it before the verb, distilbench -v serve"),
        (["bench", "--models", "A", "--backends", "torch-fp32,tensorrt"], "unknown backend(s) tensorrt"),
        (["compare", "--resume", "--overwrite", "--out", "r"], "not allowed with argument"),
        (["predict", "--model", "M", "--out", "d"], "locally, write a file with --output FILE"),
        (["export", "--out", "o"], "the following arguments are required: --model"),
        (["predict", "--model", "M", "--backend", "tensorrt"], "invalid choice: 'tensorrt'"),
    ],
)
def test_argument_errors_say_the_fix(capsys, calls, argv, fix):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and fix in err and not calls, err


def test_a_students_layer_list_is_one_model(capsys, calls):
    code, _, err = run_cli(capsys, "train", "--model", "student:minilm-l6:0,2,4")
    assert code == 0 and calls[-1][2]["model"] == "student:minilm-l6:0,2,4", err
    code, _, err = run_cli(capsys, "compare", "--models", "minilm-l6,student:minilm-l6:0,2,4, student:minilm-l6")
    assert code == 0 and calls[-1][2]["models"] == ["minilm-l6", "student:minilm-l6:0,2,4", "student:minilm-l6"]


def test_an_unknown_model_name_suggests_the_closest(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40)))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--model", "minilm-l7", "--data", str(data), "--out", str(out))
    assert code == 2 and err.startswith("distilbench: error: ") and "minilm-l6" in err, err


def test_an_unfinished_run_where_a_checkpoint_belongs_names_the_checkpoint(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "models" / "minilm-l6").mkdir(parents=True)
    (run / "config.yaml").write_text("models: [minilm-l6]\n")
    code, _, err = run_cli(capsys, "evaluate", "--model", str(run), "--data", str(tmp_path / "d.csv"))
    assert code == 2 and "models/<model>/best" in err.replace("minilm-l6", "<model>"), err


# --------------------------------------------------------------------------- light and small


def test_help_imports_no_heavy_library():
    """`distilbench --help` and every `distilbench VERB --help` answer without torch, transformers, pandas or
    scikit-learn (they take seconds to import)."""
    script = (
        "import sys, json\n"
        "from distilbench.cli import main\n"
        f"for argv in [['--help'], *[[v, '--help'] for v in {VERBS!r}]]:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = ('torch', 'transformers', 'pandas', 'sklearn', 'numpy', 'scipy')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


def test_no_function_of_the_cli_is_longer_than_80_lines():
    folder = Path(__file__).parents[1] / "src" / "distilbench" / "cli"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno < 80, f"{path.name}:{node.name}"
