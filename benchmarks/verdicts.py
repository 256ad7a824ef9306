"""Verdicts with seeds on both thesis tasks: intervals, paired differences, baselines, and defaults vs the thesis's.

    .venv/bin/python benchmarks/verdicts.py [--seeds 3] [--tasks multiclass,multilabel] [--thesis-seeds 3]
                                            [--head standard --select-metric f1_macro --suffix standard-head]
                                            [--pos-weight auto --teacher-only --suffix pos-weight]
                                            [--learning-rate 5e-5] [--average-checkpoints 0] [--epochs 6]
                                            [--lr-schedule constant] [--layer-lr-decay 0.8]
                                            [--label-smoothing 0.1] [--head-init probe] [--resume]
                                            [--train-batch-size 16] [--weight-decay 0.01]

For each task, `distilbench compare --seeds N` with minilm-l6 and its 3-layer student (task-distilled from the
same seed's teacher) and distilbench's default settings, on ../shared/data/news-headlines.csv (multiclass) and
../shared/data/toxic-comments.csv (multilabel), the thesis's split (seed 42). Then, as the control for the
default settings, minilm-l6 alone with `--preset thesis` and the same seeds and splits. Every epoch's checkpoint
of the multilabel teacher is tested too, to measure what choosing the best epoch by hamming score (the thesis),
macro F1 or the validation loss (distilbench's default) gives on the test split. --head and --select-metric run
the defaults' models with another head or selection metric (the earlier defaults: --head standard
--select-metric f1_macro), --pos-weight, --learning-rate, --lr-schedule, --layer-lr-decay, --label-smoothing,
--head-init, --average-checkpoints, --epochs, --train-batch-size or --weight-decay, written with --suffix so the
default results stay; --teacher-only leaves the student out.

Results: benchmarks/results/verdicts-<task>[-<suffix>].{json,md} (one pair per task, written as soon as the task
is done), with the machine, the seeds and the wall time of each run.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, TASKS, results_dir, smoke_dir, smoke_model, smoke_tasks, write_result  # noqa: E402
from common import parser as common_parser

MODELS = ["minilm-l6", "student:minilm-l6"]
# settings a run of the defaults can change (written with --suffix): name, type, example for the help
OVERRIDES = [
    ("head", str, " (e.g. standard)"),
    ("select_metric", str, ""),
    ("pos_weight", str, " (e.g. auto)"),
    ("learning_rate", float, ""),
    ("epochs", int, ""),
    ("train_batch_size", int, ""),
    ("weight_decay", float, ""),
    ("lr_schedule", str, " (e.g. constant)"),
    ("layer_lr_decay", float, " (e.g. 0.8)"),
    ("precision", str, " (e.g. fp32)"),
    ("label_smoothing", float, " (multiclass, e.g. 0.1)"),
    ("head_init", str, " (e.g. probe)"),
    ("average_checkpoints", int, " (0: the best epoch only)"),
]


def run_compare(
    task: str, out: Path, seeds: list[int], models: list[str], max_samples: int | None, resume: bool = False, **settings
) -> dict:
    from distilbench.config import load_config
    from distilbench.experiments.compare import compare

    values = dict(
        task=task,
        models=models,
        seeds=seeds,
        out=str(out),
        backend="torch-fp32",
        measure_speed=False,
        keep_checkpoints="all",
        max_samples=max_samples,
        **TASKS[task],
        **settings,
    )
    config = load_config(None, values)
    start = time.perf_counter()
    compare(config, overwrite=not resume, progress=False, resume=resume)
    wall = time.perf_counter() - start
    saved = json.loads((out / "comparison.json").read_text())
    shown = {k: v for k, v in config.to_dict().items() if k in SHOWN_SETTINGS}
    # the effective values, where they are the task's defaults
    shown.update(
        average_checkpoints=config.averaged_checkpoints(),
        head_init=config.initial_head(),
        select_metric=config.best_epoch_metric(),
    )
    return {"settings": shown, "wall_s": wall, "comparison": saved}


SHOWN_SETTINGS = (
    "epochs",
    "train_batch_size",
    "learning_rate",
    "lr_schedule",
    "layer_lr_decay",
    "label_smoothing",
    "head_init",
    "warmup_ratio",
    "weight_decay",
    "head",
    "pos_weight",
    "rare_positives",
    "class_weight",
    "patience",
    "max_length",
    "precision",
    "preset",
    "select_metric",
    "average_checkpoints",
)


def epoch_choices(out: Path, model: str, seeds: list[int]) -> list[dict]:
    """Test metrics of every epoch checkpoint of each seed, and the epoch each validation metric picks."""
    import pandas as pd

    from distilbench.config import load_config
    from distilbench.evaluation.metrics import summary_metrics
    from distilbench.experiments.compare import test_model
    from distilbench.runs import RunDir, model_slug
    from distilbench.training.finetune import choose_best_epoch

    run = RunDir(out)
    config = load_config(run.config)
    test = pd.read_csv(run.data / "test.csv")
    found = []
    for seed in seeds:
        # one seed keeps no seed-N folder (compare's layout)
        slug = model_slug(model) + (f"/seed-{seed}" if len(seeds) > 1 else "")
        stats = json.loads((run.results(slug) / "training_stats.json").read_text())["epochs"]
        tested = {}
        for row in stats:
            metrics, _, _ = test_model(
                run.epoch_dir(slug, row["epoch"]), test, config, progress=False, check_fp32=False
            )
            tested[row["epoch"]] = summary_metrics(metrics)
        picks = {metric: choose_best_epoch(stats, metric) for metric in ("hamming_score", "f1_macro", "loss")}
        found.append(
            {
                "seed": seed,
                "val": stats,
                "test_by_epoch": tested,
                "picks": {m: {"epoch": e, "test": tested[e]} for m, e in picks.items()},
            }
        )
    return found


def use_smoke_settings(args) -> None:
    """The smoke model and its student on the smoke comments (multilabel: the epoch choices run too), 2 seeds of 2
    epochs; a smoke run already in the smoke folder is resumed (compare --resume), not trained again."""
    TASKS.update(smoke_tasks())
    MODELS[:] = [str(smoke_model()), f"student:{smoke_model()}"]
    args.tasks, args.seeds, args.thesis_seeds, args.runs = "multilabel", 2, 0, str(smoke_dir() / "runs")
    args.epochs = args.epochs or 2
    args.resume = (Path(args.runs) / "verdicts-multilabel" / "comparison.json").is_file()


def smoke_runs() -> Path:
    """The folder of the smoke verdicts run (made once per smoke folder): what threshold_criteria.py and
    checkpoint_averaging.py read in their smoke mode."""
    runs = smoke_dir() / "runs"
    if not (runs / "verdicts-multilabel" / "comparison.json").is_file():
        main(["--smoke"])
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        use_smoke_settings(args)
    return run(args)


def make_parser():
    parser = common_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--thesis-seeds", type=int, default=3, help="seeds of the --preset thesis control (0: none)")
    parser.add_argument("--tasks", default="multiclass,multilabel")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks"))
    parser.add_argument("--max-samples", type=int, help="subsample each data set (a quick check of the script)")
    parser.add_argument("--markdown", metavar="JSON", help="only write the tables of a results JSON again")
    for setting, kind, example in OVERRIDES:
        parser.add_argument(
            f"--{setting.replace('_', '-')}",
            type=kind,
            help=f"the defaults' runs with this --{setting.replace('_', '-')} instead{example}",
        )
    parser.add_argument("--teacher-only", action="store_true", help="the defaults' runs without the student")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in its directory (compare --resume): models finished there are kept, "
        "e.g. a --teacher-only run's teacher when the student is added; fixed seeds, so the "
        "numbers are those of a run from scratch",
    )
    parser.add_argument("--suffix", default="", help="results as verdicts-<task>-<suffix>.{json,md} (other settings)")
    return parser


def run(args) -> int:
    """Every task of args: the defaults' runs, the --preset thesis control, the epoch choices; one result each."""
    if args.markdown:
        report = json.loads(Path(args.markdown).read_text())
        Path(args.markdown).with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
        return 0

    from distilbench.core.console import quiet_libraries
    from distilbench.runtime.machine import machine_info

    quiet_libraries(False)
    seeds = [42 + i for i in range(args.seeds)]
    for task in args.tasks.split(","):
        started = time.perf_counter()
        report = {"machine": machine_info(), "seeds": seeds, "tasks": {}}
        entry = {}
        name = f"verdicts-{task}" + (f"-{args.suffix}" if args.suffix else "")
        out = Path(args.runs) / name
        overrides = {
            setting: getattr(args, setting) for setting, _, _ in OVERRIDES if getattr(args, setting) is not None
        }
        models = MODELS[:1] if args.teacher_only else MODELS
        entry["defaults"] = run_compare(task, out, seeds, models, args.max_samples, args.resume, **overrides)
        if args.thesis_seeds:
            thesis_seeds = [42 + i for i in range(args.thesis_seeds)]
            entry["thesis"] = run_compare(
                task,
                Path(args.runs) / f"verdicts-{task}-thesis",
                thesis_seeds,
                MODELS[:1],
                args.max_samples,
                preset="thesis",
            )
        report["tasks"][task] = entry
        results = results_dir(args.smoke) / f"{name}.json"
        write_result(results, report)  # kept if what follows fails
        if task == "multilabel":
            entry["epoch_choices"] = {"defaults": epoch_choices(out, MODELS[0], seeds)}
            if args.thesis_seeds:
                entry["epoch_choices"]["thesis"] = epoch_choices(
                    Path(args.runs) / f"verdicts-{task}-thesis", MODELS[0], thesis_seeds
                )
        report["total_wall_s"] = time.perf_counter() - started
        write_result(results, report, markdown(report))
        print(markdown(report), flush=True)
    return 0


def _ci(ci: dict | None, digits: int = 4) -> str:
    if not ci or ci.get("value") is None:
        return "n/a"
    return f"{ci['value']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def _spread(row: dict, metric: str) -> str:
    spread = (row.get("test_spread") or {}).get(metric)
    if not spread:
        return ""
    return f"{spread['std']:.4f} ({spread['min']:.4f}-{spread['max']:.4f})"


def _time_range(row: dict) -> str:
    """' (min-max)' of the training time over seeds; nothing for one seed."""
    spread = row.get("train_time_spread")
    return f" ({spread['min']:.0f}-{spread['max']:.0f})" if spread else ""


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, "
        f"transformers {machine['transformers']}; seeds {report['seeds']} (training; splits: seed 42); "
        f"total {report['total_wall_s'] / 60:.0f} min.",
        "",
    ]
    for task, entry in report["tasks"].items():
        comparison = entry["defaults"]["comparison"]
        metric = comparison["primary_metric"]
        extra = ["f1_macro"] if task == "multiclass" else ["f1_macro", "roc_auc_macro"]
        # multilabel: also the primary metric at the thresholds tuned on validation, which the saved model predicts with
        rows = [row for result in entry.values() if "comparison" in result for row in result["comparison"]["rows"]]
        tuned = [f" | {metric} at tuned thresholds [95% CI]"] if any("test_tuned_ci" in r for r in rows) else []
        lines += [
            f"**{task}** ({comparison['data'].split('/')[-1]}, test {comparison['rows_per_split']['test']} rows)",
            "",
            f"| settings | model | {metric} mean [95% CI] | sd over seeds (min-max) | "
            + " | ".join(f"{m} mean [95% CI]" for m in extra)
            + "".join(tuned)
            + " | vs minilm-l6, points [95% CI] | verdict (margin 1) | beats baseline | train time per seed | "
            "wall |",
            "|" + " --- |" * (9 + len(extra) + len(tuned)),
        ]
        for name in ("defaults", "thesis"):
            if name not in entry:
                continue
            result = entry[name]
            label = "distilbench defaults" if name == "defaults" else "--preset thesis"
            for row in result["comparison"]["rows"]:
                diff = row.get("vs_reference")
                verdict = diff["verdict"] if diff else "reference"
                shown_diff = (
                    f"{diff['difference_points']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]" if diff else ""
                )
                flags = "NO" if row["learned_nothing"]["flag"] else "yes"
                lines.append(
                    f"| {label} | {row['model']} | {_ci(row['test_ci'][metric])} | {_spread(row, metric)} | "
                    + " | ".join(_ci(row["test_ci"].get(m)) for m in extra)
                    + (f" | {_ci((row.get('test_tuned_ci') or {}).get(metric))}" if tuned else "")
                    + f" | {shown_diff} | {verdict} | {flags} | {row['train_time_s']:.0f} s{_time_range(row)} | "
                    f"{result['wall_s'] / 60:.0f} min |"
                )
        baselines = comparison["baselines"]["baselines"]
        for name, base in baselines.items():
            lines.append(
                f"| trivial baseline | {base['description']} | {_ci(base['metrics'][metric])} | | "
                + " | ".join(_ci(base["metrics"].get(m)) for m in extra)
                + " |" * len(tuned)
                + " | | | | | |"
            )
        settings = entry["defaults"]["settings"]
        lines += ["", "Settings (defaults): " + ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)]
        if "thesis" in entry:
            lines.append(
                "Settings (--preset thesis): "
                + ", ".join(f"{k} {v}" for k, v in entry["thesis"]["settings"].items() if v is not None)
            )
        lines.append("")
        for name, choices in (entry.get("epoch_choices") or {}).items():
            lines += [
                f"Best epoch of minilm-l6 ({'distilbench defaults' if name == 'defaults' else '--preset thesis'})"
                f" chosen on validation by each metric, and its test metrics (mean over seeds):",
                "",
                "| chosen by | epochs chosen | test hamming score | test macro F1 | test macro ROC-AUC |",
                "| --- | --- | --- | --- | --- |",
            ]
            for pick in ("hamming_score", "f1_macro", "loss"):
                tests = [c["picks"][pick]["test"] for c in choices]
                lines.append(
                    f"| validation {pick} | {', '.join(str(c['picks'][pick]['epoch']) for c in choices)} | "
                    f"{statistics.fmean(t['hamming_score'] for t in tests):.4f} | "
                    f"{statistics.fmean(t['f1_macro'] for t in tests):.4f} | "
                    f"{statistics.fmean(t['roc_auc_macro'] for t in tests):.4f} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
