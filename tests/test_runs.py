import json
import os
from pathlib import Path

import pytest

from distilbench import runs
from distilbench.core.console import DistilbenchError
from distilbench.runs import model_slug, write_json_atomic, write_text_atomic


@pytest.mark.parametrize(
    "spec, slug",
    [
        ("minilm-l6", "minilm-l6"),
        ("student:minilm-l6", "student-minilm-l6"),
        ("google-bert/bert-base-uncased", "google-bert-bert-base-uncased"),
        ("./runs/x/models/m/best/", "runs-x-models-m-best"),
    ],
)
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


# --------------------------------------------------------------------------- durability: fsync at each commit point


def record_disk(monkeypatch) -> list[tuple]:
    """Every fsync (by the path it flushed) and every rename, in the order they happen."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        real_replace(source, target)
        events.append(("rename", str(Path(source).resolve()), str(Path(target).resolve())))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def synced_before_rename(events: list[tuple], target: Path) -> tuple[list[str], list[str]]:
    """The paths flushed before `target` was renamed into place, and those flushed after it."""
    target = str(Path(target).resolve())
    at = next(i for i, event in enumerate(events) if event[0] == "rename" and event[2] == target)
    flushed = [event[1] for event in events if event[0] == "fsync"]
    before = [event[1] for event in events[:at] if event[0] == "fsync"]
    return before, flushed[len(before) :]


def test_atomic_write_flushes_the_file_then_its_folder(tmp_path, monkeypatch):
    events = record_disk(monkeypatch)
    path = tmp_path / "row.json"
    write_json_atomic(path, {"done": True})
    [(_, temporary), (_, source, target), (_, folder)] = events
    assert Path(temporary).name.startswith(".row.json.") and (source, target) == (temporary, str(path.resolve()))
    assert folder == str(tmp_path.resolve())  # the rename itself is flushed before the write counts as done


def test_a_checkpoint_is_on_disk_before_its_rename(tmp_path, monkeypatch, tiny_bert_dir, minilm_tokenizer):
    from transformers import BertModel

    from distilbench.runs import save_checkpoint

    model = BertModel.from_pretrained(tiny_bert_dir)
    events = record_disk(monkeypatch)
    save_checkpoint(model, minilm_tokenizer, tmp_path / "epoch-1")
    before, after = synced_before_rename(events, tmp_path / "epoch-1")
    partial = tmp_path.resolve() / "epoch-1.partial"
    files = sorted(p.name for p in (tmp_path / "epoch-1").iterdir())
    assert "model.safetensors" in files and sorted(Path(p).name for p in before if Path(p).parent == partial) == files
    assert str(partial) in before and after == [str(tmp_path.resolve())]


def test_a_trainer_state_is_on_disk_before_its_completion_mark(tmp_path, monkeypatch):
    from distilbench.training.finetune import COMPLETE_MARK, mark_complete

    state = tmp_path / "checkpoint-9"
    (state / "sub").mkdir(parents=True)
    for name in ("optimizer.pt", "trainer_state.json", "sub/rng_state.pth"):
        (state / name).write_text(name)
    events = record_disk(monkeypatch)
    mark_complete(state, 2)
    before, after = synced_before_rename(events, state / COMPLETE_MARK)
    resolved = state.resolve()
    for name in ("optimizer.pt", "trainer_state.json", "sub/rng_state.pth", "sub", "."):
        assert str((resolved / name).resolve()) in before, name
    assert after == [str(resolved)] and (state / COMPLETE_MARK).read_text() == "epoch 2\n"
