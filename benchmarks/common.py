"""What the benchmark scripts share: where things are, the stamp every result carries, the thesis's data, atomic
result files, and the smoke mode (a tiny random model and a few rows, in a temporary folder).

A result file is a JSON object with a `stamp`: the commit, the date, the CPU (model and flags) and the command
that made it. `benchmarks/render.py` prints that stamp under every table it renders from the file, so a number in
the README or the docs always says where it came from. The CPU comes from distilbench's own machine probe
(`distilbench.runtime.machine`), the same one that chooses backends and precisions.

Smoke mode (`--smoke` on every script) runs the script's own code on a 2-layer random BERT and a few dozen rows,
in seconds, and writes to a temporary folder, never to benchmarks/results/: it shows that a refactoring has not
broken the script, not what the script measures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
HEADLINES = DATA / "news-headlines.csv"
TOXIC_COMMENTS = DATA / "toxic-comments.csv"
TOXIC_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
# the thesis's two tasks: the shared file and the columns that hold the labels
TASKS = {
    "multiclass": dict(data=str(HEADLINES), label_column="category"),
    "multilabel": dict(data=str(TOXIC_COMMENTS), label_columns=TOXIC_LABELS),
}
SMOKE_ENV = "DISTILBENCH_BENCHMARK_SMOKE"


# ---------------------------------------------------------------- the stamp


def git_commit() -> str:
    """The short commit of the working tree, with '+dirty' where tracked files differ from it ('unknown' outside
    git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, as a user would type it from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("?")
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(argv[0]) if argv else "?"
    return shlex.join([".venv/bin/python", shown, *argv[1:]])


def stamp(command: str | None = None) -> dict:
    """Where and how a result was made: commit, UTC date, CPU model and decisive flags, cores, command."""
    from distilbench.runtime.machine import FLAGS_ENV, cpu_flags, cpu_model

    made = {
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "command": command or command_line(),
        "recorded": True,
    }
    if os.environ.get(FLAGS_ENV) is not None:  # a CPU simulated on this one: its flags are not this CPU's
        made["cpu_flags_limited_by"] = f"{FLAGS_ENV}={os.environ[FLAGS_ENV]}"
    return made


def stamp_line(result_stamp: dict, source: str) -> str:
    """The one line printed under a rendered table: file, commit, date, CPU with its flags, command."""
    flags = ", ".join(result_stamp.get("cpu_flags") or []) or "flags not recorded"
    if result_stamp.get("cpu_flags_limited_by"):
        flags += f" only, simulated by {result_stamp['cpu_flags_limited_by']}"
    cores = result_stamp.get("cpu_count")
    cpu = f"{result_stamp.get('cpu', 'cpu not recorded')} ({flags}{f'; {cores} cores' if cores else ''})"
    commit = result_stamp.get("commit", "unknown")
    if result_stamp.get("commit_note"):
        commit += f" {result_stamp['commit_note']}"
    elif not result_stamp.get("recorded", True):
        commit += " (the last commit that changed the result file; the run's own commit was not recorded)"
    note = f" {result_stamp['note']}" if result_stamp.get("note") else ""
    return (
        f"<sub>From `{source}`: commit {commit}, {result_stamp.get('date', 'date not recorded')}, "
        f"{cpu}; `{result_stamp.get('command', 'command not recorded')}`.{note}</sub>"
    )


# ---------------------------------------------------------------- result files


def write_result(path: Path, report: dict, markdown: str | None = None, command: str | None = None) -> Path:
    """Writes `report` (stamped, unless it already carries a stamp) to `path` as JSON, atomically, and the
    markdown view beside it; returns the JSON's path."""
    from distilbench.runs import write_json_atomic, write_text_atomic

    path = Path(path).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"stamp": report.get("stamp") or stamp(command), **{k: v for k, v in report.items() if k != "stamp"}}
    write_json_atomic(path, report)
    if markdown is not None:
        write_text_atomic(path.with_suffix(".md"), markdown_view(report, markdown, shown_path(path)))
    return path


def shown_path(path: Path) -> str:
    """A result's path as the published text names it: relative to the repository where it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def markdown_view(report: dict, markdown: str, source: str) -> str:
    """The detailed markdown view of a result (the script's own tables), ending with the result's stamp line;
    `benchmarks/render.py --check` compares it with what the script's markdown() makes of the JSON."""
    return markdown.rstrip("\n") + "\n\n" + stamp_line(report["stamp"], source) + "\n"


# ---------------------------------------------------------------- arguments


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose description is the script's docstring, with --smoke."""
    made = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        epilog="\n".join((doc or "").strip().splitlines()[1:]).strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    made.add_argument(
        "--smoke",
        action="store_true",
        help="run on a tiny random model and a few rows in seconds, writing to a temporary folder (a check that "
        "the script works, not a measurement)",
    )
    return made


def results_dir(smoke: bool) -> Path:
    """benchmarks/results, or a fresh temporary folder in smoke mode."""
    return smoke_dir() / "results" if smoke else RESULTS


# ---------------------------------------------------------------- an exported bundle in a runtime install

TORCH_MARK = "distilbench: torch imported:"
# distilbench's console entry point (pyproject's `distilbench = "distilbench.cli:main"`), plus an exit hook that says
# whether torch was imported
PREDICT_WRAPPER = (
    "import atexit, sys\n"
    f"atexit.register(lambda: print({TORCH_MARK!r}, 'torch' in sys.modules, file=sys.stderr))\n"
    "sys.argv[0] = 'distilbench'\n"
    "from distilbench.cli import main\n"
    "sys.exit(main())\n"
)


def torch_imported(stderr: str) -> bool | None:
    """Whether a process run through PREDICT_WRAPPER imported torch, from its line on stderr (None: no line)."""
    marks = [line for line in stderr.splitlines() if line.startswith(TORCH_MARK)]
    return marks[-1].split(":")[-1].strip() == "True" if marks else None


def runtime_python(venv: str | None) -> str:
    """The python of a runtime install made by runtime_env.py --venv, checked to lack torch; this interpreter
    without one."""
    if venv is None:
        return sys.executable
    python = Path(venv).resolve() / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"{venv} is not a virtual environment (no bin/python): make it with runtime_env.py --venv")
    if subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0:
        raise SystemExit(f"torch imports in {venv}: it is not a runtime-only install")
    return str(python)


def export_bundle(checkpoint: Path, bundle: Path) -> bool:
    """Exports `checkpoint` to `bundle` (fp32 ONNX) with distilbench export, in this process; reuses a bundle that
    already holds a model.onnx. Returns whether it exported now."""
    if (bundle / "model.onnx").is_file():
        return False
    from distilbench.cli import main as distilbench_main

    bundle.parent.mkdir(parents=True, exist_ok=True)
    try:
        code = distilbench_main(["export", "--model", str(checkpoint), "--out", str(bundle)])
    except SystemExit as exit_:  # the CLI ends some verbs with SystemExit
        code = exit_.code
    if code not in (0, None):
        raise SystemExit(f"distilbench export --model {checkpoint} --out {bundle} failed ({code})")
    return True


# ---------------------------------------------------------------- smoke mode


_SMOKE_DIR: Path | None = None


def smoke_dir() -> Path:
    """The temporary folder of this process's smoke runs (made once; DISTILBENCH_BENCHMARK_SMOKE names one)."""
    global _SMOKE_DIR
    if _SMOKE_DIR is None:
        given = os.environ.get(SMOKE_ENV)
        _SMOKE_DIR = Path(given) if given else Path(tempfile.mkdtemp(prefix="distilbench-smoke-"))
        _SMOKE_DIR.mkdir(parents=True, exist_ok=True)
        # ONNX graphs and backend choices of the tiny model stay out of the user's cache (the tests set their own)
        os.environ.setdefault("DISTILBENCH_CACHE", str(_SMOKE_DIR / "cache"))
    return _SMOKE_DIR


def smoke_model(kind: str = "bert") -> Path:
    """A 2-layer, 32-wide random BERT (or DistilBERT) with the packaged MiniLM's tokenizer, saved like a hub
    checkpoint (made once per smoke folder)."""
    path = smoke_dir() / f"tiny-{kind}"
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

    from distilbench.models.registry import packaged_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path())
    torch.manual_seed(0)
    size = dict(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
    if kind == "distilbert":
        model = DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **size))
    else:
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **size)
        model = BertModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SMOKE_WORDS = {
    "business": "stocks market profit bank shares",
    "science": "space study climate physics genes",
    "entertainment": "film music star show award",
    "health": "vaccine doctors hospital virus diet",
}


def smoke_data(task: str, rows: int = 48) -> Path:
    """A few rows shaped like the thesis's `task` file (headlines with `category`, or comments with the six toxic
    label columns), with words that go with the labels."""
    import numpy as np
    import pandas as pd

    path = smoke_dir() / f"smoke-{task}-{rows}.csv"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    names = list(SMOKE_WORDS)
    frame = []
    for i in range(rows):
        label = names[i % len(names)]
        words = rng.choice(SMOKE_WORDS[label].split(), size=4).tolist() + [f"item{i}"]
        frame.append({"text": " ".join(words), "category": label})
    frame = pd.DataFrame(frame)
    if task == "multilabel":
        for j, column in enumerate(TOXIC_LABELS):
            frame[column] = ((np.arange(rows) + j) % (3 + j) == 0).astype(int)
        frame = frame.drop(columns="category")
    frame.to_csv(path, index=False)
    return path


def smoke_tasks() -> dict:
    """TASKS with the smoke data in place of the shared files."""
    return {
        "multiclass": dict(data=str(smoke_data("multiclass")), label_column="category"),
        "multilabel": dict(data=str(smoke_data("multilabel")), label_columns=TOXIC_LABELS),
    }


def smoke_checkpoint(task: str = "multiclass") -> Path:
    """A classifier checkpoint of the smoke model for `task` (random head, untrained), saved as distilbench saves a
    fine-tuned one, so scripts that take a checkpoint run on it."""
    path = smoke_dir() / f"tiny-checkpoint-{task}"
    if (path / "config.json").is_file():
        return path
    from distilbench.models.registry import load_classifier
    from distilbench.runs import save_checkpoint

    labels = list(SMOKE_WORDS) if task == "multiclass" else TOXIC_LABELS
    model, tokenizer = load_classifier(str(smoke_model()), task, labels)
    save_checkpoint(model, tokenizer, path)
    return path
