"""The published results match their result files: `benchmarks/render.py --check` renders every block of README.md
and docs/*.md and the README's figure again and fails on a difference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_published_results_match_the_result_files():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "render.py"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_fails_and_shows_the_diff_where_a_number_was_typed(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render

    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    rendered = render.render_text("<!-- results:serve -->\n<!-- /results:serve -->\n", {}, page)
    page.write_text(rendered.replace("| batching on | ", "| batching on | 1", 1))
    (tmp_path / "README.md").write_text("no blocks here\n")
    monkeypatch.setattr(render, "ROOT", tmp_path)
    assert render.main(["--check"]) == 1
    assert page.read_text() != rendered  # --check changes nothing
    assert render.main([]) == 0
    assert page.read_text() == rendered  # a plain run writes the rendering back
    assert render.main(["--check"]) == 0


def test_every_block_renders_with_its_stamp():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render

    for name, make in render.BLOCKS.items():
        text = make()
        assert "<sub>From `benchmarks/results/" in text, name
        assert "commit " in text and "`" in text, name


def test_an_unknown_block_name_is_refused(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render

    try:
        render.render_text("<!-- results:nothing -->\n<!-- /results:nothing -->\n", {}, tmp_path / "x.md")
    except SystemExit as stop:
        assert "unknown results block 'nothing'" in str(stop)
    else:
        raise AssertionError("an unknown block was accepted")


def test_a_results_view_typed_by_hand_fails_the_check(tmp_path, monkeypatch):
    """The markdown view beside a result is what its script's markdown() makes of the JSON, stamp included."""
    import shutil

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    for name in ("serve.json", "serve.md", "thesis_scale.json", "thesis_scale.md"):  # the figure reads thesis_scale
        shutil.copy(ROOT / "benchmarks" / "results" / name, results / name)
    (tmp_path / "README.md").write_text("no blocks here\n")
    monkeypatch.setattr(render, "ROOT", tmp_path)
    monkeypatch.setattr(render, "RESULTS", results)
    assert render.main(["--check"]) == 0
    view = results / "serve.md"
    view.write_text(view.read_text().replace("5.42x", "6.00x"))
    assert render.main(["--check"]) == 1
    assert render.main([]) == 0
    assert "5.42x" in view.read_text() and "From `benchmarks/results/serve.json`" in view.read_text()
