"""A bundle's files are hashed once: a later start trusts the checksum it remembers while the file's size, mtime and
ctime are unchanged, and hashes again (and refuses) a file changed since, even one of the same size."""

from __future__ import annotations

import pytest

from distilbench.core.console import DistilbenchError
from distilbench.runtime import bundle


def manifest_of(directory) -> dict:
    return {
        "files": {
            item.name: {"bytes": item.stat().st_size, "sha256": bundle.file_sha256(item)}
            for item in directory.iterdir()
        }
    }


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "bundle"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"weights" * 1000)
    info = manifest_of(model)
    bundle.verify_bundle(model, info)  # hashed once, remembered

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(bundle, "file_sha256", no_hashing)
    bundle.verify_bundle(model, info)  # unchanged: trusted
    (model / "model.onnx").write_bytes(b"WEIGHTS" * 1000)  # same size, other bytes
    monkeypatch.undo()
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DistilbenchError, match="differs from the file exported"):
        bundle.verify_bundle(model, info)
