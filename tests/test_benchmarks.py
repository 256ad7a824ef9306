"""Every script in benchmarks/ answers --help, and runs its --smoke mode (a tiny random model and a few rows, in a
temporary folder) without touching benchmarks/results/: a script broken by a refactoring fails here, not in a
user's reproduction. The scripts run in this process (runpy, as `python benchmarks/X.py` would), one torch thread,
so the whole file stays short on a busy 2-core machine (about 2 minutes; all of it runs in `make test`, so CI
catches a script that a refactoring broke)."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "common.py")


def run_script(name: str, *args: str) -> int:
    """Runs benchmarks/<name> as __main__ with `args`; returns its exit code."""
    argv = sys.argv
    sys.argv = [str(BENCHMARKS / name), *args]
    try:
        runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
    except SystemExit as stop:
        return 0 if stop.code is None else int(stop.code) if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
    return 0


def results_snapshot() -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def smoke_folder(tmp_path_factory):
    """One temporary folder for every smoke run of this file (the tiny model is made once)."""
    import torch

    folder = tmp_path_factory.mktemp("benchmark-smoke")
    os.environ["DISTILBENCH_BENCHMARK_SMOKE"] = str(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield folder
    torch.set_num_threads(threads)
    os.environ.pop("DISTILBENCH_BENCHMARK_SMOKE", None)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help(script, capsys):
    assert run_script(script, "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:200]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_its_smoke_mode_outside_the_results(script, smoke_folder, capsys):
    before = results_snapshot()
    assert run_script(script, "--smoke") == 0
    assert results_snapshot() == before, "a smoke run wrote to benchmarks/results"
    assert capsys.readouterr().out.strip()


def test_a_result_is_stamped_and_written_atomically(smoke_folder):
    sys.path.insert(0, str(BENCHMARKS))
    import json

    import common

    path = common.write_result(smoke_folder / "stamped.json", {"value": 1}, "| a |\n", command="python x.py --y")
    saved = json.loads(path.read_text())
    assert list(saved)[0] == "stamp" and saved["value"] == 1
    assert saved["stamp"]["command"] == "python x.py --y" and saved["stamp"]["cpu"]
    assert saved["stamp"]["commit"] and len(saved["stamp"]["date"]) == 10
    line = common.stamp_line(saved["stamp"], str(path))
    assert "python x.py --y" in line and saved["stamp"]["cpu"] in line
    assert path.with_suffix(".md").read_text() == f"| a |\n\n{line}\n"  # the view ends with the stamp
    assert not list(smoke_folder.glob("*.tmp*"))
