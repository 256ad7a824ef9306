"""What each step of distillation buys, on both thesis tasks, with minilm-l6 as the teacher.

    .venv/bin/python benchmarks/distillation.py [--base runs/benchmarks] [--general-epochs 1]

Needs the runs of benchmarks/thesis_tasks.py (same data, splits and seed), which give the first and
third rows: the teacher fine-tuned, and the 3-layer student (teacher layers 0, 2, 4) fine-tuned on
labels. This script adds, on exactly the same train/val/test splits:
  - a 3-layer student with random weights, fine-tuned on labels (the control);
  - the 3-layer student distilled from the fine-tuned teacher (alpha 0.5, T 2);
  - general distillation of the student on the training texts (MiniLM has no MLM head: cosine on the
    last hidden states + MSE per mapped layer), then task distillation from the fine-tuned teacher.
Throughput of all five is then measured with one backend under `distilbench bench`'s protocol.
Results: benchmarks/results/distillation.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, parser, results_dir, smoke_model, write_result  # noqa: E402
from common import TOXIC_LABELS as TOXIC  # noqa: E402

TEACHER = ["minilm-l6"]  # thesis_tasks.py's teacher; --smoke puts the smoke model here


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__)
    args_parser.add_argument("--base", default=str(ROOT / "runs" / "benchmarks"), help="runs of thesis_tasks.py")
    args_parser.add_argument("--general-epochs", type=int, default=1)
    args_parser.add_argument("--backend", default="torch-bf16", help="backend for the throughput column")
    args_parser.add_argument("--repeats", type=int, default=5)
    args = args_parser.parse_args(argv)
    if args.smoke:  # on thesis_tasks.py's smoke runs
        from thesis_tasks import smoke_runs

        args.base, args.repeats, TEACHER[0] = str(smoke_runs()), 1, str(smoke_model())
    teacher_name, student_name = TEACHER[0], f"student:{TEACHER[0]}"

    import pandas as pd
    import yaml

    from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench
    from distilbench.config import ExperimentConfig
    from distilbench.core.console import quiet_libraries
    from distilbench.evaluation.metrics import primary_metric
    from distilbench.experiments.compare import compare, distill
    from distilbench.runs import model_slug
    from distilbench.runtime.machine import machine_info
    from distilbench.training.distillation import GeneralDistillationOptions, distill_general

    quiet_libraries(False)
    report = {"machine": machine_info(), "settings": vars(args), "tasks": {}}
    for task in ("multiclass", "multilabel") if not args.smoke else ("multiclass",):
        base = Path(args.base) / task
        if not (base / "comparison.json").is_file():
            raise SystemExit(f"run benchmarks/thesis_tasks.py first: {base}/comparison.json is missing")
        out = Path(args.base) / f"distillation-{task}"
        settings = yaml.safe_load((base / "config.yaml").read_text())  # the same training settings
        settings.update(
            data=str(base / "data" / "train.csv"),
            val_data=str(base / "data" / "val.csv"),
            test_data=str(base / "data" / "test.csv"),
            max_samples=None,
            label_column=None,
            label_columns=None,
        )
        settings.update({"label_columns": TOXIC} if task == "multilabel" else {"label_column": "label"})
        common = {k: v for k, v in settings.items() if k not in ("models", "out", "distill")}
        thesis_rows = {row["model"]: row for row in json.loads((base / "comparison.json").read_text())["rows"]}
        teacher = base / "models" / model_slug(teacher_name) / "best"
        rows = [
            {"step": "teacher minilm-l6 (6 layers), fine-tuned", **thesis_rows[teacher_name]},
        ]
        scratch = compare(
            ExperimentConfig(
                **common, models=[f"scratch:{teacher_name}"], distill=False, out=str(out / "scratch")
            ).validate(),
            overwrite=True,
        )[0]
        rows.append({"step": "student (3 layers) from scratch, fine-tuned on labels", **scratch})
        rows.append({"step": "student (teacher layers 0,2,4), fine-tuned on labels", **thesis_rows[student_name]})
        task_distilled = distill(
            ExperimentConfig(**common, out=str(out / "task")).validate(),
            str(teacher),
            student_name,
            overwrite=True,
        )
        rows.append({"step": "+ task distillation from the fine-tuned teacher", **task_distilled})
        train_texts = pd.read_csv(base / "data" / "train.csv")["text"].astype(str).tolist()
        general = distill_general(
            teacher_name,
            student_name,
            train_texts,
            out / "general-student",
            GeneralDistillationOptions(epochs=args.general_epochs, alpha_mse=1.0),
        )
        both = distill(
            ExperimentConfig(**common, out=str(out / "general-task")).validate(),
            str(teacher),
            str(out / "general-student"),
            overwrite=True,
        )
        both["train_time_s"] += general["time_s"]
        rows.append({"step": "+ general distillation on the training texts, then task distillation", **both})

        checkpoints = [str(Path(row["checkpoint"])) for row in rows]
        bench = run_bench(
            checkpoints,
            [args.backend],
            options=BenchOptions(
                batch_size=64,
                samples=512 if not args.smoke else 8,
                repeats=args.repeats,
                latency_samples=0,
                memory=False,
                metric=False,
            ),
            source=BenchTexts(data=str(base / "data" / "test.csv")),
            progress=False,
        )
        for row, measured in zip(rows, bench["results"]):
            row["throughput"] = measured["samples_per_s"]
        report["tasks"][task] = {"metric": primary_metric(task), "rows": rows, "general_distillation": general}
    report = json.loads(json.dumps(report, default=str))
    write_result(results_dir(args.smoke) / "distillation.json", report, markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores; throughput with {report['settings']['backend']}, "
        f"batch 64, median of {report['settings']['repeats']} rounds (min-max); training one run each.",
        "",
        "| task | model | test metric | vs teacher | throughput (samples/s) | vs teacher | size | train time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, result in report["tasks"].items():
        metric = result["metric"]
        teacher = result["rows"][0]
        for row in result["rows"]:
            t = row["throughput"]
            lines.append(
                f"| {task} | {row['step']} | {metric} {row['test'][metric]:.4f} "
                f"| {100 * (row['test'][metric] - teacher['test'][metric]):+.2f} pt "
                f"| {t['median']:.0f} ({t['min']:.0f}-{t['max']:.0f}) "
                f"| {t['median'] / teacher['throughput']['median']:.2f}x | {row['size_mb']:.0f} MB "
                f"| {row['train_time_s']:.0f} s |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
