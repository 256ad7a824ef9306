"""The run directory: where each stage reads and writes, and atomic writes of results."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    write_text_atomic(path, frame.to_csv(index=False))


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def model_slug(spec: str) -> str:
    """A directory name for a model spec: 'student:minilm-l6' -> 'student-minilm-l6'."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.strip().rstrip("/")).strip("-.")
    return slug or "model"


class RunDir:
    """Paths of one run directory (the layout is documented in the README)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def model_dir(self, slug: str) -> Path:
        return self.root / "models" / slug

    def epoch_dir(self, slug: str, epoch: int) -> Path:
        return self.model_dir(slug) / f"epoch-{epoch}"

    def best_dir(self, slug: str) -> Path:
        return self.model_dir(slug) / "best"

    def results(self, slug: str) -> Path:
        return self.root / "results" / slug

    @property
    def comparison_json(self) -> Path:
        return self.root / "comparison.json"

    @property
    def comparison_csv(self) -> Path:
        return self.root / "comparison.csv"
