"""`distilbench predict`: texts in (a file or stdin), one prediction per text out, chunk by chunk.

Memory stays flat however large the input: texts are read, predicted and written one chunk at a time.
With --output, every chunk goes to its own file in `<output>.parts/` (written atomically), so an
interrupted run continues with --resume; once every chunk is there they are joined in input order into
the output, which appears whole or not at all. --workers N predicts chunks in N processes (on CUDA
with several GPUs, one per GPU by default); the output keeps the input's order either way.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError, say, warn
from distilbench.data import readers
from distilbench.data.readers import iter_texts
from distilbench.runs import (
    commit_rename,
    fsync_file,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from distilbench.runtime.options import InferenceOptions

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096
OUTPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
INPUT_SUFFIXES = readers.TEXT_LINE_EXTENSIONS + readers.SUPPORTED_EXTENSIONS
MANIFEST = "manifest.json"
LOCK = ".lock"
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker process: enough to keep it busy, bounded memory


@dataclass(frozen=True)
class ChunkOptions:
    """How predict reads and writes its input: the column that holds the texts, texts per chunk (the unit of
    --resume), worker processes (None: one, or one per GPU with --device auto/cuda) and whether to continue an
    interrupted run's output."""

    text_column: str = "text"
    chunk_rows: int = CHUNK_ROWS
    workers: int | None = None
    resume: bool = False


def iter_text_chunks(source: str, text_column: str = "text", chunk_rows: int = CHUNK_ROWS) -> Iterator[list[str]]:
    """Texts in chunks of `chunk_rows` (the last one shorter), never the whole input in memory, read by the
    one reader of every command (readers.iter_texts): chunk i holds input rows i*N..(i+1)*N-1."""
    return iter_texts(source, text_column, chunk_rows)


def check_input(source: str) -> None:
    """Fail early, before a model is loaded or an output is started, on an input that cannot be read."""
    readers.check_input(source, INPUT_SUFFIXES)


def count_rows(source: str) -> int | None:
    """Rows of a Parquet input from its footer (for the progress bar); None where only reading tells."""
    if not source.lower().endswith(".parquet"):
        return None
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(source).metadata.num_rows
    except Exception:  # noqa: BLE001 - a bad file is reported by the reader itself
        return None


def stored_thresholds(config, label_names: list[str]) -> np.ndarray:
    """Per-label decision thresholds saved with a multilabel model (0.5 where none were tuned)."""
    saved = (config.to_dict().get("distilbench") or {}).get("thresholds") or {}
    return np.array([float(saved.get(name, 0.5)) for name in label_names])


def stored_calibration(config) -> dict | None:
    """The probability calibration a checkpoint's (or bundle's) config.json holds, fitted on validation."""
    return (config.to_dict().get("distilbench") or {}).get("calibration")


def predicted_labels(task: str, label_names: list[str], probs: np.ndarray, thresholds: np.ndarray) -> list:
    """The prediction per text: the most probable label (multiclass), or the labels whose probability reaches
    their threshold (multilabel, a list per text). predict, serve and the Python API's Classifier decide here."""
    if task == "multiclass":
        return [label_names[int(row.argmax())] for row in probs]
    return [[n for n, p, t in zip(label_names, row, thresholds) if p >= t] for row in probs]


def prediction_records(task: str, label_names: list[str], probs: np.ndarray, thresholds: np.ndarray) -> list[dict]:
    """One dict per text: the predicted label (multiclass) or labels (multilabel) and every probability."""
    key = "label" if task == "multiclass" else "labels"
    return [
        {key: predicted, "probabilities": {name: round(float(p), 6) for name, p in zip(label_names, row)}}
        for predicted, row in zip(predicted_labels(task, label_names, probs, thresholds), probs)
    ]


def records_schema(task: str, label_names: list[str]):
    """The Parquet schema of the records, fixed up front so every chunk (even one whose multilabel
    predictions are all empty) has the same column types."""
    import pyarrow as pa

    label = ("label", pa.string()) if task == "multiclass" else ("labels", pa.list_(pa.string()))
    probabilities = pa.struct([(name, pa.float64()) for name in label_names])
    return pa.schema([("row", pa.int64()), label, ("probabilities", probabilities)])


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DistilbenchError(f"unsupported output {path}: name it .jsonl (JSON lines) or .parquet")
    return fmt


def jsonl_text(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_chunk(path: Path, records: list[dict], fmt: str, schema=None) -> None:
    """One chunk's records to `path`, atomically: a chunk file that exists is complete."""
    if fmt == "jsonl":
        write_text_atomic(path, jsonl_text(records))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records, schema=schema), sink)
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


class ChunkPredictor:
    """A loaded model in one backend that turns a chunk of texts into prediction records."""

    def __init__(
        self,
        model_dir: str,
        backend: str,
        device: str,
        batch_size: int,
        max_length: int | None,
        work_dir: str | None = None,
    ):
        from distilbench.runtime.bundle import is_exported_model
        from distilbench.runtime.light import is_text_model

        self.batch_size = batch_size
        self.max_length = max_length
        self.text_model = None
        if is_text_model(model_dir):  # tfidf, static, cascade: they take the texts themselves
            self._load_text_model(model_dir)
            return
        if is_exported_model(model_dir):  # an exported bundle: onnxruntime and tokenizers, never torch
            from distilbench.runtime.onnx_backend import load_exported

            self.runtime, exported = load_exported(model_dir, backend)
            self.tokenizer, self.task, self.label_names = exported.tokenizer, exported.task, exported.label_names
            self.config = exported.config
        else:
            from distilbench.runtime.backends import load_model_dir

            loaded = load_model_dir(model_dir, backend, device=device, work_dir=work_dir)
            self.runtime, self.tokenizer, self.task, self.label_names = (
                loaded.backend,
                loaded.tokenizer,
                loaded.task,
                loaded.label_names,
            )
            self.config = loaded.config
        from distilbench.evaluation.calibration import calibrate_thresholds

        self.calibration = stored_calibration(self.config)
        self.thresholds = calibrate_thresholds(
            self.task, stored_thresholds(self.config, self.label_names), self.calibration
        )

    @functools.cached_property
    def schema(self):
        """The Parquet schema of the records (pyarrow, imported only for a Parquet output)."""
        return records_schema(self.task, self.label_names)

    def _load_text_model(self, model_dir: str) -> None:
        from distilbench.runtime.light import load_text_model

        self.text_model = load_text_model(model_dir)
        self.runtime = self.tokenizer = self.config = None
        self.task, self.label_names = self.text_model.task, self.text_model.label_names
        self.calibration = None  # the text model applies its own
        self.thresholds = self.text_model.thresholds

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Probabilities per text and label, through the one inference loop (inference.backend_logits), with
        the calibration fitted on validation applied (it never changes a predicted label)."""
        from distilbench.evaluation.calibration import apply_calibration
        from distilbench.runtime.batching import backend_logits, logits_to_probs

        if self.text_model is not None:
            return self.text_model.probabilities(texts)
        logits, _ = backend_logits(
            self.runtime, self.tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length
        )
        return apply_calibration(self.task, logits_to_probs(self.task, logits), self.calibration)

    def predictions(self, texts: list[str]) -> list[dict]:
        """One record per text: label(s) and every probability."""
        return prediction_records(self.task, self.label_names, self.probabilities(texts), self.thresholds)

    def records(self, first_row: int, texts: list[str]) -> list[dict]:
        """The predictions of a chunk whose first text is input row `first_row`, with their row numbers."""
        return [{"row": first_row + i, **record} for i, record in enumerate(self.predictions(texts))]


def predict_chunk(predictor: ChunkPredictor, first_row: int, texts: list[str]) -> list[dict]:
    """Records for one chunk whose first text is input row `first_row` (0-based)."""
    return predictor.records(first_row, texts)


def process_chunk(
    predictor: ChunkPredictor, first_row: int, texts: list[str], chunk_path: Path | None, fmt: str
) -> tuple[int, str | None]:
    """Predict one chunk; write it to `chunk_path`, or return its JSON lines where there is none (stdout)."""
    records = predict_chunk(predictor, first_row, texts)
    if chunk_path is None:
        return len(records), jsonl_text(records)
    write_chunk(chunk_path, records, fmt, predictor.schema if fmt == "parquet" else None)  # JSON lines need no pyarrow
    return len(records), None


# Worker processes: each loads the model once, then predicts the chunks it is sent.
_worker: dict = {}


def _init_worker(model_dir: str, inference: InferenceOptions, devices, threads: int) -> None:
    """Pool initializer: the model in `inference.backend` on the next device of the queue `devices`. A failure
    is kept and raised by the first task, so the parent sees the real error instead of a broken pool."""
    from distilbench.core.console import quiet_libraries
    from distilbench.runtime.bundle import is_exported_model

    try:
        quiet_libraries(verbose=False)  # no library progress bars from every worker
        device = devices.get()
        if is_exported_model(model_dir):  # ONNX Runtime reads it (onnx_backend.session_threads); no torch
            os.environ["OMP_NUM_THREADS"] = str(threads)
        else:
            import torch

            torch.set_num_threads(threads)
        work_dir = tempfile.mkdtemp(prefix="distilbench-predict-")
        atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
        _worker["predictor"] = ChunkPredictor(
            model_dir, inference.backend, device, inference.batch_size, inference.max_length, work_dir
        )
    except BaseException as exc:  # noqa: BLE001 - re-raised in _worker_chunk
        _worker["error"] = exc


def _worker_chunk(first_row: int, texts: list[str], chunk_path: Path | None, fmt: str) -> tuple[int, str | None]:
    if "error" in _worker:
        raise _worker["error"]
    return process_chunk(_worker["predictor"], first_row, texts, chunk_path, fmt)


class InProcessRunner:
    """Predict each chunk as it is submitted, in this process, on `inference.device`."""

    def __init__(self, model_dir: str, inference: InferenceOptions, fmt: str):
        self._work_dir = tempfile.TemporaryDirectory(prefix="distilbench-predict-")
        self.predictor = ChunkPredictor(
            model_dir,
            inference.backend,
            inference.device,
            inference.batch_size,
            inference.max_length,
            self._work_dir.name,
        )
        self.fmt = fmt

    def submit(self, first_row: int, texts: list[str], chunk_path: Path | None) -> Iterator[tuple[int, str | None]]:
        yield process_chunk(self.predictor, first_row, texts, chunk_path, self.fmt)

    def drain(self) -> Iterator[tuple[int, str | None]]:
        return iter(())

    def close(self, abort: bool = False) -> None:
        self._work_dir.cleanup()


class PoolRunner:
    """Predict chunks in worker processes (spawned, one model each, one per device of `devices`), at most a
    few chunks per worker in flight; results come back in submission order."""

    def __init__(self, model_dir: str, inference: InferenceOptions, devices: list[str], fmt: str):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # CUDA and threads do not survive fork
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        threads = max(1, available_cpus() // len(devices))
        self.pool = ProcessPoolExecutor(
            len(devices),
            mp_context=context,
            initializer=_init_worker,
            initargs=(model_dir, inference, queue, threads),
        )
        self.pending: deque = deque()
        self.limit = IN_FLIGHT_PER_WORKER * len(devices)
        self.fmt = fmt

    def submit(self, first_row: int, texts: list[str], chunk_path: Path | None) -> Iterator[tuple[int, str | None]]:
        self.pending.append(self.pool.submit(_worker_chunk, first_row, texts, chunk_path, self.fmt))
        while len(self.pending) >= self.limit:
            yield self._oldest()

    def drain(self) -> Iterator[tuple[int, str | None]]:
        while self.pending:
            yield self._oldest()

    def _oldest(self) -> tuple[int, str | None]:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pending.popleft().result()
        except DistilbenchError:
            raise
        except BrokenProcessPool:
            raise DistilbenchError(
                "a prediction worker process died (out of memory?); try fewer --workers "
                "or a smaller --chunk-rows, then rerun with --resume"
            ) from None
        except Exception as exc:
            log.debug("prediction worker failed", exc_info=exc)
            raise DistilbenchError(f"a prediction worker failed: {type(exc).__name__}: {exc}") from exc

    def close(self, abort: bool = False) -> None:
        """Wait for the workers to finish; on an error or Ctrl-C (abort), stop them at once instead, so that
        none writes a chunk after predict has returned (a chunk cut short leaves only a hidden temporary file)."""
        if not abort:
            self.pool.shutdown(wait=True)
            return
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_devices(device: str, workers: int | None, cpu_only: bool = False) -> list[str]:
    """One device per worker. --device auto/cuda on several GPUs: worker i gets GPU i (mod the count) and
    the default is one worker per GPU; anything else: every worker on that device, default one worker.
    `cpu_only` (an exported bundle, which ONNX Runtime runs on the CPU): every worker on the CPU, without torch."""
    if workers is not None and workers < 1:
        raise DistilbenchError(f"--workers must be 1 or more, not {workers}")
    if cpu_only:
        return ["cpu"] * (workers or 1)
    import torch

    from distilbench.runtime.machine import pick_device

    resolved = pick_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        gpus = max(1, torch.cuda.device_count())
        return [f"cuda:{i % gpus}" for i in range(workers or gpus)]
    return [str(resolved)] * (workers or 1)


def run_manifest(
    model_dir: str, source: str, chunks: ChunkOptions, backend: str, max_length: int | None, fmt: str
) -> dict:
    """What the chunk files depend on: a resumed run must match it exactly (workers and batch size may differ)."""
    stat = Path(source).stat()
    model = Path(model_dir).resolve()
    return {
        "input": str(Path(source).resolve()),
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "model": str(model),
        "model_mtime_ns": max(p.stat().st_mtime_ns for p in model.iterdir()),
        "text_column": chunks.text_column,
        "chunk_rows": chunks.chunk_rows,
        "backend": backend,
        "max_length": max_length,
        "format": fmt,
    }


def lock_parts_dir(parts: Path):
    """An exclusive lock on `parts` (flock, dropped by the kernel however the process ends): two runs
    writing the same output would join each other's chunks."""
    import fcntl

    handle = open(parts / LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DistilbenchError(
            f"{parts} is in use by another distilbench predict writing the same output; "
            "wait for it to end or choose another --output"
        ) from None
    return handle


def open_parts_dir(out_path: Path, manifest: dict | None, resume: bool) -> tuple[Path, object]:
    """`<output>.parts/`, locked: created with its manifest, or, with --resume, checked against the manifest."""
    parts = out_path.with_name(out_path.name + ".parts")
    if parts.exists():
        lock = lock_parts_dir(parts)
        if not resume:
            lock.close()
            raise DistilbenchError(
                f"{parts} holds the chunks of an unfinished run: pass --resume to continue "
                "it, or delete that directory to start over"
            )
        try:
            saved = read_json(parts / MANIFEST)
        except (OSError, ValueError):
            saved = {}
        differ = [key for key in manifest if saved.get(key) != manifest[key]]
        if differ:
            lock.close()
            details = "; ".join(f"{key}: {saved.get(key)!r} then, {manifest[key]!r} now" for key in differ)
            raise DistilbenchError(
                f"cannot resume: the chunks in {parts} were made from different inputs or "
                f"settings ({details}). Rerun with the same settings, or delete {parts}."
            )
        return parts, lock
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        parts.mkdir()
        lock = lock_parts_dir(parts)
        write_json_atomic(parts / MANIFEST, manifest or {"input": "-"})
    except OSError as exc:
        raise DistilbenchError(f"cannot write the output {out_path}: {exc.strerror or exc}") from None
    return parts, lock


def chunk_path(parts: Path, index: int, fmt: str) -> Path:
    return parts / f"chunk-{index:06d}.{fmt}"


def assemble_output(parts: Path, chunks: int, fmt: str, out_path: Path, schema) -> None:
    """Join the chunk files in order into `out_path` (through a temporary file), then remove `parts`."""
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        if fmt == "jsonl":
            with open(tmp, "wb") as out:
                for index in range(chunks):
                    with open(chunk_path(parts, index, fmt), "rb") as part:
                        shutil.copyfileobj(part, out)
        else:
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, schema) as writer:  # one row group per chunk
                for index in range(chunks):
                    writer.write_table(pq.read_table(chunk_path(parts, index, fmt)))
        fsync_file(tmp)
        commit_rename(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(parts)


@dataclass
class OutputTarget:
    """Where the records go: `path` (None: stdout) in format `fmt`, through the locked `<output>.parts/`
    (None on stdout) whose chunk files are joined with `schema` at the end."""

    path: Path | None
    fmt: str
    schema: object = None
    parts: Path | None = None
    lock: object = None


@dataclass
class ChunkTally:
    """What the chunk loop has done so far, kept by the loop and read by its caller (also after a failure)."""

    rows: int = 0  # texts read
    skipped: int = 0  # of them, in chunks an earlier, interrupted run finished
    chunks: int = 0
    bad_input: bool = False  # the input could not be read whole: its chunks are of no use to --resume


def predict(
    model_dir: str,
    source: str = "-",
    output: str | None = None,
    *,
    inference: InferenceOptions | None = None,
    chunks: ChunkOptions | None = None,
    progress: bool = True,
) -> int:
    """Predict every text of `source`, writing records to `output` (.jsonl or .parquet; JSON lines on stdout
    when None); returns the number of texts."""
    from distilbench.runtime.bundle import is_exported_model
    from distilbench.runtime.light import is_text_model
    from distilbench.runtime.onnx_backend import check_backend

    inference, chunks = inference or InferenceOptions(), chunks or ChunkOptions()
    target = output_target(source, output, chunks)
    check_input(source)
    task, label_names = model_task_labels(model_dir)
    target.schema = records_schema(task, label_names) if target.fmt == "parquet" else None
    devices = worker_devices(
        inference.device, chunks.workers, cpu_only=is_exported_model(model_dir) or is_text_model(model_dir)
    )
    inference = inference.with_backend(check_backend(inference.backend, model_dir))  # ONNX: its graph's backend
    first, chunks_in = first_chunk(source, chunks)
    name = choose_backend(model_dir, inference, devices[0], first, progress)
    if target.path is not None:
        manifest = (
            None if source == "-" else run_manifest(model_dir, source, chunks, name, inference.max_length, target.fmt)
        )
        target.parts, target.lock = open_parts_dir(target.path, manifest, chunks.resume)
    tally, start = predict_chunks(model_dir, source, inference.with_backend(name), devices, chunks_in, target, progress)
    if target.path:
        say_done(tally, time.perf_counter() - start, name, len(devices), target.path)
    return tally.rows


def output_target(source: str, output: str | None, chunks: ChunkOptions) -> OutputTarget:
    """The output path and format, after the checks of the options that need no model or input."""
    if chunks.chunk_rows < 1:
        raise DistilbenchError(f"--chunk-rows must be 1 or more, not {chunks.chunk_rows}")
    out_path = Path(output) if output else None
    if chunks.resume and (out_path is None or source == "-"):
        raise DistilbenchError("--resume needs an --input file and an --output file")
    return OutputTarget(out_path, output_format(out_path) if out_path else "jsonl")


def first_chunk(source: str, chunks: ChunkOptions) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """The input's first chunk, read (its columns checked) before an output is started, and every chunk
    numbered from 0, that one included."""
    chunks_in = iter_text_chunks(source, chunks.text_column, chunks.chunk_rows)
    first = next(chunks_in, None)
    return first, enumerate(itertools.chain([first] if first is not None else [], chunks_in))


def choose_backend(
    model_dir: str, inference: InferenceOptions, device: str, first: list[str] | None, progress: bool
) -> str:
    """The backend's name: the one asked for, or for auto the cached choice, else a calibration on the run's
    validation split or on the input's first chunk; torch-fp32 for an empty input (nothing to choose for)."""
    backend = "torch-fp32" if inference.backend == "auto" and not first else inference.backend
    name, _ = resolve_model_backend(
        model_dir,
        backend,
        device=device,
        batch_size=inference.batch_size,
        max_length=inference.max_length,
        held_texts=lambda: first or [],
        settings=inference.choice,
        show=progress,
    )
    return name


def model_task_labels(model_dir: str | Path) -> tuple[str, list[str]]:
    """Task and label names of a checkpoint or an exported bundle (whose config.json is read without
    transformers)."""
    from distilbench.runtime.bundle import bundle_task_labels, is_exported_model
    from distilbench.runtime.light import is_text_model, read_manifest

    if is_text_model(model_dir):
        manifest = read_manifest(model_dir)
        return manifest["task"], list(manifest["label_names"])
    if is_exported_model(model_dir):
        return bundle_task_labels(model_dir)
    from distilbench.models.registry import read_task_labels

    return read_task_labels(model_dir)


def resolve_model_backend(model_dir: str | Path, backend: str, **choice) -> tuple[str, dict | None]:
    """auto.resolve_backend for a checkpoint; for an exported bundle its own graph's backend (checked by
    onnx_backend.check_backend) without importing torch. `choice`: resolve_backend's keyword arguments."""
    from distilbench.runtime.bundle import is_exported_model
    from distilbench.runtime.light import is_text_model, read_manifest

    if is_text_model(model_dir):  # tfidf, static, cascade: one way to run each
        return read_manifest(model_dir)["kind"], None
    if is_exported_model(model_dir):
        from distilbench.runtime.onnx_backend import check_backend

        return check_backend(backend, model_dir), None
    from distilbench.runtime.auto import resolve_backend

    return resolve_backend(model_dir, backend, **choice)


def predict_chunks(
    model_dir: str,
    source: str,
    inference: InferenceOptions,
    devices: list[str],
    chunks_in: Iterator[tuple[int, list[str]]],
    target: OutputTarget,
    progress: bool,
) -> tuple[ChunkTally, float]:
    """Predict every chunk in this process or a pool, then join the chunk files into the output. On a failure
    the workers stop first, then the finished chunks are kept for --resume (or removed where they are of no
    use). Returns the tally and the time the prediction began (after loading the model)."""
    tally = ChunkTally()
    runner = None
    try:
        if len(devices) == 1:
            runner = InProcessRunner(model_dir, replace(inference, device=devices[0]), target.fmt)
        else:
            runner = PoolRunner(model_dir, inference, devices, target.fmt)
        start = time.perf_counter()  # rows/s after loading the model (workers load theirs meanwhile)
        with rows_bar(source, progress) as bar:
            run_chunks(runner, chunks_in, target, tally, bar)
        if target.parts is not None:
            assemble_output(target.parts, tally.chunks, target.fmt, target.path, target.schema)
    except BaseException:
        if runner is not None:  # first stop the workers, so that no chunk file appears after the check below
            runner.close(abort=True)
            runner = None
        keep_or_remove_parts(target.parts, source, tally.bad_input)
        raise
    finally:
        if runner is not None:
            runner.close()
        if target.lock is not None:
            target.lock.close()
    return tally, start


class _NoBar:
    """A progress bar that shows nothing (tqdm is imported only where one is shown: 25 ms of a cold start)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, rows: int) -> None:
        return None


def rows_bar(source: str, progress: bool):
    """predict's progress bar over the rows of `source`, or one that shows nothing."""
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc="predict", unit="row", total=count_rows(source), file=sys.stderr)


def run_chunks(
    runner, chunks_in: Iterator[tuple[int, list[str]]], target: OutputTarget, tally: ChunkTally, bar
) -> None:
    """Each chunk to `runner` in input order, except those an earlier run finished; the results go to stdout
    (without --output) and onto the progress bar."""

    def finished(done: Iterator[tuple[int, str | None]]) -> None:
        for rows, text in done:
            if text is not None:
                sys.stdout.write(text)
            bar.update(rows)

    while True:
        try:
            index, texts = next(chunks_in)
        except StopIteration:
            break
        except DistilbenchError:
            tally.bad_input = True  # chunks of an input that cannot be read whole are no use to --resume
            raise
        first_row = tally.rows
        tally.rows, tally.chunks = tally.rows + len(texts), index + 1
        path = chunk_path(target.parts, index, target.fmt) if target.parts else None
        if path is not None and path.exists():  # finished by an earlier, interrupted run
            tally.skipped += len(texts)
            bar.update(len(texts))
            continue
        finished(runner.submit(first_row, texts, path))
    finished(runner.drain())


def keep_or_remove_parts(parts: Path | None, source: str, bad_input: bool) -> None:
    """After a failure: the finished chunks stay for --resume (said so), unless none are finished or they
    cannot be resumed (stdin, an input that cannot be read whole)."""
    if parts is None or not parts.exists():
        return
    kept = len(list(parts.glob("chunk-*")))
    if kept and source != "-" and not bad_input:
        warn(f"{kept} finished chunks kept in {parts}: rerun with --resume to continue")
    else:
        shutil.rmtree(parts, ignore_errors=True)


def say_done(tally: ChunkTally, seconds: float, backend: str, workers: int, out_path: Path) -> None:
    resumed = f", {tally.skipped} from an earlier run" if tally.skipped else ""
    say(
        f"{tally.rows} predictions ({backend}, {workers} worker{'s' if workers > 1 else ''}{resumed}, "
        f"{(tally.rows - tally.skipped) / max(seconds, 1e-9):.0f} rows/s) -> {out_path}"
    )
