"""The run directory: where each stage reads and writes, and atomic writes of results."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .console import DistilbenchError

LOCK_NAME = ".lock"


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


def lock_run_dir(root: Path):
    """Hold an exclusive lock on a run directory (flock on RUN/.lock) until closed or the process ends,
    however it ends (the kernel drops the lock on kill -9): a second run cannot write into the same one."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_NAME, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown process"
        handle.close()
        raise DistilbenchError(f"{root} is in use by another distilbench run ({owner}); wait for it to end "
                               f"or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def check_free_space(directory: Path, needed_bytes: float, what: str) -> None:
    """Fail before long work starts when the disk cannot hold what it will write."""
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise DistilbenchError(f"{what} needs about {needed_bytes / 1e9:.2f} GB in {directory}, but only "
                               f"{free / 1e9:.2f} GB are free; free some space or choose another --out")


class RunDir:
    """Paths of one run directory (the layout is documented in the README); as a context manager it
    holds the directory's lock."""

    def __init__(self, root: str | Path, lock=None):
        self.root = Path(root)
        self.lock = lock

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.close()  # closing the file releases the flock
            self.lock = None

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
