"""minilm-l6 taught by a bigger fine-tuned teacher: does mpnet-base lift it above its own fine-tuning on labels?

    make base    # once: mpnet-base
    .venv/bin/python benchmarks/thesis_scale.py --tasks multiclass --steps teacher --epochs multiclass=3 \\
        --out runs/benchmarks/thesis-scale-3-epochs-teacher --results benchmarks/results/thesis_scale_3_epochs_teacher
    .venv/bin/python benchmarks/bigger_teacher.py \\
        --teacher runs/benchmarks/thesis-scale-3-epochs-teacher/multiclass/teacher/run [--seeds 3] \\
        [--steps distilled,augmented,label-only] [--out runs/benchmarks/minilm-from-mpnet]

Steps, each a run that is kept (a finished step is not run again):
  - distilled: `distilbench distill --teacher TEACHER --student minilm-l6 --seeds N`: the pretrained minilm-l6
    (6 layers, 384 wide, its own tokenizer) learns from the labels and the fine-tuned teacher's outputs
    (alpha 0.5, T 2), with distilbench's defaults otherwise (lr 1e-4, 5 epochs, batch 32, averaged checkpoints);
  - augmented: the same with `--augment mask --augment-copies 1 --epochs 3`: one masked copy of each training
    text (15 % of its words masked, seeded by the seed) learnt from the teacher's outputs alone, as TinyBERT's
    augmentation; 3 epochs of twice the texts (the teacher's outputs on the copies cost about as much again);
  - label-only: `distilbench compare --models minilm-l6 --seeds N` with the same defaults, seeds and split.
All on ../shared/data/news-headlines.csv with the thesis's split (seed 42: 18,000 / 2,000 / 5,000), the split
the teacher was fine-tuned on (checked: the test headlines must be the teacher run's). Results:
benchmarks/results/minilm_from_mpnet.{json,md}: every seed's test accuracy, the 95 % intervals over test
examples and seeds, the teacher's, and the paired difference of each distillation step - label-only over the
same seeds and test headlines (distilbench.evaluation.stats, as compare's verdicts); without the label-only step, the
label-only numbers of benchmarks/results/verdicts-multiclass.json (the same defaults, seeds and split, an
earlier run) are shown.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, RESULTS, ROOT, results_dir, smoke_data, smoke_dir, smoke_model, write_result  # noqa: E402
from common import parser as common_parser

EARLIER = RESULTS / "verdicts-multiclass.json"
RESULTS = RESULTS / "minilm_from_mpnet"
# what --smoke changes: the data, the student (the smoke DistilBERT) and the settings of every step
SETUP = {"data": str(HEADLINES), "student": "minilm-l6", "settings": {}}
STEPS = ("distilled", "augmented", "label-only")
DISTILLED = ("distilled", "augmented")
AUGMENTED = dict(augment="mask", augment_copies=1, epochs=3)


def smoke_teacher() -> Path:
    """A teacher run for the smoke mode: the smoke BERT fine-tuned for one epoch on the smoke headlines."""
    from distilbench.config import load_config
    from distilbench.experiments.compare import compare

    folder = smoke_dir() / "bigger-teacher" / "teacher"
    if not (folder / "comparison.json").is_file():
        values = dict(SETUP["settings"], models=[str(smoke_model())], out=str(folder), label_column="category")
        compare(load_config(None, dict(values, task="multiclass", data=SETUP["data"])), overwrite=True)
    return folder


def use_smoke_settings(args) -> None:
    """The smoke headlines, the smoke DistilBERT taught by the smoke BERT, 2 seeds of one epoch, every step."""
    SETUP.update(data=str(smoke_data("multiclass")), student=str(smoke_model("distilbert")))
    SETUP["settings"] = dict(epochs=1, measure_speed=False, backend="torch-fp32")
    args.teacher, args.seeds, args.steps = str(smoke_teacher()), 2, ",".join(STEPS)
    args.out, args.results = str(smoke_dir() / "bigger-teacher"), str(results_dir(True) / "minilm_from_mpnet")


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--teacher", help="the fine-tuned teacher's run directory (one model; required)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", default="distilled,label-only", help=f"any of {', '.join(STEPS)}")
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "minilm-from-mpnet"))
    parser.add_argument("--results", default=str(RESULTS), help="results path without suffix")
    args = parser.parse_args(argv)
    if args.smoke:
        use_smoke_settings(args)
    elif not args.teacher:
        parser.error("--teacher is required")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if any(s not in STEPS for s in steps):
        raise SystemExit(f"unknown step in {steps}; steps: {', '.join(STEPS)}")

    from distilbench.core.console import DistilbenchError, quiet_libraries

    quiet_libraries(False)
    seeds = [42 + i for i in range(args.seeds)]
    try:
        for step in steps:
            run_step(step, Path(args.out), Path(args.teacher), seeds)
        report = results(Path(args.out), Path(args.teacher), seeds)
    except DistilbenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    write_result(Path(args.results), report, markdown(report))
    print(markdown(report))
    return 0


def run_step(step: str, out: Path, teacher: Path, seeds: list[int]) -> None:
    """Run one step unless its comparison.json exists; its wall time goes to wall_s.txt beside it."""
    from distilbench.config import load_config
    from distilbench.experiments.compare import compare, distill

    folder = out / step
    if (folder / "comparison.json").is_file():
        print(f"[{step}: finished before, kept]", flush=True)
        return
    config = load_config(
        None,
        dict(
            task="multiclass",
            data=SETUP["data"],
            label_column="category",
            models=[SETUP["student"]],
            seeds=seeds,
            out=str(folder),
            backend="torch-fp32",
            measure_speed=False,
            keep_checkpoints="best",
        )
        | (AUGMENTED if step == "augmented" else {})
        | SETUP["settings"],
    )
    print(f"== {step}: {SETUP['student']}, seeds {seeds}", flush=True)
    began = time.perf_counter()
    if step in DISTILLED:
        distill(config, str(teacher), SETUP["student"], overwrite=True, progress=True)
    else:
        compare(config, overwrite=True, progress=True)
    (folder / "wall_s.txt").write_text(f"{time.perf_counter() - began:.1f}\n")


def results(out: Path, teacher: Path, seeds: list[int]) -> dict:
    import pandas as pd

    from distilbench.data.datasets import load_split
    from distilbench.evaluation.metrics import label_array
    from distilbench.evaluation.stats import paired_difference_over_seeds
    from distilbench.evaluation.verdicts import result_dirs, saved_probabilities
    from distilbench.runs import RunDir
    from distilbench.runtime.machine import machine_info

    teacher_row = json.loads((teacher / "comparison.json").read_text())["rows"][0]
    teacher_test = set(pd.read_csv(teacher / "data" / "test.csv")["text"])
    report = {
        "machine": machine_info(),
        "seeds": seeds,
        "steps": {},
        "teacher": {
            "run": str(teacher),
            "model": teacher_row["model"],
            "method": teacher_row["method"],
            "accuracy": teacher_row["test_ci"]["accuracy"],
        },
    }
    probs, tests = {}, {}
    for step in STEPS:
        folder = out / step
        if not (folder / "comparison.json").is_file():
            continue
        saved = json.loads((folder / "comparison.json").read_text())
        label_names, row = saved["label_names"], saved["rows"][0]
        tests[step] = load_split(folder / "data" / "test.csv", "multiclass", label_names)
        if set(tests[step]["text"]) != teacher_test:
            raise SystemExit(f"{step}'s test headlines are not those of the teacher's run {teacher}")
        wall_file = folder / "wall_s.txt"
        report["steps"][step] = {
            "accuracy": row["test_ci"]["accuracy"],
            "f1_macro": row["test_ci"]["f1_macro"],
            "seeds": [
                {
                    "seed": s["seed"],
                    "kept": s["kept"],
                    "train_time_s": s["train_time_s"],
                    "accuracy": s["test"]["accuracy"],
                }
                for s in row["seeds"]
            ],
            "train_time_s": row["train_time_s"],
            "learned_nothing": row["learned_nothing"]["flag"],
            "method": row["method"],
            "machine": saved["machine"],
            "wall_s": float(wall_file.read_text()) if wall_file.is_file() else None,
        }
        probs[step] = [saved_probabilities(d, label_names) for d in result_dirs(RunDir(folder), row)]
        if step in DISTILLED and "on_training_texts" not in report["teacher"]:
            report["teacher"]["on_training_texts"] = soft_targets(folder, label_names, row["distillation"])
    if "label-only" in probs:  # the same split written by every run: the same headlines in the same order
        labels = label_array(tests["label-only"], "multiclass", label_names)
        report["differences"] = {}
        for step in (s for s in DISTILLED if s in probs):
            if not tests[step]["text"].equals(tests["label-only"]["text"]):
                raise SystemExit(f"the {step} and label-only runs' test splits differ")
            report["differences"][step] = paired_difference_over_seeds(
                "multiclass",
                labels,
                probs["label-only"],
                probs[step],
                label_names,
                "accuracy",
                resamples=1000,
                confidence=0.95,
                seed=42,
            )
    elif EARLIER.is_file():
        earlier = json.loads(EARLIER.read_text())
        row = earlier["tasks"]["multiclass"]["defaults"]["comparison"]["rows"][0]
        report["earlier_label_only"] = {
            "accuracy": row["test_ci"]["accuracy"],
            "machine": earlier["machine"],
            "seeds": [{"seed": s["seed"], "accuracy": s["test"]["accuracy"]} for s in row["seeds"]],
        }
    return report


def soft_targets(folder: Path, label_names: list[str], distillation: dict) -> dict:
    """How soft the teacher's targets were: from the run's cached teacher outputs on the training texts, the share
    whose argmax is the label and the mean probability of the labelled class at the distillation temperature."""
    import numpy as np
    from scipy.special import softmax

    from distilbench.data.datasets import load_split
    from distilbench.evaluation.metrics import label_array

    logits = np.load(next((folder / "cache").glob("*.train-logits.npy")))
    labels = label_array(
        load_split(folder / "data" / "train.csv", "multiclass", label_names), "multiclass", label_names
    )
    probs = softmax(logits / distillation["temperature"], axis=1)
    return {
        "texts": len(labels),
        "agree_with_labels": float((logits.argmax(axis=1) == labels).mean()),
        "temperature": distillation["temperature"],
        "mean_prob_of_label": float(probs[np.arange(len(labels)), labels].mean()),
    }


def _ci(ci: dict) -> str:
    return f"{ci['value']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"


def _soft_text(soft: dict | None) -> str:
    if not soft:
        return ""
    return (
        f" On the {soft['texts']} training texts its outputs agree with the labels on "
        f"{soft['agree_with_labels']:.1%} and give the labelled class {soft['mean_prob_of_label']:.2f} on "
        f"average at T {soft['temperature']:g}."
    )


def _per_seed(seeds: list[dict]) -> str:
    return ", ".join(f"{s['accuracy']:.4f}" for s in seeds)


def markdown(report: dict) -> str:
    machine = report["machine"]
    teacher = report["teacher"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, transformers "
        f"{machine['transformers']}; ../shared/data/news-headlines.csv, the thesis's split (18,000 / 2,000 / "
        f"5,000); seeds {report['seeds']}.",
        "",
        f"Teacher: `{teacher['model']}` ({teacher['run']}), test accuracy {_ci(teacher['accuracy'])}."
        + _soft_text(teacher.get("on_training_texts")),
        "",
        "| minilm-l6 | test accuracy, mean [95% CI] | per seed | macro F1 [95% CI] | kept | train time per "
        "seed | beats baseline | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for step, entry in report["steps"].items():
        wall = f"{entry['wall_s'] / 60:.0f} min" if entry.get("wall_s") else ""
        lines.append(
            f"| {step} | {_ci(entry['accuracy'])} | "
            f"{_per_seed(entry['seeds'])} | {_ci(entry['f1_macro'])} | "
            f"{', '.join(s['kept'] for s in entry['seeds'])} | {entry['train_time_s']:.0f} s | "
            f"{'NO' if entry['learned_nothing'] else 'yes'} | {wall} |"
        )
    if "earlier_label_only" in report:
        earlier = report["earlier_label_only"]
        lines.append(
            f"| label-only (verdicts-multiclass.json, {earlier['machine']['cpu']}) | "
            f"{_ci(earlier['accuracy'])} | {_per_seed(earlier['seeds'])} "
            f"| | | | | |"
        )
    for step, d in report.get("differences", {}).items():
        lines += [
            "",
            f"{step} - label-only, paired over the same seeds and test headlines: "
            f"{d['difference_points']:+.2f} points [{d['low']:+.2f}, {d['high']:+.2f}].",
        ]
    for step, entry in report["steps"].items():
        lines += ["", f"{step}: {entry['method']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
