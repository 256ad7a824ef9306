"""Where distilbench keeps what it builds once and reuses (ONNX graphs), and the key of a checkpoint's state.

The cache lives in `$DISTILBENCH_CACHE`, else `$XDG_CACHE_HOME/distilbench`, else `~/.cache/distilbench`.
Everything in it can be rebuilt, so deleting it (or a part of it) is always safe.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

from distilbench.core.console import DistilbenchError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def cache_dir() -> Path:
    """The distilbench cache directory, created on demand."""
    root = os.environ.get("DISTILBENCH_CACHE")
    if root:
        path = Path(root).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        path = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "distilbench"
    else:
        path = Path.home() / ".cache" / "distilbench"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DistilbenchError(
            f"cannot create the cache directory {path}: {exc.strerror or exc}; "
            "set DISTILBENCH_CACHE to a writable directory"
        ) from None
    return path


@contextmanager
def exclusive_lock(path: Path):
    """An exclusive flock on `path` (released by the kernel however the process ends); none where the
    platform has no flock: an atomic rename alone then keeps cache entries whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def checkpoint_key(directory: str | Path) -> str:
    """A short hash of a checkpoint's state: config.json's content and each weight file's name, size and
    modification time (the weights themselves are not read, so this is fast for any model size).

    Saving the checkpoint again (new weights, a changed config, thresholds stored) changes the key.
    """
    directory = Path(directory)
    config = directory / "config.json"
    try:
        digest = hashlib.sha256(config.read_bytes())
    except OSError:
        raise DistilbenchError(f"{directory} is not a saved model directory (no readable config.json)") from None
    for path in sorted(directory.iterdir()):
        if path.suffix in WEIGHT_SUFFIXES and path.is_file():
            stat = path.stat()
            digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
