"""`distilbench cascade`: choose where a small model hands rows to a big one, check it on test rows, save it.

Every stage predicts the labelled calibration rows (`--data`, or the validation split of the run the models come
from) once; evaluation.cascade.select_cascade chooses the deferral thresholds (with a finite-sample guarantee for
the cost objective). On the test rows (`--test-data`, or that run's test split) the cascade is compared with the
big model alone (a paired bootstrap interval), the guarantee is checked, and the throughput of the cascade and
of the big model alone is measured side by side. The cascade directory (`--out`) holds distilbench_model.json
(read by runtime.cascade.load_cascade: predict, serve, evaluate and load take it as a model) and cascade.json
(the curve, the choice and the test results).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from distilbench.core.console import DataError, DistilbenchError, say
from distilbench.evaluation.cascade import CascadeTarget, combine_stages, row_scores, select_cascade
from distilbench.runs import commit_rename, fsync_tree, read_json, write_json_atomic
from distilbench.runtime.cascade import KIND, MANIFEST_NAME, CascadeModel, predictor_loader

if TYPE_CHECKING:
    from distilbench.config import ExperimentConfig

SPEED_ROUNDS = 3


@dataclass(frozen=True)
class CascadeRun:
    """Where a cascade's rows come from and how its models run: calibration and test sources (None: the splits of
    the run the models come from), texts per forward pass, tokens per text, device, whether to measure speed and
    the rounds of that measurement (the median is reported)."""

    data: str | None = None
    test_data: str | None = None
    batch_size: int = 32
    max_length: int | None = None
    device: str = "auto"
    measure_speed: bool = True
    rounds: int = SPEED_ROUNDS


def stage_directory(spec: str | Path) -> Path:
    """A stage's model directory: as given; RUN/models/<model> means its kept checkpoint (best/); a finished run
    directory means its reference model (runtime.classifier.model_directory)."""
    from distilbench.runtime.classifier import model_directory

    path = Path(spec)
    if (path / "best").is_dir() and not (path / "config.json").is_file():
        path = path / "best"
    path = model_directory(path)
    if not path.exists():
        raise DistilbenchError(f"no model at {spec}: pass a model directory (e.g. RUN/models/<model>/best)")
    return path.resolve()


def run_of(model_dir: Path) -> Path | None:
    """The run directory a model directory lies in (it saved its splits in data/), or None."""
    for parent in model_dir.parents:
        if (parent / "data" / "summary.json").is_file() and (parent / "models").is_dir():
            return parent
    return None


def check_out(out: str | Path, overwrite: bool) -> Path:
    """--out: new or empty; an existing cascade only with `overwrite`; anything else is never replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistilbenchError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST_NAME
        ours = manifest.is_file() and read_json(manifest).get("kind") == KIND
        if not ours:
            raise DistilbenchError(f"--out {out} is not empty and not a cascade directory; choose another --out")
        if not overwrite:
            raise DistilbenchError(f"--out {out} already holds a cascade; pass --overwrite to replace it")
    return out


def check_stages(stages: list, paths: list[Path]) -> tuple[str, list[str]]:
    """The stages' common task and labels; different ones are an error that names them."""
    task, names = stages[-1].task, list(stages[-1].label_names)
    for stage, path in zip(stages, paths):
        if stage.task != task or list(stage.label_names) != names:
            raise DistilbenchError(
                f"a cascade's models must share task and labels: {path} is {stage.task} with labels "
                f"{', '.join(stage.label_names)}, {paths[-1]} is {task} with labels {', '.join(names)}"
            )
    return task, names


def labelled_rows(
    source: str | None, split: str, paths: list[Path], config: ExperimentConfig, label_names: list[str]
) -> tuple[list[str], np.ndarray, str] | None:
    """(texts, labels, where from) of `source`, or of the `split` ("val", "test") of the run every model comes
    from; None when there is no source and no common run."""
    from distilbench.data import datasets as datalib
    from distilbench.evaluation.metrics import label_array
    from distilbench.experiments.evaluate import load_task_data

    if source is not None:
        frame, _, _ = load_task_data(source, config, label_names)
        where = source
    else:
        runs = {run_of(path) for path in paths}
        if len(runs) != 1 or None in runs:
            return None
        run = runs.pop()
        saved = read_json(run / "data" / "summary.json")["label_names"]
        if list(saved) != list(label_names):
            raise DataError(f"the models' labels differ from those of the run {run} they lie in; pass --data")
        frame = datalib.load_split(run / "data" / f"{split}.csv", config.task, label_names)
        where = f"{run}/data/{split}.csv"
    if len(frame) == 0:
        raise DataError(f"no labelled rows in {where}")
    return frame["text"].tolist(), label_array(frame, config.task, label_names), where


def stage_probabilities(stages: list, texts: list[str]) -> list[np.ndarray]:
    """Every stage's probabilities for all `texts` (for choosing and checking; the cascade itself runs each stage
    only on the rows it receives)."""
    return [np.asarray(stage.probabilities(texts), dtype=float) for stage in stages]


def measured_speed(big, cascade: CascadeModel, texts: list[str], rounds: int) -> dict:
    """Rows per second of the big model alone and of the cascade on the same texts, interleaved round by round
    (the machine's state is shared), the median of `rounds`; the cascade's stage counts are reset after."""
    seconds: dict[str, list[float]] = {"big": [], "cascade": []}
    for _ in range(max(1, rounds)):
        for name, model in (("big", big), ("cascade", cascade)):
            start = time.perf_counter()
            model.probabilities(texts)
            seconds[name].append(time.perf_counter() - start)
    cascade.stage_counts = [0] * len(cascade.stage_counts)
    rate = {name: len(texts) / max(statistics.median(values), 1e-9) for name, values in seconds.items()}
    return {
        "rows": len(texts),
        "rounds": max(1, rounds),
        "big_rows_per_s": rate["big"],
        "cascade_rows_per_s": rate["cascade"],
        "speedup": rate["cascade"] / rate["big"],
        "seconds": seconds,
    }


def tested_cascade(
    task: str,
    labels: np.ndarray,
    probs: list[np.ndarray],
    label_thresholds: list,
    choice: dict,
    config: ExperimentConfig,
) -> dict:
    """The chosen cascade on test rows: each stage's share and metric alone, the cascade against the big model
    alone (points, paired bootstrap interval) and whether the loss stayed within the promised points."""
    from distilbench.evaluation.stats import paired_difference

    thresholds = [stage["threshold"] for stage in choice["stages"]]
    combined, stage_of_row = combine_stages(task, probs, label_thresholds, thresholds)
    final = label_thresholds[-1]
    names = [str(i) for i in range(probs[0].shape[1])]
    paired = paired_difference(
        task,
        labels,
        probs[-1],
        combined,
        names,
        resamples=config.resamples,
        seed=config.seed,
        thresholds_a=final,
        thresholds_b=final,
    )
    difference = float(
        row_scores(task, labels, combined, final).mean() - row_scores(task, labels, probs[-1], final).mean()
    )
    return {
        "rows": int(labels.shape[0]),
        "shares": (np.bincount(stage_of_row, minlength=len(probs)) / labels.shape[0]).tolist(),
        "stage_metrics": [float(row_scores(task, labels, p, t).mean()) for p, t in zip(probs, label_thresholds)],
        "cascade_metric": paired["value_b"],
        "big_metric": paired["value_a"],
        "difference_points": 100.0 * difference,
        "interval_points": [paired["low"], paired["high"]],
        "interval_confidence": paired["confidence"],
        "guarantee_held": bool(100.0 * difference >= -choice["max_loss_points"] - 1e-9),
    }


def cascade_manifest(task: str, label_names: list[str], paths: list[Path], choice: dict, big_thresholds) -> dict:
    """distilbench_model.json (the format is documented in runtime.cascade)."""
    from distilbench import __version__

    stages = [{"model": str(path), "threshold": stage["threshold"]} for path, stage in zip(paths, choice["stages"])]
    return {
        "kind": KIND,
        "task": task,
        "label_names": list(label_names),
        "thresholds": [float(t) for t in np.asarray(big_thresholds, dtype=float)],
        "stages": [*stages, {"model": str(paths[-1])}],
        "objective": choice["objective"],
        "max_loss_points": choice["max_loss_points"],
        "confidence": choice["confidence"],
        "guaranteed": choice["guaranteed"],
        "distilbench": __version__,
    }


def write_cascade_dir(out: Path, manifest: dict, report: dict) -> None:
    """Both files into a temporary folder beside `out`, flushed, then renamed into place: `out` is the old
    cascade or the new one, never half of one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        write_json_atomic(staging / MANIFEST_NAME, manifest)
        write_json_atomic(staging / "cascade.json", report)
        fsync_tree(staging)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            commit_rename(out, old)
        commit_rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not out.exists():
            commit_rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def show(report: dict) -> None:
    """The short table: per stage its threshold, calibration and test shares, then the test comparison."""
    test = report.get("test")
    say(f"{'stage':<8}{'threshold':>10}{'calib share':>13}{'test share':>12}  model")
    for j, model in enumerate(report["models"]):
        stage = report["choice"]["stages"][j] if j < len(report["models"]) - 1 else None
        threshold = "-" if stage is None else ("never" if stage["threshold"] is None else f"{stage['threshold']:.4f}")
        calib = report["choice"]["calibration"]["shares"][j]
        shown = "-" if test is None else f"{100 * test['shares'][j]:.1f}%"
        say(f"{j + 1:<8}{threshold:>10}{100 * calib:>12.1f}%{shown:>12}  {model}")
    if not report["choice"]["guaranteed"] and report["choice"]["objective"] == "cost":
        say("no threshold could be certified: the cascade sends every row to the last model")
    if test is None:
        say("no test rows (the models come from no common run): pass --test-data to check the cascade")
    else:
        low, high = test["interval_points"]
        interval = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
        say(
            f"test: {report['metric']} {test['cascade_metric']:.4f} vs {test['big_metric']:.4f} for the last model "
            f"alone, {test['difference_points']:+.2f} points{interval}; guarantee "
            f"{'held' if test['guarantee_held'] else 'NOT held'} (at most {report['max_loss_points']} points lost)"
        )
    speed = report.get("speed")
    if speed:
        say(
            f"speed: cascade {speed['cascade_rows_per_s']:.0f} rows/s, last model alone {speed['big_rows_per_s']:.0f} "
            f"rows/s ({speed['speedup']:.1f}x)"
        )


def build_cascade(
    models: list[str | Path],
    out: str | Path,
    config: ExperimentConfig,
    target: CascadeTarget | None = None,
    rows: CascadeRun | None = None,
    *,
    overwrite: bool = False,
    load_stage: Callable[[str], Any] | None = None,
) -> dict:
    """Choose, test and save a cascade of `models` (smallest first, the big one last): see the module docstring.
    `config` gives the data columns, the bootstrap's resamples and seed; `load_stage(model_dir)` loads a stage
    (default: runtime.cascade.predictor_loader). Returns cascade.json's content."""
    target, rows = (target or CascadeTarget()).check(), rows or CascadeRun()
    if len(models) < 2:
        raise DistilbenchError("a cascade needs two models or more: --small A --big B, or --stages A,B,C")
    paths = [stage_directory(model) for model in models]
    out = check_out(out, overwrite)
    load_stage = load_stage or predictor_loader("auto", rows.device, rows.batch_size, rows.max_length)
    stages = [load_stage(str(path)) for path in paths]
    task, label_names = check_stages(stages, paths)
    config.task = task
    calibration = labelled_rows(rows.data, "val", paths, config, label_names)
    if calibration is None:
        raise DataError(
            "the models do not come from one run directory, so there is no validation split to calibrate on: "
            "pass --data with labelled rows that neither model trained on"
        )
    label_thresholds = [np.asarray(stage.thresholds, dtype=float) for stage in stages]
    texts, labels, calibration_source = calibration
    say(f"calibration: {len(texts)} rows of {calibration_source}")
    choice = select_cascade(task, labels, stage_probabilities(stages, texts), label_thresholds, target)
    report: dict = {
        "models": [str(path) for path in paths],
        "task": task,
        "metric": "accuracy" if task == "multiclass" else "hamming_score",
        "max_loss_points": target.max_loss,
        "confidence": target.confidence,
        "objective": target.objective,
        "calibration_data": calibration_source,
        "choice": choice,
        "test": None,
        "speed": None,
    }
    test = labelled_rows(rows.test_data, "test", paths, config, label_names)
    if test is not None:
        test_texts, test_labels, report["test_data"] = test
        probs = stage_probabilities(stages, test_texts)
        report["test"] = tested_cascade(task, test_labels, probs, label_thresholds, choice, config)
        if rows.measure_speed:
            thresholds = [stage["threshold"] for stage in choice["stages"]]
            loaded = [None if t is None else stage for stage, t in zip(stages, thresholds)] + stages[-1:]
            cascade = CascadeModel(task, label_names, loaded, thresholds)
            report["speed"] = measured_speed(stages[-1], cascade, test_texts, rows.rounds)
    write_cascade_dir(out, cascade_manifest(task, label_names, paths, choice, label_thresholds[-1]), report)
    show(report)
    say(f"cascade -> {out} (distilbench predict --model {out})")
    return report
