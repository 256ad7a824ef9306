"""The run directory: where each stage reads and writes, and atomic writes of results."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from distilbench.core.console import RunDirError

if TYPE_CHECKING:  # only named: the runtime path (a bundle's predict) writes its results without loading pandas
    import pandas as pd

LOCK_NAME = ".lock"
RUN_MARKER = ".distilbench-run"  # written when a run directory is created: what --overwrite may replace
# Everything distilbench writes at the top of a run directory; --overwrite deletes these and nothing else.
RUN_ENTRIES = frozenset(
    {
        "config.yaml",
        "data",
        "models",
        "results",
        "cache",
        "comparison.json",
        "comparison.csv",
        "speed.json",
        "bench.json",
        "plots",
        "report.html",
        "report.md",
        LOCK_NAME,
        RUN_MARKER,
        ".write-test",
        "tune.db",
        "tune.db-journal",
        "trials",
        "trials.csv",
        "tune.json",
        "tune.png",
        "best.yaml",
    }
)  # tune's
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")  # an atomic write cut short by kill -9


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk (it survives a power cut once this returns, if the disk honours fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (a new, renamed or deleted name in it) to the disk. A filesystem that cannot
    sync folders (EINVAL, some network and FUSE filesystems) is skipped: nothing more can be done there."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file under `directory`, then every folder, deepest first (a checkpoint before its rename)."""
    directory = Path(directory)
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not path.is_symlink():
            fsync_file(path)
        elif path.is_dir() and not path.is_symlink():
            fsync_dir(path)
    fsync_dir(directory)


def commit_rename(source: Path, target: Path) -> None:
    """The commit point of every result: `source` (a file or folder already flushed with fsync_file/fsync_tree)
    renamed to `target`, then the folder holding it flushed, so the rename itself survives a power cut."""
    os.replace(source, target)
    fsync_dir(Path(target).parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to the disk, rename it, flush the folder: readers never
    see half a file, and once this returns the file survives a crash or a power cut (on a filesystem that
    honours fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        commit_rename(Path(tmp), path)
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
        raise RunDirError(
            f"{root} is in use by another distilbench run ({owner}); wait for it to end or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def check_free_space(directory: Path, needed_bytes: float, what: str) -> None:
    """Fail before long work starts when the disk cannot hold what it will write."""
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise RunDirError(
            f"{what} needs about {needed_bytes / 1e9:.2f} GB in {directory}, but only "
            f"{free / 1e9:.2f} GB are free; free some space or choose another --out"
        )


def _own_entry(name: str) -> bool:
    """Whether distilbench writes a file or folder of this name at the top of a run directory."""
    match = _TEMPORARY.fullmatch(name)
    return name in RUN_ENTRIES or (match is not None and match["name"] in RUN_ENTRIES)


def _shown(names: list[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(name) if not name.isprintable() else name for name in names[:limit]) + more


def inspect_run_dir(root: Path) -> tuple[bool, list[str], list[str]]:
    """(is a run, its entries, the entries distilbench did not write). A run carries RUN_MARKER; a directory
    from before the marker counts when it has config.yaml and nothing but distilbench's own entries."""
    entries = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME) if root.is_dir() else []
    foreign = [name for name in entries if not _own_entry(name)]
    marked = (root / RUN_MARKER).is_file()
    return marked or ((root / "config.yaml").is_file() and not foreign), entries, foreign


def require_run(out: str) -> None:
    """--resume: `out` must be a distilbench run (checked before its config.yaml is read)."""
    root = Path(out)
    is_run, entries, foreign = inspect_run_dir(root)
    if not is_run:
        found = f"; it holds {_shown(entries)}" if entries else ""
        raise RunDirError(f"nothing to resume: {out} holds no distilbench run (no {RUN_MARKER} marker){found}")


def check_run_dir(out: str | None, overwrite: bool, resume: bool = False) -> None:
    """Refuse an --out that open_run_dir would refuse, writing nothing (a run checks it, and its input, before it
    creates anything there). A directory that holds anything but a distilbench run is refused, with what it
    holds; a run is kept unless `overwrite` or `resume`."""
    if not out:
        raise RunDirError("no output directory: pass --out RUN_DIR")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory")
    is_run, entries, foreign = inspect_run_dir(root)
    if resume:
        require_run(out)
    elif entries:
        if not is_run:
            raise RunDirError(
                f"--out {out} is not empty and not a distilbench run (no {RUN_MARKER} marker): it holds "
                f"{_shown(entries)}; distilbench writes runs only into a new or empty directory, and "
                f"--overwrite replaces only its own runs. Choose another --out"
            )
        if not overwrite:
            raise RunDirError(
                f"--out {out} already holds files; pass --resume to continue the run there, "
                f"--overwrite to replace it, or choose a new directory"
            )
        if foreign:
            raise RunDirError(
                f"--out {out} holds files distilbench did not write: {_shown(foreign)}; --overwrite replaces only "
                f"a run's own files. Move those away, or choose another --out"
            )


def open_run_dir(out: str | None, overwrite: bool, resume: bool = False) -> RunDir:
    """The run directory, locked and marked as distilbench's: new or empty, replaced (`overwrite`: only what
    distilbench wrote there is deleted), or kept to continue (`resume`). A directory that holds anything else
    is refused, with what it holds, and left untouched (check_run_dir)."""
    root = Path(out or "")
    created = not root.exists()
    check_run_dir(out, overwrite, resume)
    try:
        lock = lock_run_dir(root)
    except OSError as exc:
        raise RunDirError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    try:
        if overwrite and not resume:
            for child in root.iterdir():
                if child.name not in (LOCK_NAME, RUN_MARKER) and _own_entry(child.name):
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        if not (root / RUN_MARKER).is_file():
            from distilbench import __version__

            write_json_atomic(
                root / RUN_MARKER,
                {
                    "distilbench": __version__,
                    "what": "a distilbench run directory: --overwrite may delete what distilbench wrote here",
                },
            )
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        lock.close()
        raise RunDirError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return RunDir(root, lock, started_anew=not resume, created=created)


class RunDir:
    """Paths of one run directory (the layout is documented in the README); as a context manager it
    holds the directory's lock."""

    def __init__(self, root: str | Path, lock=None, started_anew: bool = False, created: bool = False):
        self.root = Path(root)
        self.lock = lock
        self.started_anew = started_anew  # opened new, empty or overwritten (not resumed): discard may empty it
        self.created = created  # the directory did not exist before: discard removes it

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.close()  # closing the file releases the flock
            self.lock = None

    def discard(self) -> None:
        """Undo the start of a run that failed on its input before any result: delete what distilbench wrote here
        (its own entries only) and the directory itself where the run created it, so the corrected command starts
        without --overwrite. A resumed run, or a RunDir not opened by open_run_dir, is left as it is."""
        if not self.started_anew:
            return
        self.__exit__()
        for child in self.root.iterdir() if self.root.is_dir() else []:
            if _own_entry(child.name):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        if self.created:
            try:
                self.root.rmdir()  # only when empty: nothing of anyone else's goes with it
            except OSError:
                pass

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


def checkpoint_name(row: dict) -> str:
    """The folder of a validation row's checkpoint under its model's folder: epoch-<n>, or average-<a>-<b> for
    the average of the weights of epochs a..b (training.evaluate_averages)."""
    return row.get("checkpoint") or f"epoch-{row['epoch']}"


def kept_checkpoint(row: dict) -> str:
    """The folder of the checkpoint a model's row (or training_stats.json) kept and tested; runs from before
    averaged checkpoints have only best_epoch."""
    return row.get("kept") or f"epoch-{row['best_epoch']}"


def describe_checkpoint(name: str) -> str:
    """'epoch 4' for epoch-4, 'average of epochs 2-5' for average-2-5."""
    kind, _, which = name.partition("-")
    return f"epoch {which}" if kind == "epoch" else f"average of epochs {which}"


def save_checkpoint(model, tokenizer, directory: Path) -> None:
    """save_pretrained (safetensors) plus tokenizer, into a temp dir flushed to the disk and renamed at the end."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    fsync_tree(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    commit_rename(tmp, directory)
