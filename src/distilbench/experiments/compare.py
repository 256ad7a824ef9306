"""The experiment as a straight line: data -> train each model -> best epoch -> test -> comparison."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from transformers import set_seed

from distilbench.benchmarking.speed import dir_size_mb
from distilbench.config import ExperimentConfig, save_config
from distilbench.core.console import DistilbenchError, say, warn
from distilbench.data import datasets as datalib
from distilbench.evaluation.calibration import fit_calibration
from distilbench.evaluation.metrics import (
    compute_metrics,
    label_array,
    primary_metric,
    summary_metrics,
    tune_thresholds,
)
from distilbench.evaluation.verdicts import assess, baseline_table, difference_text, interval_text, verdict_lines
from distilbench.experiments.evaluate import (  # noqa: F401 (imported from here too)
    load_task_data,
    predictions_frame,
    tested_metrics,
)
from distilbench.models.ladder import parse_ladder_spec
from distilbench.models.registry import (
    DISTILBENCH_KEY,
    check_model_specs,
    count_parameters,
    describe,
    load_classifier,
    load_trained,
    parse_student_spec,
    read_task_labels,
)
from distilbench.runs import (
    RunDir,
    check_free_space,
    check_run_dir,
    describe_checkpoint,
    kept_checkpoint,
    model_slug,
    open_run_dir,
    read_json,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
)
from distilbench.runtime.auto import build_backend, choice_settings
from distilbench.runtime.backends import load_backend
from distilbench.runtime.inference import (
    backend_logits,
    logits_to_probs,
    loss_from_logits,
    max_positions,
    tokenize_texts,
)
from distilbench.runtime.machine import machine_info, pick_device
from distilbench.runtime.options import InferenceOptions
from distilbench.runtime.predict import stored_thresholds
from distilbench.training import distributed

if TYPE_CHECKING:  # imported at run time inside the steps: `evaluate` and `predict` start without the Trainer's
    from distilbench.training.finetune import EncodedDataset, TrainResult

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PreparedData:
    """The data of a run, split in memory and not yet written: the splits, the label names and the rows dropped
    (reason -> count)."""

    splits: dict[str, pd.DataFrame]
    label_names: list[str]
    dropped: dict[str, int]


def read_splits(config: ExperimentConfig, label_names: list[str] | None = None) -> PreparedData:
    """Load, clean, subsample and split the data, writing nothing: a missing file, a misspelt column or labels
    that do not fit the task fail here, before the run directory is created. `label_names`: the labels the data
    must have (a teacher's, for distill); by default those found in --data."""
    if not config.data:
        raise DistilbenchError("no data given: pass --data PATH, builtin:bbc-news or hf:NAME")
    frame, label_names, dropped = load_task_data(config.data, config, label_names)
    seed = config.data_seed()
    frame = datalib.subsample(frame, config.task, config.max_samples, seed)
    if config.val_data or config.test_data:
        splits = {"train": frame}
        if config.test_data:
            splits["test"], _, more = load_task_data(config.test_data, config, label_names)
            dropped.update({f"test data: {k}": v for k, v in more.items()})
        else:
            splits["train"], splits["test"] = datalib.holdout(
                frame, config.task, label_names, config.test_size, seed, what="test"
            )
        if config.val_data:
            splits["val"], _, more = load_task_data(config.val_data, config, label_names)
            dropped.update({f"val data: {k}": v for k, v in more.items()})
        else:
            splits["train"], splits["val"] = datalib.holdout(
                splits["train"], config.task, label_names, config.val_size, seed, what="validation"
            )
        splits = {name: splits[name] for name in ("train", "val", "test")}
        datalib.warn_unlearnable_labels(pd.concat(list(splits.values())), splits["train"], config.task, label_names)
    else:
        splits = datalib.split_data(
            frame, config.task, label_names, test_size=config.test_size, val_size=config.val_size, seed=seed
        )
    return PreparedData(splits, label_names, dropped)


def prepare_data(
    config: ExperimentConfig,
    run: RunDir,
    label_names: list[str] | None = None,
    prepared: PreparedData | None = None,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Save the splits (`prepared`, else read_splits's) and a per-split count table into the run directory."""
    prepared = prepared or read_splits(config, label_names)
    splits, label_names = prepared.splits, prepared.label_names
    for reason, count in prepared.dropped.items():
        if count:
            say(f"dropped {count} rows: {reason}")
    datalib.save_splits(splits, run.data)
    counts = datalib.label_counts(splits, config.task, label_names)
    write_csv_atomic(run.data / "label_counts.csv", counts.reset_index(names="label"))
    write_json_atomic(
        run.data / "summary.json",
        {
            "source": config.data,
            "label_names": label_names,
            "dropped": prepared.dropped,
            "rows": {name: len(split) for name, split in splits.items()},
        },
    )
    say(
        f"data: {config.data} ({config.task}, {len(label_names)} labels) — "
        + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
    )
    say(counts.to_string())
    return splits, label_names


def store_thresholds(checkpoint: Path, label_names: list[str], thresholds: np.ndarray, criterion: str) -> None:
    """Save per-label thresholds in the checkpoint's config.json, where evaluate, predict and serve read them."""
    store_in_checkpoint(
        checkpoint,
        {
            "thresholds": {name: round(float(t), 6) for name, t in zip(label_names, thresholds)},
            "threshold_metric": criterion,
            "thresholds_tuned_on": "validation split",
        },
    )


def store_in_checkpoint(checkpoint: Path, fields: dict) -> None:
    """Add `fields` to distilbench's block of the checkpoint's config.json (thresholds, calibration)."""
    path = Path(checkpoint) / "config.json"
    saved = read_json(path)
    saved.setdefault(DISTILBENCH_KEY, {}).update(fields)
    write_json_atomic(path, saved)


def link_best(best: Path, target: Path) -> None:
    """Point `best` at the checkpoint `target` below its folder (a relative symlink; a copy where links are not
    allowed)."""
    if best.is_symlink() or best.is_file():
        best.unlink()
    elif best.is_dir():
        shutil.rmtree(best)
    try:
        best.symlink_to(target.relative_to(best.parent), target_is_directory=True)
    except OSError:
        shutil.copytree(target, best)


def mark_best(run: RunDir, slug: str, kept: str, keep: str) -> Path:
    """Point `models/<slug>/best` at the kept checkpoint (`kept`: its folder, epoch-<n> or average-<a>-<b>);
    with keep 'best', delete the other epochs and averages."""
    best = run.best_dir(slug)
    target = run.model_dir(slug) / kept
    link_best(best, target)
    if keep == "best":
        for other in [*run.model_dir(slug).glob("epoch-*"), *run.model_dir(slug).glob("average-*")]:
            if other != target:
                shutil.rmtree(other)
    return best


def inference_options(config: ExperimentConfig) -> InferenceOptions:
    """How compare, train, distill and evaluate run a saved checkpoint: the config's backend, evaluation batch
    size, max length, device and the guard of auto, together."""
    return InferenceOptions(
        backend=config.backend,
        batch_size=config.eval_batch_size,
        max_length=config.max_length,
        device=config.device,
        choice=choice_settings(config),
    )


def test_model(
    model_dir: Path,
    frame: pd.DataFrame,
    config: ExperimentConfig,
    progress: bool = True,
    desc: str = "test",
    check_fp32: bool = True,
    intervals: bool = False,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of a saved checkpoint on a task frame through the chosen backend: (stats, labels, probs). With
    `intervals`, each headline metric gets its 95 % bootstrap interval over the examples (`intervals` in stats).

    A backend other than torch-fp32 is checked against torch-fp32 on the same texts: the share of
    identical predictions and the difference in the primary metric are reported with the metrics.
    """
    model, tokenizer, task, label_names = load_trained(model_dir)
    labels = label_array(frame, task, label_names)
    device = pick_device(config.device)
    model.to(device)
    texts = frame["text"].tolist()
    options = inference_options(config)
    backend, choice = build_backend(
        model,
        tokenizer,
        model_dir,
        options.backend,
        device=device,
        batch_size=options.batch_size,
        max_length=options.max_length,
        held_texts=texts,
        settings=options.choice,
        show=progress,
    )
    logits, seconds = backend_logits(
        backend,
        tokenizer,
        texts,
        batch_size=options.batch_size,
        max_length=options.max_length,
        progress=progress,
        desc=desc,
    )
    probs = logits_to_probs(task, logits)
    thresholds = stored_thresholds(model.config, label_names)
    stats = tested_metrics(
        task, labels, probs, label_names, thresholds, config.resamples if intervals else None, config.seed
    )
    stats.update(
        {
            "loss": loss_from_logits(task, logits, labels),
            "eval_time_s": seconds,
            "samples": len(frame),
            "samples_per_s": len(frame) / seconds if seconds > 0 else None,
            "backend": backend.name,
            "device": str(device),
        }
    )
    if choice is not None:
        stats["backend_choice"] = choice
    if check_fp32 and backend.name != "torch-fp32":
        reference = backend_logits(
            load_backend(model, "torch-fp32"),
            tokenizer,
            texts,
            batch_size=options.batch_size,
            max_length=options.max_length,
            progress=progress,
            desc=f"{desc} (fp32 check)",
        )[0]
        reference_probs = logits_to_probs(task, reference)
        stats["fp32_check"] = fp32_agreement(
            task, label_names, labels, probs, reference_probs, stats[primary_metric(task)]
        )
    return stats, labels, probs


def fp32_agreement(
    task: str,
    label_names: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    reference_probs: np.ndarray,
    value: float,
) -> dict:
    """How a backend's `probs` (primary metric `value`) compare with torch-fp32's `reference_probs` on the same
    texts: the share of texts with the same predicted label(s), torch-fp32's primary metric and the difference."""
    metric = primary_metric(task)
    fp32_value = compute_metrics(task, labels, reference_probs, label_names)[metric]
    if task == "multiclass":
        same = probs.argmax(axis=1) == reference_probs.argmax(axis=1)
    else:
        same = ((probs >= 0.5) == (reference_probs >= 0.5)).all(axis=1)
    return {
        "agreement": float(same.mean()),
        f"{metric}_fp32": fp32_value,
        f"{metric}_delta": value - fp32_value,
    }


@dataclasses.dataclass(frozen=True)
class ModelJob:
    """One model trained with one seed in a run, as every step of run_model sees it: its spec, the settings
    (config.seed: the seed), the run directory, `slug` (its folders there), `shown` (its name as printed), the
    fine-tuned `teacher` it is distilled from (or None), and whether to show progress and resume."""

    spec: str
    config: ExperimentConfig
    run: RunDir
    slug: str
    shown: str
    teacher: Path | None = None
    progress: bool = True
    resume: bool = False

    @property
    def results(self) -> Path:
        return self.run.results(self.slug)


def model_job(
    spec: str,
    config: ExperimentConfig,
    run: RunDir,
    progress: bool,
    teacher: Path | None,
    resume: bool,
    slug: str | None,
) -> ModelJob:
    """The job of run_model; a model trained with one of several seeds (train_seeds) has a slug of its own and
    is shown with its seed."""
    slug = slug or model_slug(spec)
    seeds = config.training_seeds()
    shown = (
        spec
        if slug == model_slug(spec)
        else f"{spec} (seed {config.seed}, {seeds.index(config.seed) + 1} of {len(seeds)})"
    )
    return ModelJob(spec, config, run, slug, shown, teacher, progress, resume)


def run_model(
    spec: str,
    config: ExperimentConfig,
    splits: dict[str, pd.DataFrame],
    label_names: list[str],
    run: RunDir,
    progress: bool = True,
    teacher: Path | None = None,
    resume: bool = False,
    slug: str | None = None,
) -> dict:
    """Fine-tune one model with config.seed (distil it from a fine-tuned `teacher` checkpoint when given), keep
    the best of its epochs (and averaged checkpoints), test it; write its stats and return its comparison row
    (also saved as results/<slug>/row.json, written last, so `resume` knows the model is done). `slug`: where it
    goes (default: the model's own folder; `<model>/seed-<s>` for one of several seeds)."""
    job = model_job(spec, config, run, progress, teacher, resume, slug)
    main = distributed.is_main_process()
    if distributed.share(resume and main and (job.results / "row.json").is_file()):
        say(f"\n== {job.shown}: finished before the run stopped; kept")
        return read_json(job.results / "row.json") if main else None
    ladder = parse_ladder_spec(spec)
    if ladder is not None:  # tfidf, static:<teacher>: trained, calibrated and tested by the first process alone
        from distilbench.experiments.ladder import run_ladder_model

        row = run_ladder_model(job, ladder, splits, label_names) if main else None
        distributed.barrier()
        return row
    model, tokenizer, params = load_to_train(job, label_names)
    train_data, val_data = encode_for_training(job, model, tokenizer, splits, label_names)
    result = train_or_reload(job, model, tokenizer, train_data, val_data, label_names)
    if not main:  # the first process tests and writes; the others wait for it before the next model
        distributed.barrier()
        return None
    best = keep_best(job, result)
    thresholds = tune_on_validation(job, best, splits["val"], label_names)
    test_stats = final_test(job, best, result, splits["test"], label_names, thresholds)
    row = comparison_row(job, model, params, result, best, test_stats, train_data)
    write_json_atomic(job.results / "row.json", row)
    distributed.barrier()
    return row


def load_to_train(job: ModelJob, label_names: list[str]) -> tuple:
    """The model to train (seeded with config.seed) and its tokenizer and parameter counts; fails early when the
    disk cannot hold its checkpoints."""
    config = job.config
    set_seed(config.seed)
    model, tokenizer = load_classifier(job.spec, config.task, label_names, config.head)
    params = count_parameters(model)
    say(
        f"\n== {job.shown}: {describe(model.config)['model_type']}, {describe(model.config)['layers']} layers, "
        f"{params['total'] / 1e6:.1f} M parameters"
    )
    # fp32 weights per kept epoch and average, the newest Trainer state (weights, two Adam moments), slack
    if distributed.is_main_process():
        averages = max(min(config.averaged_checkpoints(), config.epochs) - 1, 0)
        check_free_space(job.run.root, 4 * params["total"] * (config.epochs + averages + 4), f"training {job.spec}")
    return model, tokenizer, params


def encode_for_training(
    job: ModelJob, model, tokenizer, splits: dict[str, pd.DataFrame], label_names: list[str]
) -> tuple[EncodedDataset, EncodedDataset]:
    """The training and validation splits tokenized; a distilled student's training data also holds the
    teacher's logits, for the training texts and for the texts it learns from those alone."""
    from distilbench.training.finetune import encode_split

    config = job.config
    positions = max_positions(model.config)
    train_data = encode_split(tokenizer, splits["train"], config.task, label_names, config.max_length, positions)
    if job.teacher is not None:
        train_data = with_teacher_logits(job, train_data, tokenizer, splits, positions)
    val_data = encode_split(tokenizer, splits["val"], config.task, label_names, config.max_length, positions)
    return train_data, val_data


def with_teacher_logits(
    job: ModelJob, train_data: EncodedDataset, tokenizer, splits: dict[str, pd.DataFrame], positions: int
) -> EncodedDataset:
    """`train_data` with the teacher's logits (computed once, by the first process, and cached in the run), plus
    the rows of the texts with the teacher's outputs only (--unlabeled, --augment)."""
    from distilbench.training.distillation import soft_target_texts, teacher_logits_for

    config, main = job.config, distributed.is_main_process()
    cache_stem = job.run.root / "cache" / model_slug(str(job.teacher.resolve()))
    train_data.teacher_logits = distributed.share(
        teacher_logits_for(
            job.teacher,
            splits["train"]["text"].tolist(),
            Path(f"{cache_stem}.train-logits.npy"),
            batch_size=config.eval_batch_size,
            max_length=config.max_length,
            progress=job.progress,
        )
        if main
        else None
    )
    for what, texts in soft_target_texts(config, splits, tokenizer).items():
        logits = distributed.share(
            teacher_logits_for(
                job.teacher,
                texts,
                Path(f"{cache_stem}.{what.split()[0]}-logits.npy"),
                batch_size=config.eval_batch_size,
                max_length=config.max_length,
                progress=job.progress,
                what=what,
            )
            if main
            else None
        )
        train_data = train_data.with_soft_rows(tokenize_texts(tokenizer, texts, config.max_length, positions), logits)
    if train_data.labelled is not None:
        say(
            f"  training on {int(train_data.labelled.sum())} labelled texts and "
            f"{int((~train_data.labelled).sum())} texts with the teacher's outputs only"
        )
    return train_data


def train_or_reload(
    job: ModelJob,
    model,
    tokenizer,
    train_data: EncodedDataset,
    val_data: EncodedDataset,
    label_names: list[str],
) -> TrainResult | None:
    """Train the model (TrainResult); with `resume`, a model trained before the run stopped while testing it is
    not trained again: its result is read back from training_stats.json (None on the other processes)."""
    from distilbench.training.finetune import TrainingExtras, TrainResult, train_model

    config, main = job.config, distributed.is_main_process()
    if distributed.share(job.resume and main and (job.results / "training_stats.json").is_file()):
        if not main:
            return None
        saved = read_json(job.results / "training_stats.json")
        return TrainResult(
            saved["epochs"],
            saved["best_epoch"],
            saved["select_metric"],
            saved["precision"],
            saved["train_time_s"],
            saved.get("averages", []),
            kept_checkpoint(saved),
        )
    running_teacher = None
    if job.teacher is not None and (config.distill_hidden > 0 or config.distill_attention > 0):
        running_teacher = load_trained(job.teacher)[0]  # loaded once; runs on every training batch
    return train_model(
        model,
        tokenizer,
        train_data,
        val_data,
        config.task,
        label_names,
        config,
        job.run.model_dir(job.slug),
        job.shown,
        job.progress,
        job.resume,
        TrainingExtras(teacher=running_teacher, average_last=config.averaged_checkpoints()),
    )


def keep_best(job: ModelJob, result: TrainResult) -> Path:
    """Point models/<slug>/best at the kept checkpoint, write training_stats.json and say what was kept."""
    kept = result.kept
    best = mark_best(job.run, job.slug, kept, job.config.keep_checkpoints)
    write_json_atomic(
        job.results / "training_stats.json",
        {
            "model": job.spec,
            "best_epoch": result.best_epoch,
            "kept": kept,
            "select_metric": result.select_metric,
            "precision": result.precision,
            "train_time_s": result.train_time_s,
            "epochs": result.stats,
            "averages": result.averages,
        },
    )
    say(
        f"  kept: {describe_checkpoint(kept)} (the best by validation {result.select_metric}"
        + (f" among the epochs and the averages of the last {len(result.averages) + 1}" if result.averages else "")
        + ")"
    )
    return best


def tune_on_validation(job: ModelJob, best: Path, val: pd.DataFrame, label_names: list[str]) -> np.ndarray:
    """Predict the validation split with the kept checkpoint (val_predictions.csv); for multilabel, tune
    per-label thresholds on it and store them in the checkpoint. Returns the thresholds (0.5 each otherwise)."""
    config = job.config
    _, val_labels, val_probs = test_model(best, val, config, job.progress, "val", check_fp32=False)
    store_in_checkpoint(best, {"calibration": fit_calibration(config.task, val_labels, val_probs)})
    thresholds = np.full(len(label_names), 0.5)
    if config.task == "multilabel":
        thresholds = tune_thresholds(val_labels, val_probs, config.threshold_metric)
        store_thresholds(best, label_names, thresholds, config.threshold_metric)
        say(
            "  thresholds tuned on validation ("
            + config.threshold_metric
            + "): "
            + ", ".join(f"{n} {t:.2f}" for n, t in zip(label_names, thresholds))
        )
    write_csv_atomic(
        job.results / "val_predictions.csv",
        predictions_frame(val, config.task, label_names, val_labels, val_probs, thresholds),
    )
    return thresholds


def final_test(
    job: ModelJob, best: Path, result: TrainResult, test: pd.DataFrame, label_names: list[str], thresholds: np.ndarray
) -> dict:
    """Test the kept checkpoint with intervals: test_predictions.csv and test_stats.json; returns the stats."""
    config = job.config
    test_stats, labels, probs = test_model(best, test, config, job.progress, intervals=True)
    test_stats.update(
        {
            "model": job.spec,
            "checkpoint": str(job.run.model_dir(job.slug) / result.kept),
            "best_epoch": result.best_epoch,
            "kept": result.kept,
        }
    )
    write_csv_atomic(
        job.results / "test_predictions.csv",
        predictions_frame(test, config.task, label_names, labels, probs, thresholds),
    )
    write_json_atomic(job.results / "test_stats.json", test_stats)
    return test_stats


def training_method(job: ModelJob, model, train_data: EncodedDataset) -> str:
    """The row's `method`: how the model was built (a student cut from a teacher, a random control) and trained
    (on labels, or distilled from the teacher with which settings)."""
    from distilbench.training.distillation import distillation_variant

    config = job.config
    method = "fine-tuned on labels"
    if job.teacher is not None:
        method = (
            f"distilled from the fine-tuned {job.teacher} (alpha {config.alpha}, temperature "
            f"{config.temperature}{distillation_variant(config, train_data)})"
        )
    student = parse_student_spec(job.spec)
    if student is None:
        return method
    layers = model.config.to_dict().get(DISTILBENCH_KEY, {}).get("teacher_layers")
    architecture = describe(model.config)["model_type"]
    if student.kind == "scratch":
        built = f"{architecture} of {len(layers)} layers, random weights (control)"
    elif student.kind == "student" and architecture == "distilbert":
        built = f"DistilBERT-style student of {student.teacher} (teacher layers {layers})"
    else:
        built = f"{len(layers)}-layer {architecture} copy of {student.teacher} (teacher layers {layers})"
    return f"{built}, {method}"


def comparison_row(
    job: ModelJob,
    model,
    params: dict,
    result: TrainResult,
    best: Path,
    test_stats: dict,
    train_data: EncodedDataset,
) -> dict:
    """The model's row of the comparison: how it was made, its size, validation and test metrics and times."""
    from distilbench.training.distillation import distillation_settings

    best_row = result.kept_row()
    row = {
        "model": job.spec,
        "seed": job.config.seed,
        "method": training_method(job, model, train_data),
        "teacher": str(job.teacher) if job.teacher is not None else None,
        "architecture": describe(model.config),
        "params": params["total"],
        "params_by_block": params,
        "size_mb": dir_size_mb(best),
        "best_epoch": result.best_epoch,
        "kept": result.kept,
        "select_metric": result.select_metric,
        "val": {k[4:]: v for k, v in best_row.items() if k.startswith("val_") and k != "val_time_s"},
        "test": summary_metrics(test_stats),
        "test_tuned": summary_metrics(test_stats["at_tuned_thresholds"])
        if "at_tuned_thresholds" in test_stats
        else None,
        "train_time_s": sum(row["train_time_s"] for row in result.stats),
        "eval_time_s": test_stats["eval_time_s"],
        "eval_samples_per_s": test_stats["samples_per_s"],
        "precision": result.precision,
        "backend": test_stats["backend"],
        "backend_choice": test_stats.get("backend_choice"),
        "checkpoint": str(best),
        "calibration": read_json(best / "config.json").get(DISTILBENCH_KEY, {}).get("calibration"),
    }
    if job.teacher is not None:
        row["distillation"] = distillation_settings(job.config, train_data)
    return row


def check_distillation_inputs(config: ExperimentConfig) -> None:
    """Fail before any training on an --unlabeled source that cannot be read (missing, empty, not text)."""
    if config.unlabeled:
        from distilbench.data.readers import check_input

        check_input(config.unlabeled)


def measure_speed(rows: list[dict], config: ExperimentConfig, run: RunDir, texts: list[str], progress: bool) -> None:
    """Throughput and latency of every best checkpoint under `distilbench bench`'s protocol (warm-up,
    alternating rounds, median and spread), on the test texts, each with the backend it was tested with."""
    from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench

    say("\nspeed (bench protocol: warm-up, 5 alternating rounds, median) ...")
    report = run_bench(
        [row["checkpoint"] for row in rows],
        per_model_backends=[row["backend"] for row in rows],
        source=BenchTexts(texts=texts),
        choice=None,
        options=BenchOptions(
            batch_size=config.eval_batch_size,
            samples=min(512, max(len(texts), 64)),
            repeats=5,
            latency_samples=50,
            max_length=config.max_length,
            memory=False,
            metric=False,
            device=config.device,
        ),
        out=str(run.root / "speed.json"),
        progress=progress,
        show=False,
    )
    for row, measured in zip(rows, report["results"]):
        row.update(
            {"throughput": measured["samples_per_s"], "latency_ms": measured["latency_ms"], "mfu": measured["mfu"]}
        )


def teacher_in_run(spec: str, config: ExperimentConfig, run: RunDir, seed: int | None = None) -> Path | None:
    """A student listed after its teacher is distilled from the teacher fine-tuned in this run (unless
    config.distill is off); with several seeds, each seed of the student from the same seed of the teacher."""
    if not config.distill:
        return None
    student = parse_student_spec(spec)
    if student is not None:
        teacher = student.teacher
    elif Path(spec, "config.json").is_file():  # e.g. the output of distill-general names its teacher
        teacher = read_json(Path(spec, "config.json")).get(DISTILBENCH_KEY, {}).get("teacher")
    else:
        return None
    earlier = config.models[: config.models.index(spec)]
    if teacher not in earlier:
        return None
    return run.best_dir(model_slug(teacher) if seed is None else f"{model_slug(teacher)}/seed-{seed}")


SPREAD_TIMES = ("train_time_s", "eval_time_s")


def spread_over_seeds(values: list[float]) -> dict:
    """mean, standard deviation (sample; 0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def train_seeds(
    spec: str,
    config: ExperimentConfig,
    splits: dict[str, pd.DataFrame],
    label_names: list[str],
    run: RunDir,
    progress: bool,
    resume: bool,
    teacher: Path | None = None,
) -> dict | None:
    """Train and test one model once per seed (config.training_seeds()) on the same splits. One seed: the
    model's own folders, as always. Several: models/<model>/seed-<s>/ and results/<model>/seed-<s>/ per seed,
    then one combined row (combine_seeds). `teacher`: a fine-tuned checkpoint every seed is distilled from
    (distill); by default a student learns from its teacher fine-tuned earlier in this run (teacher_in_run)."""
    seeds = config.training_seeds()
    if len(seeds) == 1:
        seeded = dataclasses.replace(config, seed=seeds[0])
        return run_model(
            spec, seeded, splits, label_names, run, progress, teacher or teacher_in_run(spec, config, run), resume
        )
    slug = model_slug(spec)
    main = distributed.is_main_process()
    if distributed.share(resume and main and (run.results(slug) / "row.json").is_file()):
        say(f"\n== {spec}: all {len(seeds)} seeds finished before the run stopped; kept")
        return read_json(run.results(slug) / "row.json") if main else None
    seed_rows = []
    for seed in seeds:
        seeded = dataclasses.replace(config, seed=seed)
        seed_rows.append(
            run_model(
                spec,
                seeded,
                splits,
                label_names,
                run,
                progress,
                teacher or teacher_in_run(spec, config, run, seed),
                resume,
                slug=f"{slug}/seed-{seed}",
            )
        )
    return combine_seeds(spec, seed_rows, run, config) if main else None


def combine_seeds(spec: str, seed_rows: list[dict], run: RunDir, config: ExperimentConfig) -> dict:
    """One row for a model trained with several seeds: every metric and time as the mean over seeds, with its
    spread (mean, std, min, max) and each seed's own numbers. The seed with the best validation score is the
    model's checkpoint (models/<model>/best points at it) and its files are copied to results/<model>/, so the
    plots and the report show it; results/<model>/row.json is written last."""
    slug = model_slug(spec)
    metric = seed_rows[0]["select_metric"]
    sign = -1 if "loss" in metric else 1
    chosen = max(seed_rows, key=lambda r: (sign * r["val"].get(metric, float("-inf")), -r["seed"]))
    link_best(run.best_dir(slug), Path(chosen["checkpoint"]).resolve())
    source = run.results(f"{slug}/seed-{chosen['seed']}")
    for name in ("training_stats.json", "test_stats.json", "test_predictions.csv", "val_predictions.csv"):
        write_bytes_atomic(run.results(slug) / name, (source / name).read_bytes())
    row = dict(chosen)
    for key in ("test", "test_tuned"):
        if chosen.get(key):
            row[key] = {
                name: statistics.fmean(r[key][name] for r in seed_rows)
                for name, value in chosen[key].items()
                if isinstance(value, (int, float))
            }
    row["test_spread"] = {
        name: spread_over_seeds([r["test"][name] for r in seed_rows])
        for name, value in chosen["test"].items()
        if isinstance(value, (int, float))
    }
    for key in SPREAD_TIMES:
        row[key] = statistics.fmean(r[key] for r in seed_rows)
        row[f"{key[:-2]}_spread"] = spread_over_seeds([r[key] for r in seed_rows])
    row["eval_samples_per_s"] = statistics.fmean(r["eval_samples_per_s"] for r in seed_rows)
    row["seeds"] = [
        {
            k: r.get(k)
            for k in (
                "seed",
                "best_epoch",
                "kept",
                "val",
                "test",
                "test_tuned",
                "train_time_s",
                "eval_time_s",
                "checkpoint",
                "method",
            )
        }
        for r in seed_rows
    ]
    row["checkpoint"] = str(run.best_dir(slug))
    row["chosen_seed"] = chosen["seed"]
    if chosen.get("teacher") and len({r["teacher"] for r in seed_rows}) > 1:  # each seed its own seed's teacher
        row["method"] = chosen["method"].replace(
            f"the fine-tuned {chosen['teacher']}", "the same seed's fine-tuned teacher"
        )
        row["teacher"] = str(Path(chosen["teacher"]).parent.parent / "best")
    row["method"] += f"; {len(seed_rows)} seeds ({', '.join(str(r['seed']) for r in seed_rows)})"
    write_json_atomic(run.results(slug) / "row.json", row)
    return row


def _ci_columns(row: dict, metric: str) -> dict:
    ci = (row.get("test_ci") or {}).get(metric) or {}
    return {f"{metric}_low": _rounded(ci.get("low")), f"{metric}_high": _rounded(ci.get("high"))}


def _rounded(value, digits: int = 4):
    return None if value is None else round(value, digits)


def comparison_table(rows: list[dict], task: str) -> pd.DataFrame:
    """The flat table written to comparison.csv (numbers; printed_table shows it with intervals)."""
    metric = primary_metric(task)
    extra = ["f1_macro"] if task == "multiclass" else ["f1_micro", "f1_macro", "exact_match", "roc_auc_macro"]
    table = pd.DataFrame(
        [
            {
                "model": row["model"],
                "params_m": round(row["params"] / 1e6, 2),
                "size_mb": round(row["size_mb"], 1),
                "best_epoch": row["best_epoch"],
                "seeds": len(row.get("seeds") or [row]),
                metric: round(row["test"][metric], 4),
                **_ci_columns(row, metric),
                **(
                    {f"{metric}_std_seeds": round(row["test_spread"][metric]["std"], 4)}
                    if row.get("test_spread")
                    else {}
                ),
                **{name: _rounded(row["test"].get(name)) for name in extra},
                **(
                    {
                        "diff_points": _rounded((row.get("vs_reference") or {}).get("difference_points"), 2),
                        "diff_low": _rounded((row.get("vs_reference") or {}).get("low"), 2),
                        "diff_high": _rounded((row.get("vs_reference") or {}).get("high"), 2),
                        "verdict": (row.get("vs_reference") or {}).get("verdict", "reference"),
                    }
                    if "vs_reference" in row
                    else {}
                ),
                **({"learned_nothing": row["learned_nothing"]["flag"]} if "learned_nothing" in row else {}),
                "train_time_s": round(row["train_time_s"], 1),
                "eval_time_s": round(row["eval_time_s"], 2),
                **(
                    {
                        "samples_per_s": round(row["throughput"]["median"], 1),
                        "p50_ms": round(row["latency_ms"]["p50"], 1),
                    }
                    if "throughput" in row
                    else {}
                ),
                "eval_speedup": _rounded(row["eval_speedup"], 2),
                "train_speedup": _rounded(row["train_speedup"], 2),
            }
            for row in rows
        ]
    )
    kept = [kept_checkpoint(row) for row in rows]
    if any(name.startswith("average") for name in kept):  # which checkpoint was tested, where it was not an epoch
        table.insert(table.columns.get_loc("best_epoch") + 1, "kept", kept)
    return table


def printed_table(rows: list[dict], task: str) -> pd.DataFrame:
    """The table printed at the end of compare: the primary metric with its 95 % interval (and its standard
    deviation over seeds), the difference to the reference with its paired interval, the verdict and the
    baseline flag, for multilabel the primary metric at the thresholds tuned on validation, then the other
    metrics, times and speeds."""
    metric = primary_metric(task)
    table = comparison_table(rows, task)
    shown = pd.DataFrame({"model": table["model"]})
    shown[f"{metric} [95% CI]"] = [
        interval_text((row.get("test_ci") or {}).get(metric)) if row.get("test_ci") else f"{row['test'][metric]:.4f}"
        for row in rows
    ]
    if f"{metric}_std_seeds" in table:
        shown["sd over seeds"] = table[f"{metric}_std_seeds"].map(lambda v: f"{v:.4f}")
    if "verdict" in table:
        shown["vs reference, points"] = [difference_text(row.get("vs_reference")) for row in rows]
        shown["verdict"] = table["verdict"]
    if "learned_nothing" in table:
        shown["beats baseline"] = ["NO" if flag else "yes" for flag in table["learned_nothing"]]
    if any("test_tuned_ci" in row for row in rows):  # multilabel: what predict and serve give, with its interval
        shown[f"{metric} at its thresholds [95% CI]"] = [
            interval_text((row.get("test_tuned_ci") or {}).get(metric)) for row in rows
        ]
    dropped = {
        "model",
        metric,
        f"{metric}_low",
        f"{metric}_high",
        f"{metric}_std_seeds",
        "diff_points",
        "diff_low",
        "diff_high",
        "verdict",
        "learned_nothing",
    }
    return pd.concat([shown, table[[c for c in table.columns if c not in dropped]]], axis=1)


def prepare_run_dir(out: str | None, overwrite: bool, resume: bool = False) -> RunDir:
    """The run directory, locked: new and empty, replaced (`overwrite`), or kept to continue (`resume`);
    see runs.open_run_dir for what is refused."""
    return open_run_dir(out, overwrite, resume)


def load_saved_splits(run: RunDir, task: str) -> tuple[dict[str, pd.DataFrame], list[str]] | None:
    """The splits a run saved before it stopped, or None when data preparation did not finish."""
    summary_path = run.data / "summary.json"
    if not summary_path.is_file():
        return None
    label_names = read_json(summary_path)["label_names"]
    splits = {
        name: datalib.load_split(run.data / f"{name}.csv", task, label_names) for name in ("train", "val", "test")
    }
    say("data: the splits saved by the run — " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits, label_names


def open_run(config: ExperimentConfig, overwrite: bool, resume: bool) -> RunDir:
    """The locked run directory (the first process's; the others of a distributed launch only read)."""
    distributed.init()
    return prepare_run_dir(config.out, overwrite, resume) if distributed.is_main_process() else RunDir(config.out)


def check_inputs(
    config: ExperimentConfig, overwrite: bool, resume: bool, label_names: list[str] | None = None
) -> PreparedData | None:
    """Everything a run can be refused for on its input, checked before its directory is created or changed, so
    that the corrected command starts as if the wrong one had never run: the --out directory, the distillation
    inputs, the models' names (a misspelt alias fails now, not after the models before it trained) and the data
    (read and split in memory; start_run saves the splits). Returns the data, or None where start_run reads it:
    a resumed run that saved its splits, a process other than the first of a distributed launch."""
    main = distributed.is_main_process()
    if main:
        check_run_dir(config.out, overwrite, resume)
    check_distillation_inputs(config)
    check_model_specs(config.models)
    if not main or (resume and (Path(config.out) / "data" / "summary.json").is_file()):
        return None
    return read_splits(config, label_names)


def start_run(
    config: ExperimentConfig,
    run: RunDir,
    resume: bool,
    label_names: list[str] | None = None,
    prepared: PreparedData | None = None,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Save the settings and the data splits (`prepared` by check_inputs, else read now; or the splits of a
    resumed run); every process gets the first process's splits. A new run whose data fails here leaves
    nothing behind (RunDir.discard)."""
    splits = None
    if distributed.is_main_process():
        try:
            save_config(config, run.config)
            splits = (load_saved_splits(run, config.task) if resume else None) or prepare_data(
                config, run, label_names, prepared=prepared
            )
        except DistilbenchError:
            run.discard()
            raise
    return distributed.share(splits)


def compare(
    config: ExperimentConfig, overwrite: bool = False, progress: bool = True, resume: bool = False
) -> list[dict]:
    """Run the whole comparison and write comparison.json/.csv last (their presence means it finished).
    `resume` continues a stopped run in `config.out`: finished models are kept, a model in training
    continues after its last finished epoch. Under torchrun/accelerate every process trains; the first
    one does everything else."""
    prepared = check_inputs(config, overwrite, resume)
    if config.distillation_extras() and not any(teacher_in_run(spec, config, RunDir(".")) for spec in config.models):
        warn(
            f"{', '.join(config.distillation_extras())} apply to a student listed after its teacher "
            f"(--models TEACHER,student:TEACHER); no model here has its teacher in the run, so they are unused"
        )
    with open_run(config, overwrite, resume) as run:
        splits, label_names = start_run(config, run, resume, prepared=prepared)
        progress = progress and distributed.is_main_process()
        rows = [train_seeds(spec, config, splits, label_names, run, progress, resume) for spec in config.models]
        if not distributed.is_main_process():
            return []
        if config.measure_speed:
            measure_speed(rows, config, run, splits["test"]["text"].tolist(), progress)
        first = rows[0]
        for row in rows:
            if config.measure_speed:
                row["eval_speedup"] = row["throughput"]["median"] / first["throughput"]["median"]
            else:
                row["eval_speedup"] = first["eval_time_s"] / row["eval_time_s"] if row["eval_time_s"] else None
            row["train_speedup"] = first["train_time_s"] / row["train_time_s"] if row["train_time_s"] else None
        say("\nstatistics: bootstrap intervals, paired comparisons, trivial baselines ...")
        assessment = assess(rows, config.verdict_options(), run, splits, label_names)
        table = comparison_table(rows, config.task)
        write_csv_atomic(run.comparison_csv, table)
        write_json_atomic(
            run.comparison_json,
            {
                "task": config.task,
                "data": config.data,
                "primary_metric": primary_metric(config.task),
                "label_names": label_names,
                "rows_per_split": {k: len(v) for k, v in splits.items()},
                "machine": machine_info(),
                **assessment,
                "rows": rows,
            },
        )
        say("\n" + printed_table(rows, config.task).to_string(index=False))
        say(
            "\ntrivial baselines (from the training split):\n"
            + baseline_table(assessment, config.task).to_string(index=False)
        )
        lines, warnings = verdict_lines(rows, assessment)
        if lines:
            say("\n" + "\n".join(lines))
        for line in warnings:
            warn(line)
        say(f"\nresults: {run.comparison_json}")
        write_run_report(run)
    return rows


def write_run_report(run: RunDir) -> None:
    """Plots, report.html and report.md; the comparison is complete already, so a failure here warns."""
    from distilbench.reporting.report import write_report

    try:
        html, _ = write_report(run.root)
        say(f"report:  {html}")
    except Exception as exc:  # noqa: BLE001 - the results stand without their report
        log.exception("report failed")
        warn(f"the report could not be written ({exc}); rerun `distilbench report {run.root}`")


def resolve_teacher(teacher: str) -> Path:
    """A fine-tuned teacher: a checkpoint directory, or a run directory holding exactly one model."""
    path = Path(teacher)
    if (path / "config.json").is_file():
        return path
    bests = sorted((path / "models").glob("*/best")) if path.is_dir() else []
    if len(bests) == 1:
        return bests[0]
    if len(bests) > 1:
        raise DistilbenchError(f"run {teacher} holds several models; pass one checkpoint, e.g. --teacher {bests[0]}")
    raise DistilbenchError(f"--teacher {teacher} is not a fine-tuned checkpoint nor a run directory with one")


def distill(
    config: ExperimentConfig,
    teacher: str,
    student: str,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Distil `student` from a fine-tuned `teacher` checkpoint on the data of `config` (a run of one model),
    once per seed (config.training_seeds()), every seed from the same teacher. The student is a student spec
    (cut from a teacher's layers) or any pretrained model: an alias, a hub name or a directory, with its own
    architecture and tokenizer (the soft targets are the teacher's outputs on the texts, not on tokens)."""
    teacher_dir = resolve_teacher(teacher)
    task, teacher_labels = read_task_labels(teacher_dir)
    config.task, config.models = task, [student]
    prepared = check_inputs(config, overwrite, resume, teacher_labels)  # the data read with the teacher's labels
    with open_run(config, overwrite, resume) as run:
        splits, label_names = start_run(config, run, resume, teacher_labels, prepared)
        if set(label_names) != set(teacher_labels):
            raise DistilbenchError(
                f"the data's labels ({', '.join(label_names)}) are not the teacher's ({', '.join(teacher_labels)})"
            )
        progress = progress and distributed.is_main_process()
        row = train_seeds(student, config, splits, teacher_labels, run, progress, resume, teacher=teacher_dir)
        if not distributed.is_main_process():
            return {}
        teacher_stats, _, _ = test_model(
            teacher_dir, splits["test"], config, progress, "teacher test", check_fp32=False
        )
        row.update({"teacher_test": summary_metrics(teacher_stats), "eval_speedup": 1.0, "train_speedup": 1.0})
        say("\nstatistics: bootstrap intervals, trivial baselines ...")
        assessment = assess(
            [row], config.verdict_options(), run, splits, teacher_labels
        )  # the student's intervals and flags
        row.pop("vs_reference", None)  # the one row is its own reference: no difference to show
        write_csv_atomic(run.comparison_csv, comparison_table([row], task))
        write_json_atomic(
            run.comparison_json,
            {
                "task": task,
                "data": config.data,
                "primary_metric": primary_metric(task),
                "label_names": teacher_labels,
                "teacher": str(teacher_dir),
                "rows_per_split": {k: len(v) for k, v in splits.items()},
                "machine": machine_info(),
                **assessment,
                "rows": [row],
            },
        )
        say("\n" + printed_table([row], task).to_string(index=False))
        say(
            "\ntrivial baselines (from the training split):\n" + baseline_table(assessment, task).to_string(index=False)
        )
        for line in verdict_lines([row], assessment)[1]:  # no verdict lines: the one row is the reference
            warn(line)
        metric = primary_metric(task)
        spread = (row.get("test_spread") or {}).get(metric)
        over_seeds = (
            f" (mean of {len(row['seeds'])} seeds, sd {spread['std']:.4f}, {spread['min']:.4f}-{spread['max']:.4f})"
            if spread
            else ""
        )
        say(f"\nteacher {metric} {teacher_stats[metric]:.4f}, student {row['test'][metric]:.4f}{over_seeds}")
        say(f"results: {run.comparison_json}")
        write_run_report(run)
    return row


def evaluate(
    model_dir: str,
    source: str,
    config: ExperimentConfig,
    out: str | None,
    progress: bool = True,
    check_fp32: bool = False,
) -> dict:
    """Test a saved checkpoint on any data source; write the metrics JSON to `out`. `check_fp32`: also predict
    with torch-fp32 and report the agreement (auto's choice was already guarded when it was made)."""
    model_path = Path(model_dir)
    task, label_names = read_task_labels(model_path)
    config.task = task
    frame, _, dropped = load_task_data(source, config, label_names)
    for reason, count in dropped.items():
        if count:
            say(f"dropped {count} rows: {reason}")
    stats, labels, probs = test_model(
        model_path, frame, config, progress, desc="evaluate", check_fp32=check_fp32, intervals=True
    )
    stats.update({"model": str(model_dir), "data": source, "task": task})
    if out:
        write_json_atomic(Path(out), stats)
    summary = summary_metrics(stats)
    say(", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float)))
    return stats
