"""The thesis's two experiments on its own data, with the offline teacher and its DistilBERT student.

    .venv/bin/python benchmarks/thesis_tasks.py [--max-samples N] [--epochs E]

Runs `distilbench compare` on ../shared/data/news-headlines.csv (multiclass) and
../shared/data/toxic-comments.csv (multilabel) with minilm-l6 and student:minilm-l6 and the thesis's
settings (4 epochs, batch 64/32, AdamW 5e-5, no warm-up, clip 1.0), both fine-tuned on labels as in
the thesis, then writes
benchmarks/results/thesis_tasks.{json,md}: test metrics, train and eval time, size. Training is one
run per model (tens of minutes on 2 cores); eval time is re-measured 5 times on the best checkpoint
(median, min-max) with the default backend, in the same process as plain `transformers.pipeline` on
the same texts, both in batches of 32 and with tokenization included.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, TASKS, parser, results_dir, smoke_dir, smoke_model, smoke_tasks, write_result  # noqa: E402

TEACHER = ["minilm-l6"]  # the teacher, and the student built from it; --smoke puts the smoke model here


def measure_eval(best_dir: str, texts: list[str], repeats: int, backend_name: str = "auto") -> dict:
    """Seconds to predict `texts`, tokenization included: distilbench's default backend (what `predict`
    uses) vs transformers.pipeline (fp32), both in batches of 32."""
    from transformers import pipeline

    from distilbench.benchmarking.speed import spread
    from distilbench.models.registry import load_trained
    from distilbench.runtime.auto import build_backend
    from distilbench.runtime.inference import backend_logits

    model, tokenizer, _, _ = load_trained(best_dir)
    backend, _ = build_backend(model, tokenizer, best_dir, backend_name, device="cpu", batch_size=32, held_texts=texts)
    backend_logits(backend, tokenizer, texts[:64], batch_size=32)  # warm-up
    ours = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend_logits(backend, tokenizer, texts, batch_size=32)
        ours.append(time.perf_counter() - start)
    classifier = pipeline("text-classification", model=best_dir, top_k=None, device="cpu")
    classifier(texts[:64], batch_size=32, truncation=True)
    theirs = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier(texts, batch_size=32, truncation=True)
        theirs.append(time.perf_counter() - start)
    return {
        "backend": backend.name,
        "texts": len(texts),
        "repeats": repeats,
        "distilbench_s": spread(ours),
        "pipeline_fp32_s": spread(theirs),
        "speedup_vs_pipeline": statistics.median(theirs) / statistics.median(ours),
    }


def smoke_runs() -> Path:
    """The run folder of this script's smoke run (made once per smoke folder), which distillation.py's smoke
    reads."""
    runs = smoke_dir() / "thesis-tasks"
    if not (runs / "multiclass" / "comparison.json").is_file():
        main(["--smoke"])
    return runs


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__)
    args_parser.add_argument("--max-samples", type=int, default=None, help="subsample each data set (default: all)")
    args_parser.add_argument("--epochs", type=int, default=4)
    args_parser.add_argument("--repeats", type=int, default=5)
    args_parser.add_argument("--eval-texts", type=int, default=2000, help="test texts for the eval-time comparison")
    args_parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks"))
    args = args_parser.parse_args(argv)
    if args.smoke:  # one task, one epoch, torch-fp32 instead of auto's calibration
        TASKS.clear()
        TASKS["multiclass"] = smoke_tasks()["multiclass"]
        TEACHER[0] = str(smoke_model())
        args.epochs, args.repeats, args.eval_texts, args.runs = 1, 1, 8, str(smoke_dir() / "thesis-tasks")

    from distilbench.config import ExperimentConfig
    from distilbench.core.console import quiet_libraries
    from distilbench.experiments.compare import compare
    from distilbench.runtime.machine import machine_info

    quiet_libraries(False)
    report = {"machine": machine_info(), "settings": vars(args), "tasks": {}}
    for task, source in TASKS.items():
        # both fine-tuned on labels, as in the thesis (benchmarks/distillation.py adds distilled students)
        config = ExperimentConfig(
            task=task,
            models=[TEACHER[0], f"student:{TEACHER[0]}"],
            epochs=args.epochs,
            distill=False,
            max_samples=args.max_samples,
            out=f"{args.runs}/{task}",
            **source,
        ).validate()
        start = time.perf_counter()
        rows = compare(config, overwrite=True)
        wall = time.perf_counter() - start
        import pandas as pd

        test_texts = pd.read_csv(Path(config.out) / "data" / "test.csv")["text"].astype(str).tolist()
        for row in rows:
            row["eval_timing"] = measure_eval(
                row["checkpoint"],
                test_texts[: args.eval_texts],
                args.repeats,
                "auto" if not args.smoke else "torch-fp32",
            )
            print(row["model"], json.dumps(row["eval_timing"]), flush=True)
        report["tasks"][task] = {
            "data": config.data,
            "wall_s": wall,
            "rows": rows,
            "splits": json.loads((Path(config.out) / "data" / "summary.json").read_text())["rows"],
        }
    write_result(results_dir(args.smoke) / "thesis_tasks.json", report, markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, "
        f"transformers {machine['transformers']}; training precision "
        f"{report['tasks']['multiclass']['rows'][0]['precision']}; inference backend "
        f"{report['tasks']['multiclass']['rows'][0]['eval_timing']['backend']}.",
        "",
        "| task (test rows) | model | params | size | best epoch | test metric | train time "
        "| eval time (test split) "
        f"| eval: distilbench vs pipeline, median of {report['settings']['repeats']} (min-max) "
        "| speed-up vs pipeline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, result in report["tasks"].items():
        metric = "accuracy" if task == "multiclass" else "hamming_score"
        for row in result["rows"]:
            t = row["eval_timing"]
            ours, theirs = t["distilbench_s"], t["pipeline_fp32_s"]
            lines.append(
                f"| {task} ({result['splits']['test']}) | {row['model']} | {row['params'] / 1e6:.1f} M "
                f"| {row['size_mb']:.0f} MB | {row['best_epoch']} | {metric} {row['test'][metric]:.4f} "
                f"| {row['train_time_s']:.0f} s | {row['eval_time_s']:.1f} s "
                f"| {t['texts']} texts: {ours['median']:.2f} s ({ours['min']:.2f}-{ours['max']:.2f}) vs "
                f"{theirs['median']:.2f} s ({theirs['min']:.2f}-{theirs['max']:.2f}) "
                f"| {t['speedup_vs_pipeline']:.1f}x |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
