"""The Python API: every verb of the `distilbench` command as a function, and what a run leaves as objects.

    import distilbench as db
    result = db.compare("news.csv", label_column="category", models=["minilm-l6", "student:minilm-l6"],
                        epochs=3, out="runs/news")
    result.table                     # one row per model: metric, 95 % interval, verdict, speed, size
    clf = db.load("runs/news")       # the reference model's best checkpoint
    clf.predict(["Stocks fall as the Fed hints at higher rates"])

The CLI parses its flags and calls exactly one of these functions, so each verb has one implementation.
Settings are the field names of `ExperimentConfig` (the YAML keys; the CLI's flags with `_` for `-`), given as
keyword arguments; they win over `config` (a YAML path or a dict), as flags win over `--config`. Data is a
path (CSV, TSV, JSON lines, Parquet), `builtin:NAME`, `hf:NAME[:SPLIT]` or a pandas DataFrame. Every problem
the user can fix raises a subclass of `DistilbenchError` (`ConfigError`, `DataError`, `ModelNotFoundError`,
`RunDirError`) with the message the CLI prints.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, Union

from distilbench.core.console import ConfigError, DataError, DistilbenchError, ModelNotFoundError, RunDirError
from distilbench.core.extras import needs_extra, require_extra
from distilbench.experiments.results import RunResult, open_run, require_finished
from distilbench.runtime.classifier import Classifier, load, model_directory

if TYPE_CHECKING:  # the heavy imports wait until a function runs: `import distilbench` stays light
    import pandas as pd

    from distilbench.config import ExperimentConfig

PathLike = Union[str, "os.PathLike[str]"]
Data = Union[str, "os.PathLike[str]", "pd.DataFrame"]
DATAFRAME_FILE = "dataframe.parquet"  # a DataFrame's rows, saved in the run directory's data/ folder

__all__ = [
    "Classifier",
    "ConfigError",
    "DataError",
    "DistilbenchError",
    "ModelNotFoundError",
    "RunDirError",
    "RunResult",
    "bench",
    "cascade",
    "compare",
    "distill",
    "distill_general",
    "evaluate",
    "export",
    "load",
    "open_run",
    "predict",
    "report",
    "serve",
    "train",
    "tune",
]


# --------------------------------------------------------------------------- settings and data


def _is_frame(data: Any) -> TypeGuard[pd.DataFrame]:
    """Whether `data` is a pandas DataFrame (without importing pandas for a path)."""
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


def _check_setting_names(settings: dict) -> None:
    """Unknown keyword settings fail with the closest known names (a typo must not be silently ignored)."""
    from distilbench.config import FIELDS

    for name in settings:
        if name not in FIELDS:
            close = difflib.get_close_matches(name, sorted(FIELDS), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(sorted(FIELDS))}"
            raise ConfigError(f"unknown setting '{name}'{hint}")


def _split_config(config: PathLike | dict | None) -> tuple[PathLike | None, dict]:
    """`config` as (YAML path, settings dict): a dict's settings sit under the keyword settings."""
    if config is None or isinstance(config, (str, os.PathLike)):
        return config, {}
    if isinstance(config, dict):
        _check_setting_names(config)
        return None, dict(config)
    raise ConfigError(f"config must be a YAML path or a dict of settings, not {type(config).__name__}")


def experiment_config(
    config: PathLike | dict | None = None,
    *,
    out: PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    **settings: Any,
) -> ExperimentConfig:
    """The settings of a run: `config` (a YAML path or a dict) under the keyword `settings` (None means not
    given), or with `resume` the settings `out` was started with, which the given ones must match.
    Raises ConfigError for unknown or contradictory settings and RunDirError when `out` is no run to resume."""
    from distilbench.config import load_config, load_resumed_config

    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: pass one of them")
    path, base = _split_config(config)
    given = {k: v for k, v in settings.items() if v is not None}
    _check_setting_names(given)
    overrides = {**base, **given}
    if out is not None:
        overrides["out"] = str(out)
    if resume:
        if out is None:
            raise RunDirError("--resume needs --out RUN_DIR, the run to continue")
        from distilbench.runs import require_run

        require_run(str(out))  # before its config.yaml is read: another project's file is not a run's
        return load_resumed_config(str(out), _str(path), overrides)
    return load_config(_str(path), overrides)


def _source_name(data: Data | None) -> str | None:
    """A path or source name as config.yaml records it; None for no data or a DataFrame (see _frame_data)."""
    return None if data is None or _is_frame(data) else str(data)


def _frame_rows_path(out: PathLike | None) -> Path:
    if out is None:
        raise RunDirError("no output directory: pass --out RUN_DIR (out=...) to keep a DataFrame's run")
    return Path(out) / "data" / DATAFRAME_FILE


def _check_frame(frame: pd.DataFrame, config: ExperimentConfig, teacher: str | None = None) -> None:
    """Read the DataFrame as the run will (columns; labels: the teacher's where there is one), so that a mistake
    fails before anything is created."""
    from distilbench.data import datasets

    task, label_names = config.task, None
    if teacher is not None:
        from distilbench.experiments.compare import resolve_teacher
        from distilbench.models.registry import read_task_labels

        task, label_names = read_task_labels(resolve_teacher(teacher))
    datasets.to_task_frame(
        datasets.read_source(frame, config.text_column),
        task,
        text_column=config.text_column,
        label_column=config.label_column,
        label_columns=config.label_columns,
        label_separator=config.label_separator,
        label_names=label_names,
    )


@contextmanager
def _frame_data(data: Data | None, config: ExperimentConfig, resume: bool) -> Iterator[None]:
    """A DataFrame as the run's data: config.data becomes OUT/data/dataframe.parquet (so config.yaml records
    where the rows are), the run reads the frame under that name, and the rows are saved there once the run
    directory exists, so the run can be reproduced and resumed from its own folder."""
    if not _is_frame(data):
        yield
        return
    from distilbench.data.readers import frame_source

    rows = _frame_rows_path(config.out)
    config.data = str(rows)
    if resume and rows.is_file():  # the run has the rows it started with
        yield
        return
    with frame_source(str(rows), data):
        try:
            yield
        finally:
            _save_frame_rows(data, rows)


def _save_frame_rows(frame: pd.DataFrame, rows: Path) -> None:
    """The DataFrame's rows into the run directory it was given to (when that run directory was created)."""
    from distilbench.runs import RUN_MARKER, write_bytes_atomic

    if rows.is_file() or not (rows.parent.parent / RUN_MARKER).is_file():
        return
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    rows.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(rows, buffer.getvalue())


def _run_settings(task: str | None, models: Sequence[str] | None, settings: dict) -> dict:
    """Keyword settings plus the named arguments that are settings too."""
    named = {"task": task, "models": list(models) if models is not None else None}
    return {**settings, **{k: v for k, v in named.items() if v is not None}}


# --------------------------------------------------------------------------- verbs that train


@needs_extra("train")
def compare(
    data: Data | None = None,
    *,
    models: Sequence[str] | None = None,
    task: str | None = None,
    out: PathLike | None = None,
    config: PathLike | dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> RunResult:
    """Fine-tune every model of `models` on the same splits of `data`, test them, and compare each with the
    reference (the first model, or `reference=`): writes the run directory `out` (comparison.json/.csv,
    checkpoints, report.html) and returns it as a RunResult. `resume` continues a stopped run in `out`
    (finished models are kept); `overwrite` replaces a run there. Under torchrun every process trains and the
    first returns the result (the others None). `distilbench compare` calls this."""
    return _train_run("compare", data, models, task, out, config, overwrite, resume, progress, settings)


@needs_extra("train")
def train(
    data: Data | None = None,
    *,
    model: str | None = None,
    task: str | None = None,
    out: PathLike | None = None,
    config: PathLike | dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> RunResult:
    """Fine-tune one model (a comparison of one): the same run directory as compare. `model` is an alias, a hub
    name, a directory or student:<teacher>; None takes the one model of `config`. `distilbench train` calls
    this."""
    models = [model] if model is not None else None
    return _train_run("train", data, models, task, out, config, overwrite, resume, progress, settings)


def _train_run(
    verb: str,
    data: Data | None,
    models: Sequence[str] | None,
    task: str | None,
    out: PathLike | None,
    config: PathLike | dict | None,
    overwrite: bool,
    resume: bool,
    progress: bool,
    settings: dict,
) -> RunResult:
    """compare and train: the settings, then the run (which checks its data and models before it creates its
    directory), then the run directory as a RunResult."""
    from distilbench.experiments import compare as experiment

    source = _source_name(data)
    run_config = experiment_config(
        config, out=out, overwrite=overwrite, resume=resume, **_run_settings(task, models, settings), data=source
    )
    with _frame_data(data, run_config, resume):
        if verb == "train" and len(run_config.models) != 1:
            raise ConfigError("train fine-tunes one model: pass --model NAME (compare takes several)")
        experiment.compare(run_config, overwrite=overwrite, progress=progress, resume=resume)
    return _finished_run(str(run_config.out))


@needs_extra("train")
def distill(
    data: Data | None = None,
    *,
    teacher: str,
    student: str,
    task: str | None = None,
    out: PathLike | None = None,
    config: PathLike | dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> RunResult:
    """Distil `student` from the fine-tuned `teacher` (a checkpoint, or a run directory with one model) on the
    labelled `data`: loss = alpha * label loss + (1 - alpha) * soft loss against the teacher's outputs. The
    task and labels are the teacher's. Writes a run directory of one model. `distilbench distill` calls this."""
    from distilbench.experiments import compare as experiment

    source = _source_name(data)
    run_config = experiment_config(
        config, out=out, overwrite=overwrite, resume=resume, **_run_settings(task, None, settings), data=source
    )
    with _frame_data(data, run_config, resume):
        experiment.distill(run_config, teacher, student, overwrite=overwrite, progress=progress, resume=resume)
    return _finished_run(str(run_config.out))


def _finished_run(out: str) -> RunResult:
    """The run just finished, re-opened; None in the other processes of a distributed launch (torchrun), which
    train but leave the results to the first."""
    from distilbench.training import distributed

    return open_run(out) if distributed.is_main_process() else None  # type: ignore[return-value]


@needs_extra("train")
def distill_general(
    data: Data,
    *,
    teacher: str,
    student: str,
    out: PathLike,
    text_column: str = "text",
    max_samples: int | None = None,
    seed: int = 42,
    train_batch_size: int = 32,
    progress: bool = True,
    **options: Any,
) -> dict:
    """DistilBERT's own distillation: train `student` (student:<teacher>[:layers], student-bert:...) against the
    pretrained `teacher` on unlabelled texts (`data`: any source, or a DataFrame with `text_column`) with the
    masked-language triple loss; writes the student to `out`, for compare's models or distill's student.
    Options: epochs, learning_rate, max_length, temperature, alpha_ce, alpha_mlm, alpha_cos, alpha_mse,
    precision, device. Returns what training.distillation.distill_general reports. `distilbench
    distill-general` calls this."""
    from distilbench.data.readers import read_texts
    from distilbench.training.distillation import GeneralDistillationOptions
    from distilbench.training.distillation import distill_general as run_distillation

    texts = read_texts(data if _is_frame(data) else str(data), text_column, max_samples, seed)
    options = {k: v for k, v in options.items() if v is not None}
    settings = _call(GeneralDistillationOptions, batch_size=train_batch_size, seed=seed, **options)
    return _call(run_distillation, teacher, student, texts, str(out), settings, progress=progress)


@needs_extra("train")
def tune(
    data: Data | None = None,
    *,
    model: str | None = None,
    teacher: str | None = None,
    trials: int = 20,
    timeout: float | None = None,
    search: Sequence[str] | None = None,
    prune: bool = True,
    out: PathLike | None = None,
    config: PathLike | dict | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> dict:
    """Search the settings of `model` (or of a student distilled from `teacher`) on the validation split with
    Optuna; `search` names the parameters (NAME or NAME=LOW:HIGH), by default all but those given as keyword
    settings. Writes the search directory `out` (tune.db, trials.csv, tune.json, best.yaml) and returns
    tune.json's content. `distilbench tune` calls this."""
    from distilbench.experiments.tune import SearchBudget
    from distilbench.experiments.tune import tune as run_tune

    given = {k for k, v in settings.items() if v is not None}
    source = _source_name(data)
    run_config = experiment_config(
        config, out=out, overwrite=overwrite, resume=resume, **_run_settings(None, None, settings), data=source
    )
    with _frame_data(data, run_config, resume):
        if _is_frame(data) and not resume:  # tune reads its data after creating its directory
            _check_frame(data, run_config, teacher)
        return run_tune(
            run_config,
            model,
            teacher=teacher,
            budget=SearchBudget(trials=trials, timeout=timeout, prune=prune),
            search=list(search) if search is not None else None,
            fixed=given,
            overwrite=overwrite,
            resume=resume,
            progress=progress,
        )


# --------------------------------------------------------------------------- verbs on a trained model


def evaluate(
    model: PathLike,
    data: Data,
    *,
    out: PathLike | None = None,
    check_fp32: bool = False,
    progress: bool = True,
    **settings: Any,
) -> dict:
    """Test a fine-tuned checkpoint (or a run directory: its reference model's best checkpoint) on `data`:
    returns the metrics with 95 % intervals, and writes them as JSON to `out` when given. Settings: the data
    columns, eval_batch_size, max_length, backend, device ... `check_fp32` also predicts with torch-fp32 and
    reports the agreement. `distilbench evaluate` calls this."""
    from distilbench.config import load_config
    from distilbench.data.readers import frame_source
    from distilbench.experiments import evaluate as experiment  # a bundle: without torch

    given = {k: v for k, v in settings.items() if v is not None}
    _check_setting_names(given)
    run_config = load_config(None, given)
    if data is None or (isinstance(data, str) and not data):
        raise DataError("evaluate needs --data SOURCE")
    checkpoint = str(model_directory(model))
    if _is_frame(data):
        name = f"a DataFrame ({len(data)} rows)"
        with frame_source(name, data):
            return experiment.evaluate(checkpoint, name, run_config, _str(out), progress, check_fp32)
    return experiment.evaluate(checkpoint, str(data), run_config, _str(out), progress, check_fp32)


def bench(
    models: Sequence[str] | str,
    *,
    backends: Sequence[str] | None = None,
    data: Data | None = None,
    out: PathLike | None = None,
    progress: bool = True,
    **options: Any,
) -> dict:
    """Measure size, latency, throughput, memory and (for trained models) the test metric of every model with
    every backend under one protocol; returns bench.json's content and writes it to `out` when given.
    `options`: the protocol's (bench.BenchOptions: batch_size, samples, repeats, warmup, latency_samples,
    max_length, device, memory, metric), the texts' (bench.BenchTexts: text_column, label_column, label_columns)
    and the guard of `auto` (min_agreement,
    max_metric_drop, recalibrate). Exported bundles and tfidf, static or cascade models run in the base install
    (no torch); a checkpoint needs the [train] extra. `distilbench bench` calls this."""
    from distilbench.benchmarking.bench import bench_settings, run_bench
    from distilbench.benchmarking.speed import runs_without_torch

    specs = [models] if isinstance(models, str) else [str(m) for m in models]
    if not all(runs_without_torch(spec) for spec in specs):
        require_extra("train", "distilbench bench of a checkpoint")
    choice = _choice_settings(options)
    kwargs = {k: v for k, v in options.items() if v is not None}
    if _is_frame(data):  # texts only (labels, for a metric, come from a file or a run's test split)
        column = kwargs.pop("text_column", "text")
        if column not in data.columns:
            raise DataError(f"the DataFrame has no column '{column}'; pass text_column=NAME")
        kwargs["texts"] = [str(text) for text in data[column].tolist()]
        data = None
    protocol, source, rest = bench_settings({**kwargs, "data": None if data is None else str(data)})
    return _call(
        run_bench,
        specs,
        list(backends) if backends else None,
        options=protocol,
        source=source,
        choice=choice,
        out=_str(out),
        progress=progress,
        **rest,
    )


def export(
    model: PathLike,
    out: PathLike,
    *,
    format: str = "onnx",  # noqa: A002 - the CLI's --format
    quantize: str | None = None,
    fuse: bool = False,
    tolerance: float | None = None,
) -> Path:
    """Export a fine-tuned checkpoint as a directory `out` (which must not exist) that runs without PyTorch
    (a tfidf, static or cascade model is copied whole, a cascade with its stages inside):
    model.onnx with its weights in model.onnx.data, config.json, the tokenizer and export.json (the check against
    PyTorch). `quantize`: None (fp32), "int8" (dynamic) or "int8-static" (calibrated on the run's validation split;
    export.json's `static` says which nodes stayed fp32 and the agreement with fp32), "openvino-int8" (NNCF) or
    "auto" (the fastest backend a bundle can hold, under auto's guard). Returns `out`; load() and
    predict/serve/bench take it as a model. `distilbench export` calls this."""
    from distilbench.runtime.export import export_model
    from distilbench.runtime.light import export_text_model, is_text_model

    source = model_directory(model)
    if is_text_model(source):  # tfidf, static, cascade: copied whole, nothing to convert or quantize
        if quantize:
            raise ConfigError(f"{model} is a tfidf, static or cascade model: nothing to quantize; drop --quantize")
        export_text_model(source, out)
        return Path(out)
    require_extra("train", "distilbench export of a checkpoint")
    export_model(str(source), str(out), fmt=format, quantize=quantize, fuse=fuse, tolerance=tolerance)
    return Path(out)


def predict(model: PathLike, input: PathLike = "-", output: PathLike | None = None, **options: Any) -> dict:  # noqa: A002
    """Predict every text of the file `input` (- for stdin) into `output` (.jsonl or .parquet; JSON lines on
    stdout when None), one record per text with its row, label(s) and probabilities, in chunks (memory stays
    flat). `engine="ray"` runs on a Ray cluster (output: a directory). Other options: text_column, backend,
    batch_size, max_length, device, chunk_rows, progress, workers and resume (local), address, actors,
    cpus_per_actor and output_format (ray), min_agreement, max_metric_drop, recalibrate (backend auto).
    Returns {"rows": texts predicted, "output": output}. `distilbench predict` calls this. For texts in
    memory use load(model).predict(texts)."""
    from distilbench.runtime.options import InferenceOptions

    options = {k: v for k, v in options.items() if v is not None}
    engine = options.pop("engine", "local")
    choice = _choice_settings(options)
    model_dir = str(model_directory(model))
    output_text = _str(output)

    def take(*names: str) -> dict:  # the options named, taken out of `options`; what is left must be known below
        return {name: options.pop(name) for name in names if name in options}

    inference = InferenceOptions(**take("backend", "batch_size", "max_length", "device"), choice=choice)
    options["inference"] = inference
    if engine == "ray":
        from distilbench.runtime.ray_predict import RayPoolOptions, predict_on_ray

        if options.get("workers") is not None or options.get("resume"):
            raise ConfigError(
                "--workers and --resume are for --engine local; with --engine ray, use "
                "--actors (Ray restarts failed work itself)"
            )
        options.pop("resume", None)
        options["pool"] = RayPoolOptions(**take("address", "actors", "cpus_per_actor"))
        rows = _call(predict_on_ray, model_dir, str(input), output_text, **options)
    elif engine == "local":
        from distilbench.runtime.predict import ChunkOptions
        from distilbench.runtime.predict import predict as predict_local

        if any(options.get(name) is not None for name in ("address", "actors", "output_format")):
            raise ConfigError(
                "--address, --actors and --output-format are for --engine ray (locally, "
                "--output's suffix gives the format)"
            )
        options.pop("cpus_per_actor", None)
        options["chunks"] = ChunkOptions(**take("text_column", "chunk_rows", "workers", "resume"))
        rows = _call(predict_local, model_dir, str(input), output_text, **options)
    else:
        raise ConfigError(f"engine must be local or ray, not '{engine}'")
    return {"rows": rows, "output": output_text, "engine": engine}


def serve(model: PathLike, *, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve `model` (a checkpoint or an exported ONNX directory) over HTTP until interrupted: POST /predict
    with micro-batching, GET /health, /metadata, /docs. Options: backend, device, threads, access_log, the
    guard of `auto` (min_agreement, max_metric_drop, recalibrate) and ServeLimits's fields (max_texts,
    max_text_chars, on_long_text, max_length, batching, max_batch_size, max_wait_ms, max_body_mb,
    max_pending, max_inflight_mb). `distilbench serve` calls this."""
    import dataclasses

    from distilbench.serving.app import ServeLimits
    from distilbench.serving.app import serve as run_server

    options = {k: v for k, v in options.items() if v is not None}
    choice = _choice_settings(options)
    limit_names = {f.name for f in dataclasses.fields(ServeLimits)}
    limits = ServeLimits(**{k: options.pop(k) for k in list(options) if k in limit_names})
    _call(run_server, str(model_directory(model)), host=host, port=port, limits=limits, choice=choice, **options)


def cascade(
    small: PathLike | None = None,
    big: PathLike | None = None,
    *,
    out: PathLike,
    stages: Sequence[PathLike] | None = None,
    data: PathLike | None = None,
    test_data: PathLike | None = None,
    max_loss: float = 0.5,
    confidence: float = 0.95,
    objective: str = "cost",
    overwrite: bool = False,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str = "auto",
    measure_speed: bool = True,
    **settings: Any,
) -> dict:
    """Build a cascade: `small` answers the rows it is confident about and defers the rest to `big` (or `stages`,
    smallest first). The thresholds are chosen on labelled calibration rows (`data`, default: the validation split
    of the run both models come from) so that, with probability `confidence`, the cascade loses at most `max_loss`
    points of the primary metric against the last model alone (objective "cost"; "accuracy": the best calibration
    metric, no guarantee). Tested on `test_data` (default: that run's test split) with the throughput measured,
    and saved to `out`, a model directory that predict, serve, evaluate and load() take. Settings: the data
    columns (text_column, label_column, label_columns, label_separator, max_chars), resamples and seed of the
    bootstrap. Returns cascade.json's content. `distilbench cascade` calls this."""
    from distilbench.config import load_config
    from distilbench.evaluation.cascade import CascadeTarget
    from distilbench.experiments.cascade import CascadeRun, build_cascade

    given = {k: v for k, v in settings.items() if v is not None}
    _check_setting_names(given)
    if stages is not None and (small is not None or big is not None):
        raise ConfigError("pass either small and big (--small, --big) or stages (--stages A,B,C), not both")
    models = [str(m) for m in stages] if stages is not None else [str(m) for m in (small, big) if m is not None]
    if len(models) < 2:
        raise ConfigError("a cascade needs a small and a big model: --small A --big B (or --stages A,B,C)")
    config = load_config(None, given)
    target = CascadeTarget(max_loss=max_loss, confidence=confidence, objective=objective, seed=config.seed)
    rows = CascadeRun(_str(data), _str(test_data), batch_size, max_length, device, measure_speed)
    return build_cascade(models, str(out), config, target, rows, overwrite=overwrite)


@needs_extra("train")
def report(run: PathLike | RunResult) -> tuple[Path, Path]:
    """Write the plots, report.html and report.md of a finished run directory; returns (html, markdown).
    `distilbench report` calls this (compare writes the report itself at the end)."""
    from distilbench.reporting.report import write_report

    root = run.path if isinstance(run, RunResult) else Path(run)
    require_finished(root)
    html, markdown = write_report(root)
    return Path(html), Path(markdown)


def _choice_settings(options: dict):
    """The guard of backend auto, taken out of `options` (min_agreement, max_metric_drop, recalibrate)."""
    from distilbench.runtime.options import ChoiceSettings  # not auto.py: a bundle runs without torch

    names = ("min_agreement", "max_metric_drop", "recalibrate")
    given = {name: options.pop(name) for name in names if options.get(name) is not None}
    return ChoiceSettings(**given).validate()


def _call(function, *args, **kwargs):
    """Call an internal function; an unknown keyword option is the caller's mistake, said as such."""
    import inspect

    accepted = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [] if takes_any else sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    return function(*args, **kwargs)


def _str(path: PathLike | None) -> str | None:
    return None if path is None else str(path)
