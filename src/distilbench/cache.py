"""The user's cache directory: artifacts worth keeping between runs (exported ONNX graphs, backend choices)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "DISTILBENCH_CACHE"


def cache_dir() -> Path:
    """DISTILBENCH_CACHE, else $XDG_CACHE_HOME/distilbench, else ~/.cache/distilbench; created on demand."""
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "distilbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_key(directory: str | Path) -> str:
    """A short hash that changes when a checkpoint does: config.json's content and each weight file's name,
    size and modification time (fast: the weights are not read)."""
    directory = Path(directory).resolve()
    digest = hashlib.sha256(str(directory).encode())
    config = directory / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
