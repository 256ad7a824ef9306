"""`distilbench predict --engine ray`: bulk predictions on a Ray cluster, with Ray Data.

Ray Data reads the input (one file, a directory or a glob, on any filesystem Ray reads), a pool of actors
runs the model with `map_batches` (each loads the checkpoint once, in the backend `auto` chooses on its node;
one GPU each where the cluster has GPUs), and Ray writes Parquet or JSON lines files to an output directory.
Records are local predict's (`row`, `label`/`labels`, `probabilities`, plus `file` for a directory or a
glob); `row` is the row's 0-based number in its file, as local predict numbers it, so the outputs join.

An actor that dies is restarted by Ray and its unfinished batches run again; a batch's records reach the
writer once, and the rows written are counted against the rows read before the output is committed: a
local output directory appears whole (renamed from OUTPUT.partial/), an output URI gets `_SUCCESS` last.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from distilbench.core.console import DistilbenchError, say, warn
from distilbench.runtime.options import InferenceOptions

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("parquet", "jsonl")
INSTALL_HINT = "pip install 'distilbench[ray]'"
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
GLOB_CHARACTERS = ("*", "?", "[")
SUCCESS = "_SUCCESS"
LOCK = ".lock"


def require_ray() -> None:
    """One line, instead of an ImportError, where the [ray] extra is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise DistilbenchError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT}") from None


def input_paths(source: str, text_column: str) -> tuple[str | list[str], bool]:
    """What Ray Data is to read, and whether it is several files (a directory or a glob: records then carry
    `file`). A local input is listed here (a directory recursively, sorted, without names that start with '.'
    or '_', as Ray lists) and its first file's first row is read, so that a wrong --text-column or an unreadable
    file ends in one line before Ray starts; an input URI is listed by Ray."""
    from distilbench.data import readers
    from distilbench.runtime.ray_workers import INPUT_SUFFIXES

    kinds = ", ".join(INPUT_SUFFIXES)
    if source == "-":
        raise DistilbenchError(
            "--engine ray reads files, not stdin: pass --input FILE, DIRECTORY or a glob such as 'texts/*.parquet'"
        )
    is_glob = any(character in source for character in GLOB_CHARACTERS)
    if URI.match(source):
        return _uri_paths(source, is_glob, kinds)
    path = Path(source).expanduser()
    if is_glob:
        files = [Path(p).resolve() for p in sorted(glob.glob(str(path), recursive=True)) if os.path.isfile(p)]
    elif not path.exists():
        raise DistilbenchError(f"input not found: {path}. Pass a file, a directory or a glob.")
    elif path.is_dir():
        files = sorted(
            p.resolve()
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
    else:
        if path.suffix.lower() not in INPUT_SUFFIXES:
            raise DistilbenchError(f"unsupported file type '{path.suffix or '(none)'}' for {path}; supported: {kinds}")
        files = [path.resolve()]
    files = [p for p in files if p.suffix.lower() in INPUT_SUFFIXES]
    if not files:
        raise DistilbenchError(f"no input files ({kinds}) {'match' if is_glob else 'in'} {source}")
    next(readers.iter_texts(str(files[0]), text_column, 1), None)
    several = is_glob or path.is_dir()
    return ([str(p) for p in files] if several else str(files[0])), several


def _uri_paths(source: str, is_glob: bool, kinds: str) -> tuple[str | list[str], bool]:
    """An input URI (s3://, gs://, hdfs://, file:// ...): a glob expanded with fsspec, else as it is."""
    from distilbench.runtime.ray_workers import INPUT_SUFFIXES

    if is_glob:
        import fsspec

        filesystem, pattern = fsspec.core.url_to_fs(source)
        matches = [
            filesystem.unstrip_protocol(p)
            for p in sorted(filesystem.glob(pattern))
            if filesystem.isfile(p) and Path(p).suffix.lower() in INPUT_SUFFIXES
        ]
        if not matches:
            raise DistilbenchError(f"no input files ({kinds}) match {source}")
        return matches, True
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(source)
        info = filesystem.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise DistilbenchError(f"cannot read {source}: {exc}") from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DistilbenchError(f"input not found: {source}")
    return source, info.type == pyarrow.fs.FileType.Directory


class OutputDirectory:
    """Where Ray writes: for a local path, OUTPUT.partial/ (locked), renamed to OUTPUT once complete; for a
    URI, the directory itself, marked complete by an empty `_SUCCESS` file written last."""

    def __init__(self, output: str):
        import pyarrow.fs

        self.uri = bool(URI.match(output))
        self.lock = None
        if self.uri:
            self.filesystem, self.path = pyarrow.fs.FileSystem.from_uri(output)
            info = self.filesystem.get_file_info(self.path)
            if info.type == pyarrow.fs.FileType.File or (
                info.type == pyarrow.fs.FileType.Directory
                and self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.path))
            ):
                raise DistilbenchError(f"{output} already exists: choose another --output, or delete it")
            self.final = self.writing = output
            return
        self.filesystem = pyarrow.fs.LocalFileSystem()
        self.final = Path(output).expanduser().resolve()
        if self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
            raise DistilbenchError(f"{self.final} already exists: choose another --output, or delete it")
        partial = self.final.with_name(self.final.name + ".partial")
        try:
            partial.mkdir(parents=True, exist_ok=True)
            self.lock = open(partial / LOCK, "a+", encoding="utf-8")
        except OSError as exc:
            raise DistilbenchError(f"cannot write the output {self.final}: {exc.strerror or exc}") from None
        import fcntl

        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.close()
            raise DistilbenchError(
                f"{partial} is in use by another distilbench predict writing the same output; "
                "wait for it to end or choose another --output"
            ) from None
        stale = [p for p in partial.iterdir() if p.name != LOCK]
        if stale:
            warn(f"removing {len(stale)} files of an unfinished earlier run from {partial}")
            for path in stale:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.writing = str(partial)
        self.path = str(partial)

    def rows(self, fmt: str) -> int:
        """Rows in the files written (Parquet: from the footers; JSON lines: lines)."""
        import pyarrow.dataset
        import pyarrow.fs

        if fmt == "parquet":
            return pyarrow.dataset.dataset(self.path, filesystem=self.filesystem, format="parquet").count_rows()
        selector = pyarrow.fs.FileSelector(self.path, recursive=True)
        count = 0
        for info in self.filesystem.get_file_info(selector):
            if info.type == pyarrow.fs.FileType.File and not info.base_name.startswith((".", "_")):
                with self.filesystem.open_input_stream(info.path) as stream:
                    while block := stream.read(1 << 24):
                        count += block.count(b"\n")
        return count

    def commit(self) -> None:
        if self.uri:
            with self.filesystem.open_output_stream(f"{self.path}/{SUCCESS}"):
                pass
            return
        from distilbench.runs import commit_rename, fsync_tree

        partial = Path(self.writing)
        fsync_tree(partial)  # every file Ray wrote, flushed before the rename that commits them
        (partial / LOCK).unlink()
        commit_rename(partial, self.final)
        self.close()

    def discard(self) -> None:
        """After a failure: nothing that looks like output is left (a URI's files stay, without _SUCCESS)."""
        if not self.uri:
            shutil.rmtree(self.writing, ignore_errors=True)
        self.close()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def start_ray(address: str | None, progress: bool) -> float:
    """Connect to the cluster at `address` (or $RAY_ADDRESS), else start a Ray instance of this command's own
    on this machine (never one that `ray start` left running here). Returns the seconds it took."""
    import ray
    from ray.data import DataContext

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    host_port = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if host_port:  # ray.init retries an unreachable address for many minutes: fail in seconds instead
        import socket

        try:
            socket.create_connection((host_port.group(1), int(host_port.group(2))), timeout=10).close()
        except OSError as exc:
            raise DistilbenchError(
                f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): is "
                "`ray start --head` running there, and is the port open?"
            ) from None
    started = time.perf_counter()
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    except Exception as exc:  # noqa: BLE001 - Ray raises bare Exceptions, e.g. a raylet slow to start
        where = "a local Ray instance" if address == "local" else f"to the Ray cluster at {address}"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistilbenchError(f"could not {'start' if address == 'local' else 'connect'} {where}: {reason}") from None
    context = DataContext.get_current()
    context.enable_progress_bars = progress
    if not progress:  # Ray Data says at WARNING that its bars are off, and logs its plan at INFO
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    return time.perf_counter() - started


def pool_size(actors: int | None, cpus_per_actor: float, device: str) -> tuple[int, float]:
    """Actors and GPUs per actor: one GPU each where the cluster has GPUs (default: one actor per GPU), else
    CPUs (default: as many actors as the cluster's CPUs hold at --cpus-per-actor each)."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    if device == "cuda" and not gpus:
        raise DistilbenchError("--device cuda: the Ray cluster has no GPUs")
    if gpus:
        if actors and actors > gpus:
            warn(
                f"--actors {actors}: the Ray cluster has {gpus} GPUs now; the actors beyond them wait for more "
                "(an autoscaling cluster adds nodes)"
            )
        return actors or gpus, 1.0
    cpus = resources.get("CPU", 0)
    if cpus < cpus_per_actor:
        raise DistilbenchError(f"the Ray cluster has {cpus:g} CPUs, fewer than --cpus-per-actor {cpus_per_actor:g}")
    if actors and actors * cpus_per_actor > cpus:
        warn(
            f"--actors {actors} x --cpus-per-actor {cpus_per_actor:g}: the Ray cluster has {cpus:g} CPUs now; the "
            "actors beyond them wait for more (an autoscaling cluster adds nodes)"
        )
    return actors or max(1, int(cpus // cpus_per_actor)), 0.0


def unwrap(exc: BaseException) -> DistilbenchError | None:
    """The DistilbenchError a Ray task or actor raised, out of the errors Ray wraps it in (or None). Its
    message is its first line: Ray appends notes about retries to the original exception's message."""
    from ray.exceptions import RayError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        # Ray's RayTaskError(DataError) is a subclass of both: skip the wrapper, keep the user's error and its kind
        if isinstance(exc, DistilbenchError) and not isinstance(exc, RayError):
            message = str(exc.args[0]) if exc.args else str(exc)
            return type(exc)(message.strip().splitlines()[0] if message.strip() else message)
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return None


def actor_deaths(summary: dict, pool: int) -> tuple[int, int]:
    """(actors that died, restarts) from the run tally's summary and Ray's own count of restarts
    (`restarts_counted_by_ray`, None where unknown): every actor process that began to start beyond the pool is
    a restart (a short run can end before all of the pool starts), and an actor that died in a batch left it
    started and never finished; a restart whose model was still loading when the run ended counts too, and so
    does one that Ray had not begun when the run ended (an actor killed while idle), which only Ray's count
    shows."""
    restarts = max(0, summary["actors_starting"] - pool, summary.get("restarts_counted_by_ray") or 0)
    return max(restarts, summary["actors_died_in_a_batch"]), restarts


@dataclass(frozen=True)
class RayPoolOptions:
    """The cluster and its pool of predicting actors: `address` (None: $RAY_ADDRESS, else a local instance of
    this command's own), `actors` (None: one per GPU, else as many as the CPUs hold) and the CPUs each reserves
    and uses as threads."""

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0

    def validate(self) -> "RayPoolOptions":
        if self.actors is not None and self.actors < 1:
            raise DistilbenchError(f"--actors must be 1 or more, not {self.actors}")
        if self.cpus_per_actor <= 0:
            raise DistilbenchError(f"--cpus-per-actor must be more than 0, not {self.cpus_per_actor:g}")
        return self


@dataclass(frozen=True)
class RayJob:
    """One run on the cluster: the checkpoint (`key`: its cache key), the input files (`several`: records carry
    `file`), the output directory and every option."""

    model_dir: str
    key: str
    paths: str | list[str]
    several: bool
    out: OutputDirectory
    inference: InferenceOptions
    pool: RayPoolOptions
    text_column: str
    chunk_rows: int
    output_format: str
    progress: bool


@dataclass
class RayOutcome:
    """What a finished run reports: rows written, the tally's summary, the pool's size, the cluster's nodes, the
    seconds from the first read to the last write, and the seconds Ray took to start."""

    rows: int
    summary: dict
    pool: int
    nodes: int
    seconds: float
    ray_start_s: float = 0.0


def predict_on_ray(
    model_dir: str,
    source: str,
    output: str | None,
    *,
    inference: InferenceOptions | None = None,
    text_column: str = "text",
    chunk_rows: int = 4096,
    output_format: str = "parquet",
    pool: RayPoolOptions | None = None,
    progress: bool = True,
) -> int:
    """Predict every text of `source` on a Ray cluster into the directory `output`; returns the rows written."""
    from distilbench.core.cache import checkpoint_key
    from distilbench.runtime.onnx_backend import check_backend
    from distilbench.runtime.predict import model_task_labels

    inference, pool = inference or InferenceOptions(), pool or RayPoolOptions()
    check_options(output, inference, chunk_rows, output_format, pool)
    require_ray()
    model_task_labels(model_dir)  # a checkpoint, bundle or light model, checked before Ray starts (without torch)
    inference = inference.with_backend(check_backend(inference.backend, model_dir))
    key = checkpoint_key(model_dir)
    paths, several = input_paths(source, text_column)
    out = OutputDirectory(output)
    job = RayJob(model_dir, key, paths, several, out, inference, pool, text_column, chunk_rows, output_format, progress)
    committed = False
    try:
        outcome = run_job(job)
        out.commit()
        committed = True
    finally:
        if not committed:
            out.discard()
    say_done(outcome, out.final)
    return outcome.rows


def check_options(
    output: str | None, inference: InferenceOptions, chunk_rows: int, output_format: str, pool: RayPoolOptions
) -> None:
    """Fail in one line, before Ray is imported, on options that cannot work."""
    if not output:
        raise DistilbenchError("--engine ray writes to a directory: pass --output DIRECTORY")
    if output_format not in OUTPUT_FORMATS:
        raise DistilbenchError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, not {output_format}")
    if chunk_rows < 1:
        raise DistilbenchError(f"--chunk-rows must be 1 or more, not {chunk_rows}")
    pool.validate()
    if inference.device not in ("auto", "cpu", "cuda"):
        raise DistilbenchError(
            f"--device with --engine ray is auto, cpu or cuda (Ray places actors on GPUs), not {inference.device}"
        )
    inference.choice.validate()


def run_job(job: RayJob) -> RayOutcome:
    """Start (or connect to) Ray, run the job, and shut Ray down however the run ends."""
    import ray

    from distilbench.runtime import ray_workers

    ray_start_s = start_ray(job.pool.address, job.progress)
    try:
        outcome = _run(ray, ray_workers, job)
    finally:
        ray.shutdown()
    outcome.ray_start_s = ray_start_s
    return outcome


def say_done(outcome: RayOutcome, final) -> None:
    """The run's one line (backends, actors, nodes, speed), and one more where actors died and Ray restarted
    them."""
    summary, pool, count = outcome.summary, outcome.pool, outcome.rows
    started = len(summary["actors"])
    died, restarts = actor_deaths(summary, pool)
    by_backend = Counter(actor["backend"] for actor in summary["actors"][:pool] or summary["actors"])
    backends = ", ".join(f"{name} x{n}" if len(by_backend) > 1 else name for name, n in by_backend.items())
    late = f" ({started} started before the input ran out)" if started < pool else ""
    nodes = outcome.nodes
    say(
        f"{count} predictions ({backends}, {pool} actor{'s' if pool > 1 else ''}{late} on a cluster of {nodes} node"
        f"{'s' if nodes > 1 else ''}, {count / max(outcome.seconds, 1e-9):.0f} rows/s after "
        f"{outcome.ray_start_s:.1f} s to start Ray) -> {final}"
    )
    if died:
        again = summary["predicted"] - count
        cut = summary["batches_cut_short"]
        say(
            f"{died} actor{'s' if died > 1 else ''} died during the run: Ray restarted "
            f"{'them' if died > 1 else 'it'} ({restarts} restart{'' if restarts == 1 else 's'}) and ran "
            f"the lost batches again ({cut} cut short, {again} rows predicted twice); each of the {count} rows "
            "read is written once"
        )


def _run(ray, ray_workers, job: RayJob) -> RayOutcome:
    """Read, predict and write on the cluster, then check that every row read was written once."""
    pool, gpus_per_actor = pool_size(job.pool.actors, job.pool.cpus_per_actor, job.inference.device)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    tally = ray.remote(num_cpus=0)(ray_workers.RunTally).remote()
    try:
        source = read_input(ray, ray_workers, job, tally)
        constructor = actor_arguments(ray, ray_workers, job, guard_texts(job, source), tally)
        started = time.perf_counter()
        predicted = source.map_batches(
            ray_workers.RayPredictor,
            batch_size=job.chunk_rows,
            batch_format="pyarrow",
            zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=job.pool.cpus_per_actor,
            num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs=constructor,
        )
        write_output(predicted, job)
        seconds = time.perf_counter() - started
        summary = ray.get(tally.summary.remote())
        summary["restarts_counted_by_ray"] = ray_workers.restarts_counted_by_ray()
    except Exception as exc:
        error = ray_error(ray, exc)
        if error is None:
            raise
        raise error from None
    finally:
        ray.kill(tally)
    return RayOutcome(check_rows(job, summary), summary, pool, nodes, seconds)


def read_input(ray, ray_workers, job: RayJob, tally):
    """The input as a Ray Dataset of numbered texts (reading reserves no CPU: it is light next to the model,
    whose actors hold the CPUs)."""
    return ray.data.read_datasource(
        ray_workers.TextFiles(
            job.paths, text_column=job.text_column, block_rows=job.chunk_rows, tally=tally, with_file=job.several
        ),
        num_cpus=0,
    )


def guard_texts(job: RayJob, source) -> tuple | None:
    """For auto, the texts each node's choice is guarded on: the run's validation split, else the input's first
    texts; None for a named backend."""
    if job.inference.backend != "auto":  # a named backend, or a bundle's own: no torch imported for it
        return None
    from distilbench.runtime.auto import CALIBRATION_TEXTS, validation_texts

    guard = validation_texts(job.model_dir)
    if guard is None:
        held = source.limit(CALIBRATION_TEXTS).take_all()
        guard = ([row["text"] for row in held], None, "held sample (input)")
    return guard


def actor_arguments(ray, ray_workers, job: RayJob, guard, tally) -> dict:
    """What each RayPredictor is built with; the checkpoint's files travel nested in the object store, fetched
    only by nodes that do not see the checkpoint itself."""
    return dict(
        model_dir=str(job.model_dir),
        key=job.key,
        payload=[ray.put(ray_workers.checkpoint_files(job.model_dir))],
        inference=job.inference,
        guard=guard,
        threads=max(1, int(job.pool.cpus_per_actor)),
        tally=tally,
        with_file=job.several,
    )


def write_output(predicted, job: RayJob) -> None:
    """Run the pipeline by writing its records (writing reserves no CPU either)."""
    write_args = dict(ray_remote_args={"num_cpus": 0}, filesystem=job.out.filesystem)
    if job.output_format == "parquet":
        predicted.write_parquet(job.out.path, **write_args)
    else:
        predicted.write_json(job.out.path, force_ascii=False, **write_args)


def ray_error(ray, exc: Exception) -> DistilbenchError | None:
    """The error to raise for a failed run: the user's own error out of Ray's wrappers, or one line for the
    cluster's trouble; None where the exception itself is to be raised (a bug in a task)."""
    error = unwrap(exc)
    if error is not None:
        return error
    if isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError):
        # the cluster's trouble (workers that cannot start, a node or an object lost), not a bug in a task
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DistilbenchError(f"Ray could not finish the run: {reason}")
    return None


def check_rows(job: RayJob, summary: dict) -> int:
    """The rows written, checked against the rows read: a difference means a lost or doubled batch."""
    read = sum(summary["files"].values())
    written = job.out.rows(job.output_format)
    if written != read:
        raise DistilbenchError(
            f"{written} rows were written but {read} were read: the output is incomplete or "
            "holds duplicates and was not kept; run the command again"
        )
    return written
