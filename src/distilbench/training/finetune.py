"""Fine-tuning with the transformers Trainer: one checkpoint and one row of statistics per epoch."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from distilbench.config import LR_SCHEDULES, ExperimentConfig
from distilbench.core.console import DistilbenchError, say
from distilbench.evaluation.metrics import compute_metrics, label_array, summary_metrics
from distilbench.runs import (
    checkpoint_name,
    describe_checkpoint,
    fsync_tree,
    save_checkpoint,
    write_json_atomic,
    write_text_atomic,
)
from distilbench.runtime.inference import logits_to_probs, pick_precision, tokenize_texts
from distilbench.runtime.machine import pick_device
from distilbench.training import distributed
from distilbench.training.distillation import DistillationTrainer, mapped_teacher_layers, use_eager_attention
from distilbench.training.probe import fit_probe, set_output_layer
from distilbench.training.trainer import DistilbenchTrainer, loss_weights

log = logging.getLogger(__name__)

RESUME_DIR = ".trainer"  # the Trainer's full state (model, optimizer, scheduler, RNG) after the last epoch
COMPLETE_MARK = "distilbench-complete"
EPOCH_STATS = "epoch_stats.json"


class EncodedDataset(torch.utils.data.Dataset):
    """A split tokenized once (unpadded) with its labels: ints (multiclass) or 0/1 floats (multilabel).
    `labelled`: which rows have labels, when some do not (distillation's unlabelled texts and augmented
    copies, which learn from the teacher's outputs alone); their labels are placeholders. `texts`: the labelled
    rows' texts, for --head-init probe."""

    def __init__(
        self,
        encodings: dict,
        labels: np.ndarray,
        teacher_logits: np.ndarray | None = None,
        labelled: np.ndarray | None = None,
        texts: list[str] | None = None,
    ):
        self.encodings = {
            k: list(v) for k, v in encodings.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        self.labels = labels
        self.teacher_logits = teacher_logits  # cached soft targets for distillation, one row per text
        self.labelled = labelled
        self.texts = texts

    def with_soft_rows(self, encodings: dict, teacher_logits: np.ndarray) -> "EncodedDataset":
        """This labelled split (with its teacher logits) plus rows that have the teacher's outputs only."""
        n = len(teacher_logits)
        placeholder = np.zeros((n, *self.labels.shape[1:]), dtype=self.labels.dtype)
        labelled = self.labelled if self.labelled is not None else np.ones(len(self), dtype=bool)
        merged = {k: v + list(encodings[k]) for k, v in self.encodings.items()}
        return EncodedDataset(
            merged,
            np.concatenate([self.labels, placeholder]),
            np.concatenate([self.teacher_logits, teacher_logits]),
            np.concatenate([labelled, np.zeros(n, dtype=bool)]),
            self.texts,
        )

    def labelled_labels(self) -> np.ndarray:
        """The labels of the rows that have them."""
        return self.labels if self.labelled is None else self.labels[self.labelled]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i].tolist() if self.labels.ndim > 1 else int(self.labels[i])
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[i].tolist()
        if self.labelled is not None:
            item["labelled"] = bool(self.labelled[i])
        return item


def encode_split(
    tokenizer, frame, task: str, label_names: list[str], max_length: int | None, positions: int | None = None
) -> EncodedDataset:
    """A split tokenized for training (at most inference.token_limit tokens per text) with its targets."""
    texts = frame["text"].tolist()
    return EncodedDataset(
        tokenize_texts(tokenizer, texts, max_length, positions), label_array(frame, task, label_names), texts=texts
    )


@dataclass
class TrainResult:
    stats: list[dict]
    best_epoch: int  # the best single epoch by the validation select metric
    select_metric: str
    precision: str
    train_time_s: float
    averages: list[dict]  # validation rows of the averaged checkpoints (none unless average_last >= 2)
    kept: str  # the folder of the checkpoint kept: the best of the epochs and averages on validation

    def kept_row(self) -> dict:
        """The validation row of the kept checkpoint (an epoch's or an average's)."""
        return next(row for row in self.stats + self.averages if checkpoint_name(row) == self.kept)


NOT_VALIDATION_METRICS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_epoch")


def validation_row(metrics: dict) -> dict:
    """The Trainer's evaluation metrics as statistics: val_loss, val_<metric> for each metric, val_time_s."""
    row = {"val_loss": metrics["eval_loss"]}
    row.update(
        {f"val_{k[5:]}": v for k, v in metrics.items() if k.startswith("eval_") and k not in NOT_VALIDATION_METRICS}
    )
    row["val_time_s"] = metrics.get("eval_runtime", 0.0)
    return row


def shown_validation(row: dict) -> str:
    """A statistics row's validation metrics for the console: 'val_loss 0.2710, val_accuracy 0.9070, ...'."""
    return ", ".join(
        f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_") and k != "val_time_s" and isinstance(v, float)
    )


class EpochCallback(TrainerCallback):
    """Times each epoch, shows a progress bar with the running loss, saves a checkpoint and a stats row."""

    def __init__(
        self,
        trainer: DistilbenchTrainer,
        save_dir: Path,
        name: str,
        progress: bool,
        stats: list[dict] | None = None,
        metric: str = "loss",
        patience: int | None = None,
    ):
        self.trainer, self.save_dir, self.name, self.progress = trainer, save_dir, name, progress
        self.metric, self.patience = metric, patience
        self.stats: list[dict] = list(stats or [])  # rows of epochs finished before a resume
        self.bar = None
        self.epoch_start = self.train_time = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.loss_sum, self.trainer.loss_count = 0.0, 0
        self.epoch_start = time.perf_counter()
        epoch = int(round(state.epoch or 0)) + 1
        steps = math.ceil(state.max_steps / max(args.num_train_epochs, 1))
        self.bar = tqdm(
            total=steps,
            desc=f"{self.name} epoch {epoch}/{int(args.num_train_epochs)}",
            unit="step",
            disable=not self.progress or not state.is_world_process_zero,
            leave=False,
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.trainer.epoch_loss():.4f}")

    def on_epoch_end(self, args, state, control, **kwargs):
        self.train_time = time.perf_counter() - self.epoch_start
        if self.bar is not None:
            self.bar.close()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        epoch = int(round(state.epoch))
        train_loss = distributed.global_mean(self.trainer.loss_sum, self.trainer.loss_count)  # over all processes
        row = {"epoch": epoch, "train_loss": train_loss, **validation_row(metrics)}
        row.update({"train_time_s": self.train_time, "val_time_s": row.pop("val_time_s")})
        row["total_time_s"] = row["train_time_s"] + row["val_time_s"]
        self.stats.append(row)
        if state.is_world_process_zero:
            save_checkpoint(self.trainer.model, self.trainer.processing_class, self.save_dir / f"epoch-{epoch}")
            write_json_atomic(self.save_dir / EPOCH_STATS, self.stats)
            say(
                f"  {self.name} epoch {epoch}: train_loss {row['train_loss']:.4f}, {shown_validation(row)} "
                f"({row['train_time_s']:.1f} s train, {row['val_time_s']:.1f} s val)"
            )
        if self.patience is not None and epoch < args.num_train_epochs:
            best = choose_best_epoch(self.stats, self.metric)
            if epoch - best >= self.patience:
                control.should_training_stop = True
                if state.is_world_process_zero:
                    say(
                        f"  {self.name}: stopping early, validation {self.metric} has not improved for "
                        f"{epoch - best} epoch(s) since epoch {best} (--patience {self.patience})"
                    )

    def on_save(self, args, state, control, **kwargs):
        """The Trainer has written its whole state for this epoch: mark it complete, then drop older ones.
        A state without the mark (a kill while it was written) is never resumed from."""
        if state.is_world_process_zero:
            newest = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            mark_complete(newest, int(round(state.epoch)))
            for older in Path(args.output_dir).glob("checkpoint-*"):
                if older != newest:
                    shutil.rmtree(older, ignore_errors=True)


def mark_complete(checkpoint: Path, epoch: int) -> None:
    """Flush every file of a Trainer state to the disk, then write its completion mark (durably): a state with
    the mark is whole on disk, whatever happens next (kill -9, a power cut)."""
    fsync_tree(checkpoint)
    write_text_atomic(Path(checkpoint) / COMPLETE_MARK, f"epoch {epoch}\n")


def last_complete_state(save_dir: Path) -> tuple[Path, int] | None:
    """The newest Trainer state marked complete under `save_dir`, and its epoch; None when there is none."""
    found = []
    for directory in (Path(save_dir) / RESUME_DIR).glob("checkpoint-*"):
        try:
            state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (directory / COMPLETE_MARK).is_file():
            found.append((int(round(state["epoch"])), directory))
    if not found:
        return None
    epoch, directory = max(found)
    return directory, epoch


def choose_best(rows: list[dict], metric: str) -> dict:
    """The validation row (an epoch's or an averaged checkpoint's) with the best `metric` (lowest for losses,
    highest otherwise); ties go to the lower validation loss, then to an epoch over an average, then to the
    earlier epoch. A multilabel row that found no positive label on validation (micro F1 0: it predicts nothing,
    or only false alarms) never wins over one that found some, since the hamming score and the exact match count
    an empty prediction on an empty row as right and can prefer a model that learned nothing."""
    key = metric if metric.startswith("val_") else f"val_{metric}"
    if key not in rows[0]:
        known = sorted(k[4:] for k in rows[0] if k.startswith("val_") and k != "val_time_s")
        raise DistilbenchError(f"--select-metric '{metric}' is not a validation metric; choose from {', '.join(known)}")
    sign = 1 if "loss" in key else -1  # lower is better for losses, higher for everything else

    def rank(row: dict) -> tuple:
        found_nothing = row.get("val_f1_micro") == 0
        return found_nothing, sign * row[key], row["val_loss"], row.get("epoch", math.inf)

    return min(rows, key=rank)


def choose_best_epoch(stats: list[dict], metric: str) -> int:
    """The epoch with the best validation `metric` (lowest for losses, highest otherwise)."""
    return choose_best(stats, metric)["epoch"]


def average_weights(checkpoints: list[Path], model) -> None:
    """Load into `model` the uniform average of the weights of saved checkpoints of its architecture (a
    "model soup" of one run's epochs; integer buffers, identical in all, are taken from the last)."""
    from safetensors.torch import load_file

    total, count = None, 0
    for checkpoint in checkpoints:
        state = load_file(str(Path(checkpoint) / "model.safetensors"))
        if total is None:
            total = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
        else:
            for k, v in state.items():
                if v.is_floating_point():
                    total[k] += v.double()
        count += 1
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    averaged = {
        k: (v / count).to(dtypes.get(k, torch.float32)) if v.is_floating_point() else v for k, v in total.items()
    }
    missing, unexpected = model.load_state_dict(averaged, strict=False)
    if unexpected or any(k in averaged for k in missing):
        raise DistilbenchError(f"cannot average {checkpoints[0].parent}: its checkpoints do not match the model")


def evaluate_averages(trainer: Trainer, save_dir: Path, stats: list[dict], last: int, name: str) -> list[dict]:
    """Validation rows for the uniform averages of the weights of the last 2, 3, ..., `last` epochs' checkpoints,
    each evaluated by the Trainer exactly as the epochs were (same metrics, precision and loss) and saved as
    `save_dir/average-<first>-<last>/`. The trainer's model ends with the last average's weights."""
    epochs = [row["epoch"] for row in stats]
    rows = []
    distributed.barrier()  # every process reads the checkpoints the first one wrote
    for size in range(2, min(last, len(epochs)) + 1):
        window = epochs[-size:]
        folder = f"average-{window[0]}-{window[-1]}"
        average_weights([save_dir / f"epoch-{e}" for e in window], trainer.model)
        row = {"checkpoint": folder, "epochs": window, **validation_row(trainer.evaluate())}
        rows.append(row)
        if distributed.is_main_process():
            save_checkpoint(trainer.model, trainer.processing_class, save_dir / folder)
            say(f"  {name} {describe_checkpoint(folder)}: {shown_validation(row)}")
    return rows


def probe_head(model, tokenizer, train_data: EncodedDataset, task: str, config: ExperimentConfig, name: str) -> None:
    """--head-init probe: the output layer fitted on the frozen encoder's features of the labelled training texts
    (probe.py), by the first process; every process then sets the same weights."""
    if train_data.texts is None:
        raise DistilbenchError("--head-init probe needs the training texts")
    fitted = None
    if distributed.is_main_process():
        weight, bias, done = fit_probe(
            model,
            tokenizer,
            train_data.texts,
            train_data.labelled_labels(),
            task,
            config.class_weight == "balanced",
            config.eval_batch_size,
            config.max_length,
        )
        say(
            f"  {name}: output layer fitted on the frozen encoder's features (logistic regression, C "
            f"{', '.join(f'{c:g}' for c in done['C'])}) in {done['seconds']:.0f} s"
        )
        fitted = weight, bias
    set_output_layer(model, *distributed.share(fitted))


@dataclass(frozen=True)
class TrainingExtras:
    """What a caller adds to plain fine-tuning: more TrainerCallbacks, called after the epoch's statistics are
    taken (tune's pruning); the fine-tuned teacher model, run alongside a distilled student for the config's
    intermediate-layer losses; and the number of last epochs whose averaged weights compete for the kept
    checkpoint (0: none)."""

    callbacks: tuple | list = ()
    teacher: object = None
    average_last: int = 0


def train_model(
    model,
    tokenizer,
    train_data: EncodedDataset,
    val_data: EncodedDataset,
    task: str,
    label_names: list[str],
    config: ExperimentConfig,
    save_dir: Path,
    name: str,
    progress: bool = True,
    resume: bool = False,
    extras: TrainingExtras = TrainingExtras(),
) -> TrainResult:
    """Fine-tune `model`, saving `save_dir/epoch-<n>/` each epoch; return per-epoch stats and the best epoch.

    After every epoch the Trainer's whole state is kept in `save_dir/.trainer` (only the newest);
    `resume` continues from it, so a killed run ends as an uninterrupted one would. `extras`: more callbacks,
    a running teacher and checkpoint averaging (TrainingExtras).
    """
    device = pick_device(config.device)
    precision = pick_precision(config.precision, device)
    metric = config.best_epoch_metric()
    processes = distributed.world_size()
    if config.train_batch_size % processes:
        raise DistilbenchError(
            f"--train-batch-size {config.train_batch_size} is the global batch; it must divide "
            f"evenly among the {processes} processes"
        )
    state_dir = save_dir / RESUME_DIR
    resume_from, earlier_stats = _resume_point(save_dir, config, name, resume)
    args = _training_arguments(config, state_dir, device, precision, processes)
    if config.initial_head() == "probe" and resume_from is None:  # a resumed run restores the trained head
        probe_head(model.to(device), tokenizer, train_data, task, config, name)
    trainer_class = DistillationTrainer if train_data.teacher_logits is not None else DistilbenchTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=val_data,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_trainer_metrics(task, label_names),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    callback = EpochCallback(trainer, save_dir, name, progress, earlier_stats, metric, config.patience)
    _set_losses(trainer, train_data, task, label_names, config, name)
    if train_data.teacher_logits is not None:
        _set_distillation(trainer, model, extras.teacher, config, device)
    trainer.add_callback(callback)
    for extra in extras.callbacks or []:
        trainer.add_callback(extra)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from[0]) if resume_from else None)
    total = time.perf_counter() - start
    best = choose_best_epoch(callback.stats, metric)
    for done in (callback, *(extras.callbacks or [])):  # the averages' evaluations are not epochs
        trainer.remove_callback(done)
    average_last = extras.average_last
    averages = evaluate_averages(trainer, save_dir, callback.stats, average_last, name) if average_last >= 2 else []
    if distributed.is_main_process():  # kept until the averages are saved: a resume does not train again
        shutil.rmtree(state_dir, ignore_errors=True)
    kept = checkpoint_name(choose_best(callback.stats + averages, metric))
    return TrainResult(callback.stats, best, metric, precision, total, averages, kept)


def _trainer_metrics(task: str, label_names: list[str]):
    """The Trainer's compute_metrics: the summary metrics of a validation pass's logits."""

    def metrics_for_trainer(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        probs = logits_to_probs(task, np.asarray(logits, dtype=np.float32))
        return summary_metrics(compute_metrics(task, np.asarray(prediction.label_ids), probs, label_names))

    return metrics_for_trainer


def _resume_point(save_dir: Path, config: ExperimentConfig, name: str, resume: bool) -> tuple:
    """(the last complete Trainer state and its epoch, or None; the statistics of the epochs up to it), decided by
    the first process and shared with the others. Without a state to resume, an old one is removed."""
    state_dir = save_dir / RESUME_DIR
    resume_from, earlier_stats = None, []
    if distributed.is_main_process():
        resume_from = last_complete_state(save_dir) if resume else None
        if resume_from is not None:
            checkpoint, epoch = resume_from
            earlier_stats = [
                row for row in json.loads((save_dir / EPOCH_STATS).read_text(encoding="utf-8")) if row["epoch"] <= epoch
            ]
            say(f"  resuming {name} after epoch {epoch} of {config.epochs}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    return distributed.share((resume_from, earlier_stats))


def _training_arguments(
    config: ExperimentConfig, state_dir: Path, device: torch.device, precision: str, processes: int
) -> TrainingArguments:
    """The Trainer's arguments for the config: one evaluation and one saved state per epoch, no logging or bars of
    its own (EpochCallback shows them), the global batch split among the processes."""
    return TrainingArguments(
        output_dir=str(state_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.train_batch_size // processes,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        adam_epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay,
        lr_scheduler_type=LR_SCHEDULES[config.lr_schedule],
        warmup_steps=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="no",
        report_to="none",
        seed=config.seed,
        use_cpu=device.type == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        remove_unused_columns=False,  # keep cached teacher logits in the batches
        # Classification losses are batch means; the Trainer's token averaging would multiply them by the
        # number of processes (doubling the gradient under 2-process DDP, so clipping would bite earlier).
        average_tokens_across_devices=False,
        disable_tqdm=True,
    )


def _set_losses(trainer, train_data: EncodedDataset, task: str, label_names: list[str], config, name: str) -> None:
    """The label loss's settings on the trainer: layer-wise rate decay, label smoothing, the task and the label-loss
    weights from the training split (said, where there are any)."""
    trainer.layer_lr_decay, trainer.label_smoothing = config.layer_lr_decay, config.label_smoothing
    trainer.task, trainer.class_weights = (
        task,
        loss_weights(task, train_data.labelled_labels(), len(label_names), config),
    )
    if trainer.class_weights is not None and distributed.is_main_process():
        say(
            f"  {name}: label-loss weights from the training split: "
            + ", ".join(f"{n} {w:.2f}" for n, w in zip(label_names, trainer.class_weights.tolist()))
        )


def _set_distillation(trainer, model, teacher, config: ExperimentConfig, device: torch.device) -> None:
    """The distillation loss's settings on the trainer; with a running `teacher` and intermediate-layer weights,
    the teacher (on the device, in eval mode) and the student-to-teacher layer map too."""
    trainer.alpha, trainer.temperature = config.alpha, config.temperature
    if teacher is not None and (config.distill_hidden > 0 or config.distill_attention > 0):
        trainer.layers = mapped_teacher_layers(model, teacher)
        if config.distill_attention > 0:
            use_eager_attention(model)
            use_eager_attention(teacher)
        trainer.teacher = teacher.to(device).eval()
        trainer.hidden_weight, trainer.attention_weight = config.distill_hidden, config.distill_attention
