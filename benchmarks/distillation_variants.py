"""Which kind of task distillation helps a 3-layer student, against the same student trained on labels alone.

    PYTHONPATH=src .venv/bin/python benchmarks/distillation_variants.py [--seeds 1] [--epochs 2] \\
        [--train-rows 4000] [--val-rows 1000] [--test-rows 4000] [--unlabeled-rows 6000] [--out DIR]

On ../shared/data/news-headlines.csv, shuffled once (seed 0) and cut into disjoint parts: a test split, a
validation split, a training split with labels and, for --unlabeled, further headlines whose labels are
dropped. Per seed, the teacher minilm-l6 is fine-tuned once on the training split (compare --seeds); then the
3-layer student student:minilm-l6 (a DistilBERT of the teacher's layers 0, 2, 4), always with distilbench's
defaults (learning rate 1e-4, batch 32, warm-up 0.1) and the same epochs:
  - label-only: fine-tuned on the labels (compare --no-distill);
  - logits KD: distilled from the same seed's fine-tuned teacher (alpha 0.5, T 2);
  - + unlabeled: logits KD + --unlabeled (the further headlines, soft loss only);
  - + augment: logits KD + --augment mask --augment-copies 1;
  - + hidden/attention: logits KD + --distill-hidden 1 --distill-attention 1 (TinyBERT's weights);
  - unlabeled + hidden/attention: both at once.
The defaults (one seed, 2 epochs, 4,000 labelled rows) fit in about an hour on 2 busy CPU cores; the results
are rewritten after every variant, so a stopped run keeps what it measured.
Each variant's test accuracy has a bootstrap interval over test examples (and seeds), and its difference from
label-only a paired bootstrap interval on the same test examples (distilbench.evaluation.stats, as `compare` reports).
The best variant is picked by validation accuracy, so the test split is not used to choose it.
Runs go to --out (default /tmp/distilbench-variants; nothing is written into the repository but the results:
benchmarks/results/distillation_variants.{json,md}).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, RESULTS, results_dir, smoke_data, smoke_dir, smoke_model, write_result  # noqa: E402
from common import parser as common_parser

DATA = [HEADLINES]  # --smoke puts the smoke headlines here
TEACHER = ["minilm-l6"]  # and the smoke model here
STUDENT = ["student:minilm-l6"]
VARIANTS = {  # name: (what it adds, config settings); run in this order, results written after each
    "logits KD": ("soft targets of the teacher on the labelled texts (alpha 0.5, T 2)", {}),
    "+ unlabeled": ("+ the held-out headlines without labels (soft loss only)", {"unlabeled": "UNLABELED"}),
    "+ augment": (
        "+ 1 masked copy of each training text (15 % of words, soft loss only)",
        {"augment": "mask", "augment_copies": 1},
    ),
    "+ hidden/attention": (
        "+ MSE of hidden states and attention maps, student layer i to teacher layer 0/2/4 (weights 1, 1)",
        {"distill_hidden": 1.0, "distill_attention": 1.0},
    ),
    "unlabeled + hidden/attention": (
        "+ unlabeled and hidden/attention at once",
        {"distill_hidden": 1.0, "distill_attention": 1.0, "unlabeled": "UNLABELED"},
    ),
}


def make_splits(out: Path, train: int, val: int, test: int, unlabeled: int) -> dict[str, str]:
    """Disjoint parts of the headlines (shuffled with seed 0), written under `out` (not into the repository)."""
    import pandas as pd

    frame = pd.read_csv(DATA[0]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    need = train + val + test + unlabeled
    if need > len(frame):
        raise SystemExit(f"{need} rows asked for, {DATA[0]} has {len(frame)}")
    parts = {
        "test": frame[:test],
        "val": frame[test : test + val],
        "train": frame[test + val : test + val + train],
        "unlabeled": frame[test + val + train : need][["text"]],
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in parts.items():
        paths[name] = str(out / f"{name}.csv")
        part.to_csv(paths[name], index=False)
    return paths


def use_smoke_settings(args) -> None:
    """The smoke model as the teacher, 96 smoke headlines cut 32 / 8 / 16 / 16 (train, val, test, unlabeled), one
    epoch, the two variants that add data (the others differ only in the loss)."""
    DATA[0], TEACHER[0] = smoke_data("multiclass", 96), str(smoke_model())
    STUDENT[0] = f"student:{TEACHER[0]}"
    args.epochs, args.train_rows, args.val_rows, args.test_rows, args.unlabeled_rows = 1, 32, 8, 16, 16
    args.variants, args.out = "+ unlabeled,+ augment", str(smoke_dir() / "variants")
    args.results = str(results_dir(True) / "distillation_variants")


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--seeds", default="1", help="training seeds, comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--val-rows", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=4000)
    parser.add_argument("--unlabeled-rows", type=int, default=6000)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which variants, comma-separated")
    parser.add_argument("--out", default="/tmp/distilbench-variants")
    parser.add_argument(
        "--results",
        default=str(RESULTS / "distillation_variants"),
        help="results path without suffix (.json and .md are written)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        use_smoke_settings(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")

    from distilbench.config import load_config
    from distilbench.core.console import quiet_libraries
    from distilbench.experiments.compare import compare, distill
    from distilbench.runs import RunDir, model_slug
    from distilbench.runtime.machine import machine_info

    quiet_libraries(False)
    start = time.perf_counter()
    out = Path(args.out)
    paths = make_splits(out / "data", args.train_rows, args.val_rows, args.test_rows, args.unlabeled_rows)
    common = dict(
        task="multiclass",
        data=paths["train"],
        val_data=paths["val"],
        test_data=paths["test"],
        label_column="category",
        epochs=args.epochs,
        backend="torch-fp32",
        measure_speed=False,
        keep_checkpoints="best",
    )
    machine = machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['cpu_count']} cores; seeds {seeds}; {args.epochs} epochs; "
        f"train {args.train_rows}, val {args.val_rows}, test {args.test_rows}, unlabeled {args.unlabeled_rows}",
        flush=True,
    )

    def timed_compare(models: list[str], name: str, **settings) -> list[dict]:
        config = load_config(None, dict(common, models=models, seeds=seeds, out=str(out / name), **settings))
        began = time.perf_counter()
        rows = compare(config, overwrite=True, progress=False)
        print(f"[{name}: {time.perf_counter() - began:.0f} s]", flush=True)
        return rows

    models = {}  # name: {"rows": per-seed rows, "results": per-seed results folders}
    teacher_name, student = TEACHER[0], STUDENT[0]
    teacher_rows = timed_compare([teacher_name], "teacher")
    teacher_run = RunDir(out / "teacher")
    models["teacher minilm-l6"] = per_seed(teacher_rows[0], teacher_run, teacher_name, seeds)
    label_only = timed_compare([student], "label-only", distill=False)
    models["label-only"] = per_seed(label_only[0], RunDir(out / "label-only"), student, seeds)

    for name in variants:
        settings = {k: (paths["unlabeled"] if v == "UNLABELED" else v) for k, v in VARIANTS[name][1].items()}
        rows, folders = [], []
        for seed in seeds:
            teacher = teacher_run.best_dir(
                model_slug(teacher_name) if len(seeds) == 1 else f"{model_slug(teacher_name)}/seed-{seed}"
            )
            target = out / slug_of(name) / f"seed-{seed}"
            config = load_config(None, dict(common, seed=seed, out=str(target), **settings))
            began = time.perf_counter()
            rows.append(distill(config, str(teacher), student, overwrite=True, progress=False))
            folders.append(RunDir(target).results(model_slug(student)))
            print(
                f"[{name}, seed {seed}: {time.perf_counter() - began:.0f} s, test accuracy "
                f"{rows[-1]['test']['accuracy']:.4f}]",
                flush=True,
            )
        models[name] = {"rows": rows, "results": folders}

        write_results(models, out, args, seeds, machine, time.perf_counter() - start)
    return 0


def write_results(models: dict, out: Path, args, seeds: list[int], machine: dict, wall_s: float) -> None:
    """Intervals and paired differences for the models trained so far; the .json and .md (rewritten after each
    variant, so a stopped benchmark keeps what it measured)."""
    from distilbench.evaluation.metrics import label_array
    from distilbench.evaluation.stats import bootstrap_ci_over_seeds, paired_difference_over_seeds
    from distilbench.evaluation.verdicts import saved_probabilities
    from distilbench.experiments.compare import load_saved_splits
    from distilbench.runs import RunDir

    splits, label_names = load_saved_splits(RunDir(out / "label-only"), "multiclass")
    labels = label_array(splits["test"], "multiclass", label_names)
    options = dict(resamples=2000, seed=0)
    probs = {name: [saved_probabilities(d, label_names) for d in entry["results"]] for name, entry in models.items()}
    report_rows = []
    for name, entry in models.items():
        ci = bootstrap_ci_over_seeds("multiclass", labels, probs[name], label_names, "accuracy", **options)
        versus = None
        if name not in ("teacher minilm-l6", "label-only"):
            versus = paired_difference_over_seeds(
                "multiclass", labels, probs["label-only"], probs[name], label_names, "accuracy", **options
            )
        first = entry["rows"][0]
        report_rows.append(
            {
                "variant": name,
                "adds": VARIANTS[name][0] if name in VARIANTS else None,
                "method": first.get("method"),
                "distillation": first.get("distillation"),
                "test_accuracy": ci,
                "vs_label_only": versus,
                "val_accuracy": statistics.fmean(r["val"]["accuracy"] for r in entry["rows"]),
                "train_time_s": statistics.fmean(r["train_time_s"] for r in entry["rows"]),
                "per_seed": [
                    {
                        "seed": r["seed"],
                        "test_accuracy": r["test"]["accuracy"],
                        "val_accuracy": r["val"]["accuracy"],
                        "best_epoch": r["best_epoch"],
                        "train_time_s": r["train_time_s"],
                    }
                    for r in entry["rows"]
                ],
            }
        )
    distilled = [r for r in report_rows if r["vs_label_only"] is not None]
    by_val = max(distilled, key=lambda r: r["val_accuracy"]) if distilled else None
    by_test = max(distilled, key=lambda r: r["test_accuracy"]["value"]) if distilled else None
    report = {
        "machine": machine,
        "settings": {
            **vars(args),
            "seeds": seeds,
            "learning_rate": 1e-4,
            "train_batch_size": 32,
            "data": str(DATA[0]),
            "student": STUDENT[0],
            "teacher": TEACHER[0],
        },
        "splits": {k: len(v) for k, v in splits.items()},
        "rows": report_rows,
        "variants_done": [r["variant"] for r in distilled],
        "best_by_validation": by_val["variant"] if by_val else None,
        "best_by_test": by_test["variant"] if by_test else None,
        "target_points": 0.5,
        "target_met": bool(by_val and by_val["vs_label_only"]["difference_points"] >= 0.5),
        "wall_s": wall_s,
    }
    write_result(Path(args.results), json.loads(json.dumps(report, default=str)), markdown(report))
    print(markdown(report), flush=True)


def per_seed(row: dict, run, spec: str, seeds: list[int]) -> dict:
    """A compare row's per-seed rows and results folders."""
    from distilbench.runs import model_slug

    slug = model_slug(spec)
    if len(seeds) == 1:
        return {"rows": [row], "results": [run.results(slug)]}
    return {
        "rows": [dict(row, **entry) for entry in row["seeds"]],
        "results": [run.results(f"{slug}/seed-{s}") for s in seeds],
    }


def slug_of(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    seeds = s["seeds"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores. Headlines (4 classes): train {report['splits']['train']}, "
        f"validation {report['splits']['val']}, test {report['splits']['test']} rows, {s['unlabeled_rows']} more "
        f"headlines without labels for --unlabeled; {s['epochs']} epochs, learning rate 1e-4, batch 32; "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}), each student "
        f"distilled from the same seed's teacher. Accuracy is the mean over seeds with a 95 % bootstrap interval "
        f"(test examples and seeds resampled); the difference from label-only is paired on the same test "
        f"examples. Wall time {report['wall_s'] / 60:.0f} min.",
        "",
        "| student (3 layers) | test accuracy (95 % CI) | vs label-only, points (95 % CI) | val accuracy "
        "| train time per seed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        ci, versus = row["test_accuracy"], row["vs_label_only"]
        diff = (
            "—"
            if versus is None
            else (f"{versus['difference_points']:+.2f} ({versus['low']:+.2f} to {versus['high']:+.2f})")
        )
        name = row["variant"] if row["variant"] != "teacher minilm-l6" else "teacher minilm-l6 (6 layers)"
        lines.append(
            f"| {name} | {ci['value']:.4f} ({ci['low']:.4f}-{ci['high']:.4f}) | {diff} "
            f"| {row['val_accuracy']:.4f} | {row['train_time_s']:.0f} s |"
        )
    best = next((r for r in report["rows"] if r["variant"] == report["best_by_validation"]), None)
    if best is not None:
        d = best["vs_label_only"]
        lines += [
            "",
            f"Best variant by validation accuracy: **{best['variant']}**, {d['difference_points']:+.2f} "
            f"points over label-only on test (95 % CI {d['low']:+.2f} to {d['high']:+.2f}); target +0.50: "
            f"{'met' if report['target_met'] else 'not met'}. Best on test: {report['best_by_test']}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
