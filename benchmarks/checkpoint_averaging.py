"""Averaging the weights of the last epochs' checkpoints (a uniform "model soup") against the best epoch.

    .venv/bin/python benchmarks/checkpoint_averaging.py [--tasks multiclass,multilabel] [--windows 2-5,3-5,4-5]
                                                        [--suffix pos-weight-rare-lr5e-5]

A measurement for a candidate feature, on checkpoints that already exist: the runs of `benchmarks/verdicts.py`
(distilbench's defaults, `minilm-l6`, seeds 42-44, every epoch kept under runs/benchmarks/verdicts-<task>/). For
each seed it scores on the validation and test texts those runs saved (`results/minilm-l6/seed-N/*_predictions.csv`)
every epoch's checkpoint and the uniform average of the weights of each window of epochs, and what choosing among
the epochs and the averages by the validation select metric (accuracy for multiclass, the loss for multilabel,
distilbench's defaults) would give; for multilabel also the hamming score and macro F1 at each candidate's own
calibrated thresholds (tuned on its validation predictions, what predict and serve use). Inference in fp32
through distilbench's own loop; nothing is trained.

--suffix reads the runs of another setting instead (runs/benchmarks/verdicts-<task>-<suffix>/, as
`benchmarks/verdicts.py --suffix` leaves them). The loss here is the plain one: for runs trained with
--pos-weight, whose validation loss was the weighted one, the "chosen by validation" rows can differ from the
tool's choice (the candidates' own rows do not).

Results: benchmarks/results/checkpoint_averaging[-<suffix>].{json,md}, with the machine.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, results_dir, smoke_model, write_result  # noqa: E402
from common import parser as common_parser

MODEL = "minilm-l6"


def read_split(path: Path, names: list[str], task: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels (class indices, or a 0/1 matrix) of a saved predictions file."""
    frame = pd.read_csv(path, keep_default_na=False)
    if task == "multiclass":
        return frame["text"].astype(str).tolist(), np.array([names.index(t) for t in frame["true"]])
    labels = np.array([[float(n in str(t).split("|")) for n in names] for t in frame["true"]])
    return frame["text"].astype(str).tolist(), labels


def scores(
    task: str, logits: np.ndarray, labels: np.ndarray, names: list[str], thresholds: np.ndarray | None = None
) -> dict:
    """The loss and metrics at 0.5; for multilabel also the hamming score and macro F1 at `thresholds` (the
    calibrated ones tuned on validation, as distilbench stores them for predict and serve)."""
    from distilbench.evaluation.metrics import compute_metrics
    from distilbench.runtime.inference import logits_to_probs, loss_from_logits

    probs = logits_to_probs(task, logits)
    metrics = compute_metrics(task, labels, probs, names)
    keep = ("accuracy", "f1_macro") if task == "multiclass" else ("hamming_score", "f1_macro", "roc_auc_macro")
    out = {"loss": loss_from_logits(task, logits, labels), **{k: float(metrics[k]) for k in keep}}
    if thresholds is not None:
        tuned = compute_metrics(task, labels, probs, names, thresholds)
        out.update({f"{k} (calibrated)": float(tuned[k]) for k in ("hamming_score", "f1_macro")})
    return out


def run_seed(task: str, run: Path, seed: int, windows: list[tuple[int, int]]) -> dict:
    from distilbench.evaluation.metrics import tune_thresholds
    from distilbench.models.registry import load_trained
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.inference import backend_logits, logits_to_probs

    models = run / "models" / MODEL / f"seed-{seed}"
    results = run / "results" / MODEL / f"seed-{seed}"
    epochs = sorted(int(p.name.split("-")[1]) for p in models.glob("epoch-*"))
    states, candidates = {}, {}
    model = tokenizer = None
    for epoch in epochs:
        model, tokenizer, _, names = load_trained(models / f"epoch-{epoch}")
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        candidates[f"epoch {epoch}"] = states[epoch]
    splits = {split: read_split(results / f"{split}_predictions.csv", names, task) for split in ("val", "test")}
    for first, last in windows:
        chosen = [e for e in epochs if first <= e <= last]
        candidates[f"average {first}-{last}"] = {
            k: (sum(states[e][k].float() for e in chosen) / len(chosen)).to(states[last][k].dtype) for k in states[last]
        }
    out = {}
    for name, state in candidates.items():
        model.load_state_dict(state)
        backend = load_backend(model.eval(), "torch-fp32")
        logits = {
            split: backend_logits(backend, tokenizer, texts, batch_size=64)[0] for split, (texts, _) in splits.items()
        }
        thresholds = None
        if task == "multilabel":
            thresholds = tune_thresholds(splits["val"][1], logits_to_probs(task, logits["val"]), "calibrated")
        out[name] = {
            split: scores(task, logits[split], labels, names, thresholds) for split, (_, labels) in splits.items()
        }
    return out


def choose(seed_result: dict, task: str, allowed) -> str:
    """The candidate the validation select metric picks (distilbench's defaults)."""
    names = [n for n in seed_result if allowed(n)]
    if task == "multiclass":
        return max(names, key=lambda n: (seed_result[n]["val"]["accuracy"], -seed_result[n]["val"]["loss"]))
    return min(names, key=lambda n: seed_result[n]["val"]["loss"])


def _setting(report: dict) -> str:
    return f"--suffix {report['suffix']}" if report.get("suffix") else "defaults"


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}; "
        f"checkpoints of benchmarks/verdicts.py ({_setting(report)}, {MODEL}, seeds {report['seeds']}); "
        f"{report['wall_s'] / 60:.0f} min.",
        "",
    ]
    for task, seeds in report["tasks"].items():
        first_seed = next(iter(seeds.values()))  # {candidate: {split: {metric: value}}}
        metrics = [m for m in next(iter(first_seed.values()))["test"] if m != "loss"]
        lines += [
            f"**{task}** (test metrics, mean over seeds, min-max)",
            "",
            "| candidate | " + " | ".join(metrics) + " |",
            "|" + " --- |" * (len(metrics) + 1),
        ]
        rows = {name: [seeds[s][name]["test"] for s in seeds] for name in first_seed}
        picks = {
            "chosen by validation among the epochs (today's rule)": lambda n: n.startswith("epoch"),
            "chosen by validation among the epochs and the averages": lambda n: True,
        }
        for label, allowed in picks.items():
            chosen = [choose(seeds[s], task, allowed) for s in seeds]
            rows[f"{label}: {', '.join(chosen)}"] = [seeds[s][c]["test"] for s, c in zip(seeds, chosen)]
        for name, values in rows.items():
            cells = [
                f"{statistics.mean(v[m] for v in values):.4f} ({min(v[m] for v in values):.4f}-"
                f"{max(v[m] for v in values):.4f})"
                for m in metrics
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.smoke:  # the checkpoints of verdicts.py's smoke run: the smoke model, 2 seeds of 2 epochs
        global MODEL
        from verdicts import smoke_runs

        from distilbench.runs import model_slug

        args.runs, args.tasks, args.seeds, args.windows = str(smoke_runs()), "multilabel", "42,43", "1-2"
        MODEL = model_slug(str(smoke_model()))
    return run(args)


def make_parser():
    parser = common_parser(__doc__)
    parser.add_argument("--tasks", default="multiclass,multilabel")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--windows", default="2-5,3-5,4-5", help="epochs whose weights are averaged, FIRST-LAST")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks"))
    parser.add_argument("--suffix", default="", help="the runs of verdicts.py --suffix SUFFIX")
    parser.add_argument("--markdown", action="store_true", help="only write the table again from the JSON")
    return parser


def run(args) -> int:
    """Scores every epoch and every window's average for each task and seed; writes the result."""
    path = results_dir(args.smoke) / ("checkpoint_averaging" + (f"-{args.suffix}" if args.suffix else "") + ".json")
    if args.markdown:
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return 0

    from distilbench.core.console import quiet_libraries
    from distilbench.runtime.machine import machine_info

    quiet_libraries(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    windows = [tuple(int(x) for x in w.split("-")) for w in args.windows.split(",")]
    started = time.perf_counter()
    report = {"machine": machine_info(), "seeds": seeds, "windows": args.windows, "suffix": args.suffix, "tasks": {}}
    for task in args.tasks.split(","):
        run = Path(args.runs) / (f"verdicts-{task}" + (f"-{args.suffix}" if args.suffix else ""))
        report["tasks"][task] = {str(seed): run_seed(task, run, seed, windows) for seed in seeds}
        print(f"{task} done", flush=True)
    report["wall_s"] = time.perf_counter() - started
    write_result(path, report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
