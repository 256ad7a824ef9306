"""What runs on the Ray cluster for `predict --engine ray`: the input read by distilbench's own reader with
each row numbered within its file, the predicting actors, and a tally of what was read and predicted.

Imports Ray; `ray_predict` imports this module only after checking that Ray is installed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.fs
import ray
from ray.data.datasource import FileBasedDatasource

from distilbench.data import readers
from distilbench.runtime.options import InferenceOptions

INPUT_SUFFIXES = readers.TEXT_LINE_EXTENSIONS + readers.SUPPORTED_EXTENSIONS  # what local predict reads


class TextFiles(FileBasedDatasource):
    """Ray Data reads the files (listing, any filesystem Ray reads, read tasks spread over the cluster and
    retried); each file is parsed by readers.iter_texts, the reader of local predict, so that `row` is the
    0-based row of the file exactly as local predict numbers it. A file on another filesystem than the local
    one is first copied to the node's temporary folder (the reader needs a local file)."""

    def __init__(self, paths, *, text_column: str, block_rows: int, tally, with_file: bool, **kwargs):
        super().__init__(paths, file_extensions=[suffix.lstrip(".") for suffix in INPUT_SUFFIXES], **kwargs)
        self.text_column = text_column
        self.block_rows = block_rows
        self.tally = tally
        self.with_file = with_file

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        """The file's texts in blocks of `block_rows`, each row with its number in the file. The same file
        gives the same blocks on every attempt (Ray replays a read after an I/O error, skipping blocks it had)."""
        with self._local_copy(f, path) as local:
            first = 0
            for texts in readers.iter_texts(str(local), self.text_column, self.block_rows):
                columns = {
                    "row": pa.array(range(first, first + len(texts)), pa.int64()),
                    "text": pa.array(texts, pa.string()),
                }
                if self.with_file:
                    columns["file"] = pa.array([path] * len(texts), pa.string())
                yield pa.table(columns)
                first += len(texts)
        ray.get(self.tally.file_read.remote(path, first))  # only once the whole file is read

    @contextmanager
    def _local_copy(self, f: pa.NativeFile, path: str):
        filesystem = self._filesystem.unwrap() if hasattr(self._filesystem, "unwrap") else self._filesystem
        if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
            yield Path(path)
            return
        folder = tempfile.mkdtemp(prefix="distilbench-ray-input-")
        try:
            local = Path(folder) / Path(path).name
            with open(local, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
            yield local
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class RunTally:
    """One small actor per run: the rows of each file read whole, the actor processes that began to start (a
    restart begins one more, counted at once: one that would only count once its model is loaded can miss a run
    that ends first), the actors started, and each actor's batches started and finished: an actor that dies
    leaves a batch started and never finished, which Ray runs again elsewhere (its rows are then predicted
    twice, written once)."""

    def __init__(self):
        self.files: dict[str, int] = {}
        self.starting: list[int] = []
        self.actors: list[dict] = []
        self.started: dict[int, int] = {}
        self.finished: dict[int, int] = {}
        self.predicted = 0

    def file_read(self, path: str, rows: int) -> None:
        self.files[path] = rows  # a file read again gives the same rows

    def actor_starting(self, pid: int) -> None:
        self.starting.append(pid)

    def actor_started(self, info: dict) -> None:
        self.actors.append(info)

    def batch_started(self, actor: int) -> None:
        self.started[actor] = self.started.get(actor, 0) + 1

    def batch_finished(self, actor: int, rows: int) -> None:
        self.finished[actor] = self.finished.get(actor, 0) + 1
        self.predicted += rows

    def summary(self) -> dict:
        cut_short = {
            actor: n - self.finished.get(actor, 0)
            for actor, n in self.started.items()
            if n > self.finished.get(actor, 0)
        }
        return {
            "files": dict(self.files),
            "actors": list(self.actors),
            "actors_starting": len(self.starting),
            "predicted": self.predicted,
            "batches_cut_short": sum(cut_short.values()),
            "actors_died_in_a_batch": len(cut_short),
        }


def restarts_counted_by_ray() -> int | None:
    """Restarts of this job's actors as Ray's control store counts them. Ray counts a restart the moment an
    actor process dies, even one killed while idle between batches whose new process has not begun when the run
    ends: such a death leaves no trace in the tally. None where this Ray does not expose its actor table (it is
    read through `ray._private.state`, because the public state API needs the dashboard)."""
    try:
        from ray._private import state

        table = state.actors()
        job = ray.get_runtime_context().get_job_id()
        return sum(int(actor.get("NumRestarts", 0)) for actor in table.values() if actor.get("JobID") == job)
    except Exception:  # noqa: BLE001 - a private API: any change in it leaves the tally's own count
        return None


@contextmanager
def exclusive(lock_path: Path):
    """An exclusive flock on `lock_path` (released by the kernel however the process ends)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def node_checkpoint(model_dir: str, key: str, payload: list) -> str:
    """The checkpoint on this node: `model_dir` itself where the node sees it unchanged (this machine, a
    shared filesystem), else a copy from the object store in the node's temporary folder, written once per
    node and checkpoint (with the original modification times, so its cache key is the original's)."""
    from distilbench.core.cache import checkpoint_key
    from distilbench.core.console import DistilbenchError

    def same(directory: Path) -> bool:
        try:
            return directory.is_dir() and checkpoint_key(directory) == key
        except DistilbenchError:
            return False

    if same(Path(model_dir)):
        return model_dir
    root = Path(tempfile.gettempdir()) / "distilbench-ray-checkpoints"
    target = root / key
    with exclusive(root / f"{key}.lock"):
        if not same(target):
            shutil.rmtree(target, ignore_errors=True)
            partial = root / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            for name, (data, mtime_ns) in ray.get(payload[0]).items():
                path = partial / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                os.utime(path, ns=(mtime_ns, mtime_ns))
            partial.rename(target)
    return str(target)


def checkpoint_files(model_dir: str) -> dict[str, tuple[bytes, int]]:
    """Every file of a checkpoint directory with its modification time, to send to nodes that lack it."""
    root = Path(model_dir)
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class RayPredictor:
    """One actor of the pool: loads the checkpoint once in the backend `auto` chooses on its node (or the one
    asked for), then turns batches of numbered texts into prediction records."""

    def __init__(
        self,
        *,
        model_dir: str,
        key: str,
        payload: list,
        inference: InferenceOptions,
        guard,
        threads: int,
        tally,
        with_file: bool,
    ):
        ray.get(tally.actor_starting.remote(os.getpid()))  # first: a restart counts even if the run ends first
        from distilbench.core.console import quiet_libraries
        from distilbench.runtime.predict import ChunkPredictor

        local_dir = node_checkpoint(model_dir, key, payload)
        use_threads(threads, local_dir)  # before the machine probe: the backend choice depends on threads
        quiet_libraries(verbose=False)
        if inference.device == "auto":
            inference = replace(inference, device="cuda" if ray.get_gpu_ids() else "cpu")
        inference = inference.with_backend(node_backend(local_dir, inference, guard))
        self.work_dir = tempfile.mkdtemp(prefix="distilbench-ray-predict-")
        self.predictor = ChunkPredictor(
            local_dir, inference.backend, inference.device, inference.batch_size, inference.max_length, self.work_dir
        )
        self.tally = tally
        self.with_file = with_file
        self.actor = os.getpid()  # a restarted actor is a new process
        ray.get(tally.actor_started.remote(self.description(inference, threads)))

    def description(self, inference: InferenceOptions, threads: int) -> dict:
        """This actor as the run's summary lists it: where it runs, and with what."""
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "pid": self.actor,
            "backend": inference.backend,
            "device": inference.device,
            "threads": threads,
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        ray.get(self.tally.batch_started.remote(self.actor))  # recorded before the work, which a kill may cut
        rows = batch.column("row").to_pylist()
        records = self.predictor.predictions(batch.column("text").to_pylist())
        table = pa.Table.from_pylist(
            [{"row": row, **record} for row, record in zip(rows, records)], schema=self.predictor.schema
        )
        if self.with_file:
            table = table.add_column(1, "file", batch.column("file"))
        ray.get(self.tally.batch_finished.remote(self.actor, len(rows)))
        return table

    def __del__(self):
        shutil.rmtree(getattr(self, "work_dir", ""), ignore_errors=True)


def use_threads(threads: int, model_dir: str) -> None:
    """This actor's intra-op threads: OMP_NUM_THREADS, which ONNX Runtime and OpenVINO read
    (onnx_backend.session_threads), and for a checkpoint torch's own count. An exported bundle or a tfidf or
    static model never imports torch here, so a runtime install (with the [ray] extra) runs it."""
    from distilbench.runtime.bundle import is_exported_model
    from distilbench.runtime.light import is_text_model

    os.environ["OMP_NUM_THREADS"] = str(threads)
    if not (is_exported_model(model_dir) or is_text_model(model_dir)):
        import torch

        torch.set_num_threads(threads)


def node_backend(model_dir: str, inference: InferenceOptions, guard) -> str:
    """`inference.backend`, or for 'auto' the choice for this node: cached for this checkpoint and machine, else
    calibrated here on the driver's guard texts, by one actor of the node while the others wait for it."""
    if inference.backend != "auto":
        return inference.backend
    from distilbench.core.cache import cache_dir
    from distilbench.runtime.auto import resolve_backend

    with exclusive(cache_dir() / "backend-choice" / ".ray-calibration.lock"):
        name, _ = resolve_backend(
            model_dir,
            "auto",
            device=inference.device,
            batch_size=inference.batch_size,
            max_length=inference.max_length,
            guard=guard,
            settings=inference.choice,
            show=False,
        )
    return name
