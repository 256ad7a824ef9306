import json
import os

import pytest

from distilbench import runs
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
