"""`distilbench tune`: a hyperparameter search scored on the validation split alone.

Optuna with a seeded TPE sampler and a median pruner fed after every epoch; the study lives in
OUT/tune.db (SQLite), so a stopped search continues with --resume. Each trial trains in OUT/trials/,
deleted after it: only its statistics are kept. Written after every trial: trials.csv, tune.json,
tune.png and best.yaml (the base settings with the best trial's values, for `compare --config`).
The test split is made and saved like compare's (same data, seed and sizes give the same split) and
never read.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import optuna
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState
from transformers import TrainerCallback, set_seed

from distilbench.config import ExperimentConfig
from distilbench.core.console import DistilbenchError, say, warn
from distilbench.experiments.compare import open_run, resolve_teacher, start_run
from distilbench.models.registry import count_parameters, load_classifier, parse_student_spec, read_task_labels
from distilbench.runs import (
    RunDir,
    check_free_space,
    model_slug,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from distilbench.runtime.inference import max_positions
from distilbench.training import distributed
from distilbench.training.finetune import TrainingExtras, choose_best_epoch, encode_split, train_model

log = logging.getLogger(__name__)

STUDY_NAME = "distilbench-tune"  # one study per directory
DB_NAME = "tune.db"
TRIALS_DIR = "trials"

# Ranges for fine-tuning BERT-family encoders (BERT's paper searched 2e-5..5e-5, batch 16/32, 2-4 epochs;
# small and distilled models like higher rates, hence the wider range). `--search NAME=LOW:HIGH` narrows one.
SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 5e-4, "log": True},
    "epochs": {"type": "int", "low": 2, "high": 8},
    "train_batch_size": {"type": "choice", "choices": [16, 32, 64]},
    "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    "alpha": {"type": "float", "low": 0.0, "high": 1.0},
    "temperature": {"type": "float", "low": 1.0, "high": 8.0},
    "layer_lr_decay": {"type": "float", "low": 0.6, "high": 1.0},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
}
DISTILLATION_ONLY = ("alpha", "temperature")
NAMED_ONLY = ("layer_lr_decay", "label_smoothing")  # searched when --search names it, not by default
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# ------------------------------------------------------------------------------------------- the space


def _check_value(name: str, value) -> None:
    """A bound of the search must be a setting the config accepts (its own messages name the flag)."""
    if name == "warmup_ratio" and not 0.0 <= value < 1.0:
        raise DistilbenchError(f"--search warmup_ratio: a share of the steps, 0 <= x < 1, not {value}")
    if name == "weight_decay" and value < 0:
        raise DistilbenchError(f"--search weight_decay must be 0 or more, not {value}")
    dataclasses.replace(ExperimentConfig(), **{name: value}).validate()


def _parse_range(name: str, text: str) -> dict:
    default = SEARCH_SPACE[name]
    kind = int if default["type"] in ("int", "choice") else float
    try:
        values = [kind(part) for part in text.split(":")]
    except ValueError:
        raise DistilbenchError(
            f"--search {name}={text}: give {'integers' if kind is int else 'numbers'} separated by ':'"
        ) from None
    for value in values:
        _check_value(name, value)
    if default["type"] == "choice":
        if len(set(values)) < 2:
            raise DistilbenchError(
                f"--search {name}={text}: give two or more choices, e.g. {name}=16:32; "
                f"one value is fixed with --{name.replace('_', '-')} {values[0]}"
            )
        return {"type": "choice", "choices": sorted(set(values))}
    if len(values) != 2 or not values[0] < values[1]:
        raise DistilbenchError(
            f"--search {name}={text}: give LOW:HIGH with LOW < HIGH, e.g. {name}={default['low']}:{default['high']}"
        )
    return {**default, "low": values[0], "high": values[1]}


def search_space(items: list[str] | None, distillation: bool, fixed: set[str] | frozenset = frozenset()) -> dict:
    """The parameters to search and their ranges. `items`: NAME or NAME=LOW:HIGH (choices A:B:C for the
    batch size); by default every parameter except those in `fixed` (given as flags), those in NAMED_ONLY and,
    without a teacher, alpha and temperature."""
    if items is None:
        space = {
            name: dict(spec)
            for name, spec in SEARCH_SPACE.items()
            if name not in fixed and name not in NAMED_ONLY and (distillation or name not in DISTILLATION_ONLY)
        }
        if not space:
            raise DistilbenchError("nothing to search: every parameter is fixed by a flag; drop one, or pass --search")
        return space
    space = {}
    for item in items:
        name, _, bounds = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if name not in SEARCH_SPACE:
            raise DistilbenchError(f"--search: unknown parameter '{name}'; searchable: {', '.join(SEARCH_SPACE)}")
        if name in DISTILLATION_ONLY and not distillation:
            raise DistilbenchError(f"--search {name}: {name} is searched only when distilling (--teacher)")
        if name in fixed:
            raise DistilbenchError(
                f"--search {name} and --{name.replace('_', '-')}: a parameter is searched or fixed, not both"
            )
        if name in space:
            raise DistilbenchError(f"--search names {name} twice")
        space[name] = _parse_range(name, bounds.strip()) if bounds.strip() else dict(SEARCH_SPACE[name])
    if not space:
        raise DistilbenchError("--search names no parameter")
    return space


def describe_space(space: dict) -> str:
    parts = []
    for name, spec in space.items():
        if spec["type"] == "choice":
            parts.append(f"{name} {'|'.join(map(str, spec['choices']))}")
        else:
            parts.append(f"{name} {spec['low']:g}..{spec['high']:g}{' (log)' if spec.get('log') else ''}")
    return ", ".join(parts)


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """The trial's settings, drawn by the sampler (or given by an enqueued retry)."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "choice":
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, spec["low"], spec["high"])
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
    return values


def _shown(values: dict) -> str:
    return ", ".join(
        f"{k} {v:.2e}" if k == "learning_rate" else f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in values.items()
    )


# ------------------------------------------------------------------------------------------- the trials


class PruningCallback(TrainerCallback):
    """After each epoch's validation, reports the best value so far to Optuna; stops training when the
    pruner says the trial is behind (the objective then raises TrialPruned)."""

    SKIPPED = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_epoch")

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric
        self.rows: list[dict] = []
        self.pruned = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        epoch = int(round(state.epoch))
        self.rows.append(
            {
                "epoch": epoch,
                **{f"val_{k[5:]}": v for k, v in metrics.items() if k.startswith("eval_") and k not in self.SKIPPED},
            }
        )
        best = choose_best_epoch(self.rows, self.metric)  # its error names the known metrics
        self.trial.report(_score(self.rows, best, self.metric), epoch)
        if self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


def _metric_key(metric: str) -> str:
    return metric if metric.startswith("val_") else f"val_{metric}"


def _score(rows: list[dict], epoch: int, metric: str) -> float:
    return float(next(row for row in rows if row["epoch"] == epoch)[_metric_key(metric)])


def _jsonable(value):
    return json.loads(json.dumps(value, default=float))


class Search:
    """One search: the prepared data, the study, and the objective that trains one trial."""

    def __init__(
        self,
        config: ExperimentConfig,
        spec: str,
        run: RunDir,
        splits: dict,
        label_names: list[str],
        space: dict,
        metric: str,
        teacher: Path | None,
        target: int,
        progress: bool,
    ):
        from distilbench.training.distillation import teacher_logits_for

        self.config, self.spec, self.run, self.space, self.metric = config, spec, run, space, metric
        self.label_names, self.teacher, self.target, self.progress = label_names, teacher, target, progress
        self.rows = {name: len(splits[name]) for name in ("train", "val")}
        # tokenized once: every trial starts from the same fresh model, so the tokenizer is the same
        model, self.tokenizer = load_classifier(spec, config.task, label_names, config.head)
        self.parameters = count_parameters(model)["total"]
        positions = max_positions(model.config)
        del model
        self.train_data = encode_split(
            self.tokenizer, splits["train"], config.task, label_names, config.max_length, positions
        )
        self.val_data = encode_split(
            self.tokenizer, splits["val"], config.task, label_names, config.max_length, positions
        )
        if teacher is not None:
            cache = run.root / "cache" / f"{model_slug(str(teacher.resolve()))}.train-logits.npy"
            self.train_data.teacher_logits = teacher_logits_for(
                teacher,
                splits["train"]["text"].tolist(),
                cache,
                batch_size=config.eval_batch_size,
                max_length=config.max_length,
                progress=progress,
            )

    def objective(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.space)
        config = dataclasses.replace(self.config, **values).validate()
        done = len(trial.study.get_trials(deepcopy=False, states=FINISHED))
        retry = trial.user_attrs.get("retry_of")
        again = f", the settings of trial {retry} again" if retry is not None else ""
        say(f"\ntrial {trial.number} ({done + 1} of {self.target}{again}): {_shown(values)}")
        directory = self.run.root / TRIALS_DIR / f"trial-{trial.number}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        # fp32 weights per epoch, the Trainer's state (weights, two Adam moments), slack
        check_free_space(directory, 4 * self.parameters * (config.epochs + 4), f"trial {trial.number}")
        pruning = PruningCallback(trial, self.metric)
        start = time.perf_counter()
        try:
            set_seed(config.seed)  # the same initial weights in every trial: only the settings differ
            model, _ = load_classifier(self.spec, config.task, self.label_names, config.head)
            result = train_model(
                model,
                self.tokenizer,
                self.train_data,
                self.val_data,
                config.task,
                self.label_names,
                config,
                directory,
                f"trial {trial.number}",
                self.progress,
                extras=TrainingExtras(callbacks=[pruning]),
            )
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna marks the trial failed; --resume tries it again
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        key = _metric_key(result.select_metric)
        trial.set_user_attr("select_metric", result.select_metric)
        trial.set_user_attr("scores", [float(row[key]) for row in result.stats])
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("time_s", time.perf_counter() - start)
        trial.set_user_attr("epochs", _jsonable(result.stats))
        score = _score(result.stats, result.best_epoch, result.select_metric)
        trial.set_user_attr("score", score)
        if pruning.pruned:
            raise optuna.TrialPruned(f"behind the other trials after epoch {result.stats[-1]['epoch']}")
        return score


# ------------------------------------------------------------------------------------------- the results


def _state(trial: optuna.trial.FrozenTrial) -> str:
    return {
        TrialState.COMPLETE: "finished",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[trial.state]


def trial_records(study: optuna.Study) -> list[dict]:
    """Every trial as stored: number, state, settings, score per epoch, time."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        records.append(
            {
                "number": trial.number,
                "state": _state(trial),
                "params": dict(trial.params),
                "score": attrs.get("score"),
                "best_epoch": attrs.get("best_epoch"),
                "scores": attrs.get("scores", []),
                "time_s": attrs.get("time_s"),
                "retry_of": attrs.get("retry_of"),
                "interrupted": bool(attrs.get("interrupted")) or None,
                "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
                "epochs": attrs.get("epochs", []),
            }
        )
    return records


def trials_table(records: list[dict], space: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "number": r["number"],
                "state": r["state"],
                "score": r["score"],
                "best_epoch": r["best_epoch"],
                "epochs_run": len(r["scores"]),
                "time_s": None if r["time_s"] is None else round(r["time_s"], 1),
                **{name: r["params"].get(name) for name in space},
                "retry_of": r["retry_of"],
            }
            for r in records
        ],
        columns=["number", "state", "score", "best_epoch", "epochs_run", "time_s", *space, "retry_of"],
    ).astype({"best_epoch": "Int64", "retry_of": "Int64"})  # whole numbers, empty where there is none


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best finished (not pruned) trial; the first of equals."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(complete, key=lambda t: (sign * t.value, -t.number))


def plot_search(records: list[dict], space: dict, metric: str, maximize: bool, path: Path) -> None:
    """The score of every trial with the best so far, then the score against each searched setting."""
    panels = 1 + len(space)
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(panels)]
    scored = [r for r in records if r["score"] is not None and r["state"] in ("finished", "pruned")]
    finished = [r for r in scored if r["state"] == "finished"]
    pruned = [r for r in scored if r["state"] == "pruned"]
    ax = axes[0]
    ax.scatter([r["number"] for r in finished], [r["score"] for r in finished], label="finished", color="C0")
    ax.scatter(
        [r["number"] for r in pruned],
        [r["score"] for r in pruned],
        label="pruned (score when stopped)",
        marker="x",
        color="C7",
    )
    if finished:
        best, xs, ys = None, [], []
        for r in finished:
            if best is None or (r["score"] > best if maximize else r["score"] < best):
                best = r["score"]
            xs.append(r["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=f"validation {metric}", title="search")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    for ax, name in zip(axes[1:], space):
        ax.scatter([r["params"].get(name) for r in finished], [r["score"] for r in finished], color="C0")
        ax.scatter([r["params"].get(name) for r in pruned], [r["score"] for r in pruned], marker="x", color="C7")
        spec = space[name]
        if spec["type"] == "choice":
            ax.set_xticks(spec["choices"])
        elif spec.get("log"):  # the whole range searched, so where the trials fell in it shows
            ax.set_xscale("log")
            ax.set_xlim(spec["low"] / 1.15, spec["high"] * 1.15)
        else:
            pad = 0.04 * (spec["high"] - spec["low"])
            ax.set_xlim(spec["low"] - pad, spec["high"] + pad)
            if spec["type"] == "int":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=name, ylabel=f"validation {metric}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(path, buffer.getvalue())


def best_yaml_text(
    config: ExperimentConfig, trial: optuna.trial.FrozenTrial, finished: int, metric: str, teacher: Path | None
) -> str:
    """The base settings with the best trial's values, as YAML for `--config` (its out is left to the user)."""
    best = dataclasses.replace(config, **trial.params, out=None)
    use = (
        f"distilbench distill --teacher {teacher} --student {config.models[0]} --config best.yaml --out RUN_DIR"
        if teacher is not None
        else "distilbench compare --config best.yaml --out RUN_DIR"
    )
    header = (
        f"# distilbench tune: the best of {finished} finished trials, trial {trial.number} "
        f"(validation {metric} {trial.value:.4f} at epoch {trial.user_attrs.get('best_epoch')})\n"
        f"# searched: {', '.join(trial.params)}; everything else as the search's settings\n# use: {use}\n"
    )
    return header + yaml.safe_dump(best.to_dict(), sort_keys=False)


def write_results(
    study: optuna.Study, run: RunDir, config: ExperimentConfig, settings: dict, plot: bool = True
) -> dict:
    """trials.csv, tune.json, best.yaml and (`plot`) tune.png, from what the study holds now."""
    space, metric = settings["space"], settings["select_metric"]
    records = trial_records(study)
    finished = sum(r["state"] in ("finished", "pruned") for r in records)
    best = best_trial(study)
    summary = {
        **settings,
        "direction": study.direction.name.lower(),
        "trials_finished": finished,
        "best": None
        if best is None
        else {
            "number": best.number,
            "score": best.value,
            "best_epoch": best.user_attrs.get("best_epoch"),
            "params": dict(best.params),
        },
        "trials": records,
    }
    write_csv_atomic(run.root / "trials.csv", trials_table(records, space))
    write_json_atomic(run.root / "tune.json", summary)
    if plot:
        plot_search(
            records, space, metric, study.direction == optuna.study.StudyDirection.MAXIMIZE, run.root / "tune.png"
        )
    if best is not None:
        teacher = Path(settings["teacher"]) if settings.get("teacher") else None
        write_text_atomic(run.root / "best.yaml", best_yaml_text(config, best, finished, metric, teacher))
    return summary


# ------------------------------------------------------------------------------------------- resuming


def open_study(run: RunDir, direction: str) -> optuna.Study:
    storage = f"sqlite:///{(run.root / DB_NAME).resolve()}"
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction, load_if_exists=True)


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Trials stopped by an interruption (Ctrl-C, SIGTERM: failed; kill -9, a power cut: still 'running')
    are queued to run again with their settings, once; a 'running' one is then marked failed. The run
    directory's lock means no other process runs a trial here."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    again = []
    for trial in trials:
        stale = trial.state == TrialState.RUNNING
        if (
            (stale or (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")))
            and trial.number not in retried
            and trial.params
        ):
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            again.append(trial.number)
        if stale:  # after queueing its retry: a kill between the two leaves it running, retried once
            study.tell(trial.number, state=TrialState.FAIL)
    return again


def _settings_of(study: optuna.Study, spec: str | None, teacher: Path | None, space: dict | None) -> dict:
    """The search's own settings (model, teacher, space), stored in the study; given again they must agree."""
    stored = study.user_attrs
    given = {"model": spec, "teacher": None if teacher is None else str(teacher), "space": space}
    if not stored:
        return given
    changed = [
        f"{key} (search: {stored.get(key)!r}, given: {value!r})"
        for key, value in given.items()
        if value is not None and value != stored.get(key)
    ]
    if changed:
        raise DistilbenchError(
            f"--resume continues the search with the settings it started with; these differ: "
            f"{'; '.join(changed)}. Drop them, or start a new search with --out"
        )
    return {key: stored.get(key) for key in given}


# ------------------------------------------------------------------------------------------- the verb


@dataclasses.dataclass(frozen=True)
class SearchBudget:
    """How much a search runs and how it stops a trial early: trials until the study holds `trials` finished ones
    (or `timeout` seconds pass); `pruner`: Optuna's pruner (default: median, from epoch 2 on, once 5 trials
    finished; none with `prune` off)."""

    trials: int = 20
    timeout: float | None = None
    prune: bool = True
    pruner: optuna.pruners.BasePruner | None = None

    def validate(self) -> "SearchBudget":
        if self.trials < 1:
            raise DistilbenchError(f"--trials must be at least 1, not {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise DistilbenchError(f"--timeout must be a positive number of seconds, not {self.timeout}")
        return self

    def study_pruner(self) -> optuna.pruners.BasePruner:
        """The pruner the study runs its trials with."""
        if self.pruner is not None:
            return self.pruner
        if self.prune:
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
        return optuna.pruners.NopPruner()


def tune(
    config: ExperimentConfig,
    model: str | None = None,
    *,
    teacher: str | None = None,
    budget: SearchBudget = SearchBudget(),
    search: list[str] | None = None,
    fixed: set[str] | frozenset = frozenset(),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Search the settings of one model (or of a student distilled from `teacher`) on the validation split:
    run trials within the `budget`, then write the results. `search`: the parameters to search (NAME or
    NAME=LOW:HIGH); `fixed`: the settings given as flags, left out of the default search. `resume` continues
    the search in config.out with its stored model, teacher and space."""
    budget.validate()
    teacher_dir = check_search_request(config, model, teacher, resume)
    space = None if resume else search_space(search, teacher_dir is not None, fixed)
    if teacher_dir is not None:
        config.task, _ = read_task_labels(teacher_dir)
    optuna.logging.set_verbosity(optuna.logging.DEBUG if log.isEnabledFor(logging.DEBUG) else optuna.logging.ERROR)

    with open_run(config, overwrite, resume) as run:
        shutil.rmtree(run.root / TRIALS_DIR, ignore_errors=True)  # what a killed trial left behind
        metric = config.best_epoch_metric()
        study = open_study(run, "minimize" if "loss" in metric else "maximize")
        settings = search_settings(study, run, model, teacher_dir, space, search if resume else None)
        teacher_dir = Path(settings["teacher"]) if settings["teacher"] else None
        config.models = [settings["model"]]
        splits, label_names = search_splits(config, run, resume, teacher_dir)
        again = retry_interrupted(study)
        if again:
            say(f"interrupted trial(s) {', '.join(map(str, again))}: their settings run again")
        space = settings["space"]
        summary = search_summary(settings, config, metric, splits, teacher_dir)
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        say(
            f"\nsearch: {settings['model']}{f' distilled from {teacher_dir}' if teacher_dir else ''}, "
            f"validation {metric} ({'lower' if 'loss' in metric else 'higher'} is better), {budget.trials} trials"
            f"{f' ({done} finished before)' if done else ''}: {describe_space(space)}"
        )
        if done >= budget.trials:
            say(f"the search holds {done} finished trials already; pass a larger --trials to run more")
            result = write_results(study, run, config, summary)
        else:
            objective = Search(
                config, settings["model"], run, splits, label_names, space, metric, teacher_dir, budget.trials, progress
            ).objective
            result = run_trials(study, objective, run, config, summary, budget)
        show_summary(result, run, metric)
    return result


def check_search_request(config: ExperimentConfig, model: str | None, teacher: str | None, resume: bool) -> Path | None:
    """Refuse, before anything is written, a search tune cannot run; returns the teacher's checkpoint (or None)."""
    if distributed.world_size() > 1:
        raise DistilbenchError("tune runs in one process; start it without torchrun / accelerate launch")
    if not resume and not model:
        raise DistilbenchError("tune needs --model NAME (alias, hub name, directory or student:<teacher>)")
    if config.distillation_extras():
        raise DistilbenchError(
            "tune searches with logits distillation only; "
            f"{', '.join(config.distillation_extras())} are for compare and distill"
        )
    teacher_dir = resolve_teacher(teacher).absolute() if teacher else None
    if (
        teacher_dir is not None
        and model
        and parse_student_spec(model) is None
        and not Path(model, "config.json").is_file()
    ):
        raise DistilbenchError(
            f"--model must be a student spec (student:<teacher>[:layers], student-bert:..., "
            f"scratch:...) or a model directory to distil from --teacher, not '{model}'"
        )
    return teacher_dir


def search_settings(
    study: optuna.Study,
    run: RunDir,
    spec: str | None,
    teacher_dir: Path | None,
    space: dict | None,
    search_on_resume: list[str] | None,
) -> dict:
    """The search's model, teacher and space: those given, checked against the study's and completed from them
    (a resumed search keeps its own; `search_on_resume`: a new --search given with --resume), stored in a new
    study."""
    if search_on_resume is not None:
        stored_teacher = teacher_dir or study.user_attrs.get("teacher")
        space = search_space(search_on_resume, stored_teacher is not None)
    settings = _settings_of(study, spec, teacher_dir, space)
    if settings["model"] is None:
        raise DistilbenchError(f"{run.root} holds no search to resume; start one with --model NAME")
    if settings["space"] is None:
        settings["space"] = search_space(None, bool(settings["teacher"]))
    if not study.user_attrs:
        for key, value in settings.items():
            study.set_user_attr(key, value)
    return settings


def search_splits(
    config: ExperimentConfig, run: RunDir, resume: bool, teacher_dir: Path | None
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The training and validation splits (made and saved like compare's, the test split too, which the search
    never reads) and the label names, which must be the teacher's."""
    teacher_labels = read_task_labels(teacher_dir)[1] if teacher_dir is not None else None
    splits, label_names = start_run(config, run, resume, teacher_labels)
    if teacher_labels is not None and set(label_names) != set(teacher_labels):
        raise DistilbenchError(
            f"the data's labels ({', '.join(label_names)}) are not the teacher's ({', '.join(teacher_labels)})"
        )
    return {name: splits[name] for name in ("train", "val")}, label_names  # the test split stays out of the search


def search_summary(
    settings: dict, config: ExperimentConfig, metric: str, splits: dict[str, pd.DataFrame], teacher_dir: Path | None
) -> dict:
    """What tune.json says about the search besides its trials: model, teacher, data, metric, space, the
    settings it leaves fixed and the rows per split."""
    space = settings["space"]
    return {
        "model": settings["model"],
        "teacher": settings["teacher"],
        "task": config.task,
        "data": config.data,
        "select_metric": metric,
        "space": space,
        "fixed": {
            name: getattr(config, name)
            for name in SEARCH_SPACE
            if name not in space and (teacher_dir is not None or name not in DISTILLATION_ONLY)
        },
        "rows": {name: len(split) for name, split in splits.items()},
    }


def run_trials(
    study: optuna.Study, objective, run: RunDir, config: ExperimentConfig, summary: dict, budget: SearchBudget
) -> dict:
    """Run trials until the study holds budget.trials finished ones (or the timeout passes), saying each and
    writing the results after each; at the end, also when interrupted or failed, delete the trials' checkpoints
    and write the results (with the plot). Returns tune.json's content."""
    metric = summary["select_metric"]
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    study.pruner = budget.study_pruner()
    # seeded, and offset by the trials run before, so a resumed search does not draw the same settings
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials))

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        score = trial.user_attrs.get("score")
        how = (
            f"finished: {metric} {score:.4f} at epoch {trial.user_attrs.get('best_epoch')}"
            if trial.state == TrialState.COMPLETE
            else f"pruned after epoch {len(trial.user_attrs.get('scores', []))} ({metric} {score:.4f})"
        )
        best = best_trial(study)
        say(
            f"trial {trial.number} {how}, {trial.user_attrs.get('time_s', 0):.1f} s"
            + (f"; best: trial {best.number}, {best.value:.4f}" if best is not None else "")
        )
        write_results(study, run, config, summary, plot=False)  # the plot once, at the end

    try:
        study.optimize(objective, n_trials=budget.trials - done, timeout=budget.timeout, callbacks=[after_trial])
    finally:  # interrupted or failed too: what finished is written
        shutil.rmtree(run.root / TRIALS_DIR, ignore_errors=True)
        result = write_results(study, run, config, summary)
    return result


def show_summary(result: dict, run: RunDir, metric: str) -> None:
    records = [r for r in result["trials"] if r["state"] in ("finished", "pruned")]
    if records:
        table = trials_table(records, result["space"]).sort_values(
            "score", ascending=result["direction"] == "minimize", na_position="last"
        )
        if table["retry_of"].isna().all():
            table = table.drop(columns="retry_of")
        say("\n" + table.head(10).to_string(index=False, float_format="{:.4g}".format))
    best = result["best"]
    if best is None:
        warn(
            "no trial finished (every one was pruned or failed); no best.yaml. Run more trials with --resume "
            "--trials N, or turn pruning off with --no-prune"
        )
        return
    say(
        f"\nbest: trial {best['number']}, validation {metric} {best['score']:.4f} (epoch {best['best_epoch']}): "
        f"{_shown(best['params'])}"
    )
    say(
        f"  the best of {result['trials_finished']} on one validation split: optimistic; the test split, which "
        f"the search never read, tells how good it is"
    )
    say(
        f"settings: {run.root / 'best.yaml'} (distilbench {'distill' if result['teacher'] else 'compare'} "
        f"--config {run.root / 'best.yaml'} ...)"
    )
    say(f"trials:   {run.root / 'trials.csv'}, {run.root / 'tune.json'}, {run.root / 'tune.png'}")
