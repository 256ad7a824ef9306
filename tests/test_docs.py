"""The documentation is tested: the site builds strictly, every Python block of the README and the docs runs (or
says why it cannot), and the getting-started commands run, with a tiny model and a few rows instead of minutes."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(p for p in (ROOT / "docs").glob("**/*.md") if "hooks" not in p.parts)])
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
NO_TEST = re.compile(r"<!--\s*no-test:(?P<reason>.*?)-->\s*$", re.S)
# what the snippets run with instead of the real settings: seconds, not minutes
TINY_SETTINGS = dict(
    epochs=1, max_samples=120, max_length=32, train_batch_size=16, precision="fp32", measure_speed=False
)
TINY_FLAGS = [
    *("--epochs", "1", "--max-samples", "120", "--max-length", "32", "--train-batch-size", "16"),
    *("--precision", "fp32", "--no-progress", "--no-speed"),
]
TRAINING_VERBS = ("compare", "train", "distill", "tune")
# shell lines of the getting-started page that set a machine up rather than use distilbench (the README's
# `make demo` / `make test` are exercised by CI itself)
SETUP_COMMANDS = ("git clone", "cd ", "make ", "pip install", "source ")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    body: str
    no_test: str | None  # the reason given in a preceding <!-- no-test: reason --> comment, "" when empty

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the no-test comment on the line before it, if any."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        marker = NO_TEST.search(before[-1]) if before else None
        blocks.append(
            Block(
                path,
                text.count("\n", 0, match.start()) + 1,
                match.group("lang").lower(),
                textwrap.dedent(match.group("body")),
                marker.group("reason").strip() if marker else None,
            )
        )
    return blocks


def python_blocks(path: Path) -> list[Block]:
    return [block for block in code_blocks(path) if block.lang in ("python", "py")]


def files_with_runnable_python() -> list[Path]:
    return [path for path in DOC_FILES if any(block.no_test is None for block in python_blocks(path))]


# --------------------------------------------------------------------------- the block finder itself


def test_code_blocks_finds_fences_indented_ones_and_no_test_reasons(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n- item\n\n    ```bash\n    echo hi\n    ```\n\n"
        "<!-- no-test: needs a GPU -->\n```python\nimport cuda\n```\n\n<!-- no-test: -->\n```py\ny = 2\n```\n"
    )
    blocks = code_blocks(page)
    assert [(b.lang, b.body, b.no_test) for b in blocks] == [
        ("python", "x = 1\n", None),
        ("bash", "echo hi\n", None),
        ("python", "import cuda\n", "needs a GPU"),
        ("py", "y = 2\n", ""),
    ]


def test_every_python_block_runs_or_says_why_not():
    """A block the tests do not run must say why; a no-test comment must stand right before a Python block."""
    problems = []
    for path in DOC_FILES:
        for block in python_blocks(path):
            if block.no_test == "":
                problems.append(f"{block}: <!-- no-test: --> without a reason")
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"<!--\s*no-test:", text):
            following = text[match.end() :].split("-->", 1)[-1].lstrip()
            if not following.startswith(("```python", "```py")):
                problems.append(f"{path.relative_to(ROOT)}: a no-test comment not followed by a Python block")
    assert not problems, "\n".join(problems)
    assert files_with_runnable_python(), "no Python block is run: the collection is broken"


# --------------------------------------------------------------------------- running the snippets


@pytest.fixture(scope="module")
def tiny_models(learnable_bert_dir):
    """`minilm-l6` resolves to conftest's tiny random BERT (with MiniLM's tokenizer) while this module runs, so
    the snippets keep the names a user types."""
    from distilbench.models import packaged, registry

    with pytest.MonkeyPatch.context() as patch:
        for module in (packaged, registry):
            patch.setattr(module, "packaged_minilm_path", lambda: str(learnable_bert_dir), raising=False)
        yield learnable_bert_dir


@pytest.fixture(scope="module")
def news_csv(tmp_path_factory) -> Path:
    """A `news.csv` as the docs describe it (text, category), from the built-in BBC News titles."""
    from distilbench.data.readers import read_source

    frame = read_source("builtin:bbc-news").groupby("label").head(40)
    path = tmp_path_factory.mktemp("data") / "news.csv"
    frame.rename(columns={"label": "category"})[["title", "category"]].rename(columns={"title": "text"}).to_csv(
        path, index=False
    )
    return path


@pytest.fixture(scope="module")
def news_run(tmp_path_factory, tiny_models, news_csv) -> Path:
    """`runs/news` as Getting started leaves it (minilm-l6 and its student), which the guides reuse."""
    import distilbench

    out = tmp_path_factory.mktemp("shared") / "runs" / "news"
    distilbench.compare(
        str(news_csv),
        label_column="category",
        models=["minilm-l6", "student:minilm-l6"],
        out=str(out),
        backend="torch-fp32",
        progress=False,
        **TINY_SETTINGS,
    )
    return out


@pytest.fixture
def workspace(tmp_path, monkeypatch, news_csv, news_run, tiny_models) -> Path:
    """A working directory like a user's after Getting started: news.csv, toxic.csv, configs/, runs/news."""
    shutil.copy(news_csv, tmp_path / "news.csv")
    _write_multilabel_csv(tmp_path / "toxic.csv")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(news_run, tmp_path / "runs" / "news", symlinks=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_multilabel_csv(path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(120, 3))
    frame = pd.DataFrame(labels, columns=["toxic", "insult", "obscene"])
    frame.insert(
        0, "text", [f"comment number {i} says {'bad ' * int(row.sum())}things" for i, row in enumerate(labels)]
    )
    frame.to_csv(path, index=False)


def _tiny(function, fixed: dict):
    """`function` with the tiny settings forced over what the snippet gives."""

    def wrapper(*args, **kwargs):
        kwargs.update(fixed)
        return function(*args, **kwargs)

    wrapper.__name__ = function.__name__
    return wrapper


@pytest.fixture
def tiny_api(monkeypatch, workspace):
    """distilbench's API as the snippets see it, with tiny settings forced and torch-fp32 (no calibration)."""
    import distilbench
    import distilbench.api as api

    fixed = {
        **{verb: {**TINY_SETTINGS, "backend": "torch-fp32", "progress": False} for verb in TRAINING_VERBS},
        "tune": {**TINY_SETTINGS, "trials": 2, "progress": False},
        "evaluate": {"backend": "torch-fp32", "progress": False},
        "predict": {"backend": "torch-fp32", "progress": False},
    }
    for name, settings in fixed.items():
        wrapped = _tiny(getattr(api, name), settings)
        # distilbench first: reading its lazy attribute caches api's function there, and that must be the real
        # one, or undoing the patch would leave the tiny wrapper in `distilbench` for the worker's later tests
        monkeypatch.setattr(distilbench, name, wrapped, raising=False)
        monkeypatch.setattr(api, name, wrapped)
    return api


@pytest.mark.parametrize("path", files_with_runnable_python(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, tiny_api, workspace):
    """Each page's Python blocks run in order in one namespace, as a reader would paste them."""
    namespace: dict = {"__name__": "__docs__"}
    for block in python_blocks(path):
        if block.no_test is not None:
            continue
        try:
            exec(compile(block.body, str(block), "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as exc:
            raise AssertionError(f"the Python block at {block} failed: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- the getting-started commands


def shell_commands(path: Path) -> list[str]:
    """The commands of a page's bash blocks: continuation lines joined, comments and blank lines dropped."""
    commands = []
    for block in code_blocks(path):
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in block.body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_getting_started_commands_run(workspace, tiny_models, capsys):
    """Every `distilbench` command of Getting started runs as written, plus tiny settings; everything else on
    the page is a set-up command."""
    from distilbench.cli import run

    shutil.rmtree(workspace / "runs" / "news")  # the page starts from nothing
    commands = shell_commands(ROOT / "docs" / "getting-started.md")
    ran = 0
    for command in commands:
        if command.startswith(SETUP_COMMANDS):
            continue
        argv = shlex.split(command)
        assert argv[0] == "distilbench", f"not a distilbench or set-up command: {command}"
        verb = argv[1]
        extra = ["--backend", "torch-fp32"] if verb in ("compare", "train", "distill", "predict", "evaluate") else []
        extra += TINY_FLAGS if verb in TRAINING_VERBS else []
        code = run(argv[1:] + extra)
        assert code in (0, None), f"{command} exited with {code}"
        ran += 1
    assert ran >= 3, f"only {ran} distilbench commands found on the getting-started page"
    assert (workspace / "runs" / "demo" / "comparison.json").is_file()
    assert (workspace / "predictions.jsonl").stat().st_size > 0


def documented_commands() -> list[tuple[Path, str]]:
    """Every `distilbench` command in a bash block of the README and the docs (after a pipe, or after
    `-m distilbench` for torchrun and accelerate)."""
    found = []
    for path in DOC_FILES:
        for command in shell_commands(path):
            command = command.split("|")[-1].strip()
            if " -m distilbench " in command:
                command = "distilbench " + command.split(" -m distilbench ", 1)[1]
            if command.startswith("distilbench "):
                found.append((path, command))
    return found


def test_every_documented_command_parses(capsys):
    """The flags the README and the guides show exist, with valid choices and no deprecated spelling."""
    from distilbench.cli import build_parser

    commands = documented_commands()
    assert len(commands) >= 20
    failures = []
    for path, command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pass
        complaint = capsys.readouterr().err.strip()  # an error, or the warning of a deprecated spelling
        if complaint:
            failures.append(f"{path.relative_to(ROOT)}: {command}\n    {complaint}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- the site


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_covers_every_verb_and_flag_of_the_parser():
    from distilbench.cli import build_parser

    hook = _hook()
    text = hook.cli_reference_markdown()
    verbs = hook.verb_names()
    assert len(verbs) >= 10
    for verb in verbs:
        assert f"## distilbench {verb}\n" in text
    for name, verb_parser, _ in hook._verbs(build_parser()):
        for action in verb_parser._actions:
            for option in action.option_strings:
                if hook._shown(action):  # every flag but the hidden ones and -h, --help
                    assert f"`{option}" in text, f"{name} {option} missing from the CLI reference"


def test_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page or an unresolved API reference fails."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "distilbench compare" in cli_page and "<!-- cli-reference -->" not in cli_page
    api_page = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("compare", "load", "open_run", "RunResult", "Classifier"):
        assert f"distilbench.api.{name}" in api_page, f"{name} missing from the API reference"
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Unreleased" in changelog


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 260
    assert "make demo" in text and "make test" in text and "pip install" in text
    for name in ("demo", "readme-thesis", "readme-speed"):
        assert re.search(rf"^<!-- results:{name} -->$", text, re.M), name
        assert re.search(rf"^<!-- /results:{name} -->$", text, re.M), name
    for link in re.findall(r"\]\(((?:docs/|CHANGELOG|CONTRIBUTING|configs/)[^)#]*)", text):
        assert (ROOT / link).exists(), f"the README links to {link}, which does not exist"


def test_readme_types_no_result_by_hand():
    """Outside the rendered results blocks the README holds no measured number (a score, a time, a speed-up)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    outside = re.sub(r"<!-- results:([\w-]+) -->.*?<!-- /results:\1 -->", "", text, flags=re.S)
    # a decimal number on its own (not part of an address, a version such as Apache-2.0, or Python 3.11)
    numbers = re.findall(r"(?<![\w.-])\d+\.\d+(?!\.?\d)", outside.replace("Python ≥ 3.11", ""))
    assert not numbers, f"numbers typed by hand in README.md: {numbers}"


def test_changelog_version_matches_the_package():
    import tomllib

    import distilbench

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert distilbench.__version__ == version
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
