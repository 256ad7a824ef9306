import json
import os

import pytest

from distilbench import runs
from distilbench.console import DistilbenchError
from distilbench.runs import model_slug, write_json_atomic, write_text_atomic


@pytest.mark.parametrize("spec, slug", [
    ("minilm-l6", "minilm-l6"),
    ("student:minilm-l6", "student-minilm-l6"),
    ("google-bert/bert-base-uncased", "google-bert-bert-base-uncased"),
    ("./runs/x/models/m/best/", "runs-x-models-m-best"),
])
def test_model_slug(spec, slug):
    assert model_slug(spec) == slug


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"done": True})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_text_atomic(path, "half")
    assert json.loads(path.read_text()) == {"done": True}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- what --overwrite may delete


def snapshot(root) -> dict:
    """Every file (with its bytes) and folder under root, to prove a directory was left untouched."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def a_project(root):
    """A repository that happens to hold a config.yaml: what `compare --out . --overwrite` used to erase."""
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("print('mine')\n")
    (root / "config.yaml").write_text("epochs: 2\n")
    (root / "README.md").write_text("my project\n")
    return snapshot(root)


@pytest.mark.parametrize("overwrite, resume", [(True, False), (False, False), (False, True)])
def test_a_directory_that_is_not_a_run_is_refused_and_left_intact(tmp_path, overwrite, resume):
    before = a_project(tmp_path)
    with pytest.raises(DistilbenchError) as info:
        runs.open_run_dir(str(tmp_path), overwrite=overwrite, resume=resume)
    message = str(info.value)
    assert "\n" not in message and ".git" in message and "README.md" in message and "no .distilbench-run" in message
    assert snapshot(tmp_path) == before  # not even a lock file was left behind


def test_overwrite_deletes_only_what_distilbench_wrote(tmp_path):
    run = runs.open_run_dir(str(tmp_path / "run"), overwrite=False)
    run.lock.close()
    root = tmp_path / "run"
    assert (root / runs.RUN_MARKER).is_file()
    for name in ("data", "models/m/epoch-1", "results/m", "plots"):
        (root / name).mkdir(parents=True)
        (root / name / "f").write_text("x")
    for name in ("config.yaml", "comparison.json", "report.html", ".comparison.json.ab3_x9zq.tmp"):
        (root / name).write_text("x")
    (root / "notes.txt").write_text("my notes on this run")
    with pytest.raises(DistilbenchError, match="holds files distilbench did not write: notes.txt"):
        runs.open_run_dir(str(root), overwrite=True)
    assert (root / "comparison.json").is_file() and (root / "models" / "m" / "epoch-1" / "f").is_file()
    (root / "notes.txt").unlink()
    with runs.open_run_dir(str(root), overwrite=True):
        assert sorted(p.name for p in root.iterdir()) == sorted([runs.LOCK_NAME, runs.RUN_MARKER])


def test_a_run_from_before_the_marker_can_still_be_resumed_and_overwritten(tmp_path):
    root = tmp_path / "old-run"
    (root / "data").mkdir(parents=True)
    (root / "config.yaml").write_text("epochs: 1\n")
    with runs.open_run_dir(str(root), overwrite=False, resume=True):
        assert (root / "data").is_dir() and (root / runs.RUN_MARKER).is_file()
    with runs.open_run_dir(str(root), overwrite=True):
        assert not (root / "data").exists() and not (root / "config.yaml").exists()
