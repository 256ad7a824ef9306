"""The verbs that read back what others made: bench (speed and size of models) and report (of a run)."""

from __future__ import annotations

import argparse

from distilbench.cli.options import BACKEND_GUARD, BACKENDS, BACKENDS_HELP, FLAGS, Flag, comma_list
from distilbench.cli.verb import OldPositional, Verb
from distilbench.core.console import say


def backend_list(value: str) -> list[str]:
    """--backends: comma-separated backend names, each checked here so that a typo stops before any model loads."""
    names = comma_list(value)
    unknown = [name for name in names if name not in BACKENDS and name != "onnx"]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {', '.join(unknown)}: choose from {BACKENDS_HELP}")
    return names


BENCH = Verb(
    name="bench",
    api="bench",
    help="measure size, latency, throughput, memory and MFU per model and backend",
    description="Measure models under one protocol: warm-up, alternating rounds, median (min-max). Its batch size "
    "(64) and --max-length (128) are the protocol's, not predict's defaults, so that every model is measured on "
    "the same batches whatever its own limit.",
    examples=(
        "distilbench bench --models runs/news --output bench.json",
        "distilbench bench --models arch:bert-base-uncased,arch:distilbert-base-uncased --backends "
        "torch-fp32,onnx-int8",
        "distilbench bench --models exported/minilm-int8 --data news.csv --label-column category",
    ),
    flags=(
        FLAGS["--models"].but(
            help="comma-separated: run directories (their best checkpoints), checkpoint directories, exported "
            "bundles (the backend they were exported for, without PyTorch), tfidf/static/cascade models, aliases, "
            "hub names, or arch:bert-base-uncased / arch:distilbert-base-uncased (random weights, speed only)"
        ),
        Flag(
            "--backends",
            "inference",
            {
                "type": backend_list,
                "metavar": "A,B,...",
                "help": f"comma-separated: {BACKENDS_HELP} (default: the candidates of --backend auto on this "
                "machine; bf16 only where it is native)",
            },
        ),
        *[FLAGS[name] for name in BACKEND_GUARD],
        FLAGS["--data"].but(help="texts to measure on (default: a run's test split, else builtin:bbc-news)"),
        FLAGS["--text-column"],
        FLAGS["--label-column"].but(help="labels for the test metric (multiclass, or multilabel lists)"),
        FLAGS["--label-columns"].but(help="multilabel 0/1 columns for the test metric"),
        FLAGS["--batch-size"].but(help="throughput batch size (64, the protocol's)"),
        Flag("--samples", "inference", {"type": int, "metavar": "N", "help": "texts per throughput round (512)"}),
        Flag("--repeats", "inference", {"type": int, "metavar": "N", "help": "throughput rounds (5)"}),
        Flag(
            "--warmup", "inference", {"type": int, "metavar": "N", "help": "warm-up batches per model and backend (2)"}
        ),
        Flag(
            "--latency-samples", "inference", {"type": int, "metavar": "N", "help": "batch-1 calls for latency (100)"}
        ),
        FLAGS["--max-length"].but(help="truncate texts to N tokens (128, the protocol's: one length for every model)"),
        FLAGS["--device"],
        Flag(
            "--no-memory",
            "inference",
            {
                "dest": "memory",
                "action": "store_const",
                "const": False,
                "help": "skip peak-memory probes (one process each)",
            },
        ),
        Flag(
            "--no-metric",
            "inference",
            {"dest": "metric", "action": "store_const", "const": False, "help": "skip test metrics of trained models"},
        ),
        FLAGS["--output"].but(dest="out", help="write bench.json here", deprecated=("--out",)),
        FLAGS["--no-progress"],
    ),
    old_positional=OldPositional("models", "MODEL", "--models A,B,...", nargs="*"),
    required=("models",),
)


def _show_report(paths) -> None:
    html, markdown = paths
    say(f"report: {html}\n        {markdown}")


REPORT = Verb(
    name="report",
    api="report",
    help="write plots, report.html and report.md for a run directory",
    description="Plots (PNG) and a self-contained HTML report plus Markdown for a finished run; compare writes them "
    "itself at the end.",
    examples=(
        "distilbench report --run runs/news",
        "distilbench report --run runs/student-unlabeled",
    ),
    flags=(Flag("--run", "model", {"metavar": "RUN_DIR", "help": "a finished run directory (the --out of compare)"}),),
    old_positional=OldPositional("run", "RUN_DIR", "--run RUN_DIR"),
    required=("run",),
    show=_show_report,
)

VERBS = (BENCH, REPORT)
