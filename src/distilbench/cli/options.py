"""The flags of every verb, defined once: name, group, help and the API argument each one fills.

A verb lists the flags it uses (`Verb.flags`); nothing else appears in its --help or is accepted. Every flag's
`dest` is the name of the keyword argument of the verb's API function it fills (for compare, train, distill and
tune: an ExperimentConfig field), and a flag the user did not give is not passed at all (None), so the API's
defaults (and a --config file's values) apply. This module imports only the standard library: `--help` must
start fast (no torch, transformers, pandas or scikit-learn).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass, field

from distilbench.config import (
    HEAD_CHOICES,
    HEAD_HELP,
    HEAD_INITS,
    LR_SCHEDULES,
    TASKS,
    THRESHOLD_CHOICES,
)
from distilbench.runtime.names import BACKENDS, PRECISIONS, QUANTIZATIONS  # noqa: F401 (export --quantize)

BACKENDS_HELP = ", ".join(BACKENDS)
QUANTIZATION_HELP = (
    "int8: dynamic int8 (activations scaled per batch: a label can depend on batch mates); int8-static: static "
    "int8 calibrated on the validation split (else built-in headlines), products kept fp32 where agreement with fp32 "
    "falls under 99%%; openvino-int8: NNCF int8 for OpenVINO, calibrated on the validation split (needs openvino "
    "and nncf); auto: the backend --backend auto measures fastest under its guard among those a bundle can hold "
    "(default: fp32)"
)

# Argument groups, in the order --help shows them, with their titles.
GROUP_TITLES = {
    "settings": "settings",
    "model": "model",
    "data": "data",
    "training": "training (--preset thesis for the thesis's settings)",
    "distillation": "distillation",
    "search": "search",
    "statistics": "statistics",
    "inference": "inference",
    "server": "server",
    "limits": "request limits",
    "ray": "on a Ray cluster (--engine ray; pip install 'distilbench[ray]')",
    "output": "output",
}


def comma_list(value: str) -> list[str]:
    """A flag of comma-separated names as a list (every verb parses them here, once): 'a, b,' -> ['a', 'b']."""
    return [item.strip() for item in value.split(",") if item.strip()]


def model_list(value: str) -> list[str]:
    """--models: comma-separated model names, where a student's layer list (student:T:0,2,4) stays one name."""
    models: list[str] = []
    for item in comma_list(value):
        if item.isdigit() and models and re.fullmatch(r".+:\d+(,\d+)*", models[-1]):
            models[-1] += f",{item}"
        else:
            models.append(item)
    return models


def one_label_column(value: str) -> str:
    """--label-column names one column; a comma list meant the multilabel form, so say which flags that is."""
    if "," in value:
        raise argparse.ArgumentTypeError(
            f"takes one column, not the list '{value}'; for several 0/1 label columns use "
            f"--task multilabel --label-columns {','.join(comma_list(value))}"
        )
    return value


def one_model(value: str) -> str:
    """--model of train and tune names one model; a comma list is what compare --models takes."""
    if "," in value and not re.fullmatch(r".+:\d+(,\d+)+", value):  # student:T:0,2,4's layers hold commas
        raise argparse.ArgumentTypeError(
            f"takes one model, not the list '{value}'; to fine-tune and compare several, use "
            f"distilbench compare --models {','.join(comma_list(value))}"
        )
    return value


def deprecation(old: str, new: str) -> None:
    """The one line a deprecated spelling prints; it still works for one release."""
    print(f"distilbench: warning: {old} is deprecated; use {new}", file=sys.stderr, flush=True)


class DeprecatedSpelling(argparse.Action):
    """An old spelling of a flag or a positional argument: stores into the new flag's dest and warns."""

    def __init__(self, option_strings, dest, replacement: str, old: str | None = None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.replacement, self.old = replacement, old

    def __call__(self, parser, namespace, values, option_string=None):
        old = self.old or f"{option_string} {self.metavar or self.dest.upper()}"
        deprecation(f"{parser.prog.split()[-1]}'s {old}", self.replacement)
        setattr(namespace, self.dest, values)


@dataclass(frozen=True)
class Flag:
    """One flag: its spelling, its help group, argparse's keywords (help, type, choices, action ...) and the
    old spellings that still work with a warning (`deprecated`: option strings)."""

    option: str
    group: str
    kwargs: dict = field(default_factory=dict)
    deprecated: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        """The API keyword argument this flag fills."""
        return self.kwargs.get("dest") or self.option.lstrip("-").replace("-", "_")

    def but(self, **changes) -> Flag:
        """The same flag with some argparse keywords changed (a verb's own help or default), or its `group` or
        `deprecated` spellings."""
        deprecated = changes.pop("deprecated", self.deprecated)
        group = changes.pop("group", self.group)
        return dataclasses.replace(self, group=group, kwargs={**self.kwargs, **changes}, deprecated=deprecated)

    def add_to(self, group: argparse._ActionsContainer) -> None:
        kwargs = {"default": None, **self.kwargs}
        if self.deprecated:  # an old spelling fills it too, so the verb checks its presence (Verb.arguments)
            kwargs.pop("required", None)
        group.add_argument(self.option, **kwargs)
        for old in self.deprecated:
            group.add_argument(
                old,
                dest=self.dest,
                action=DeprecatedSpelling,
                replacement=self.option,
                type=kwargs.get("type"),
                metavar=kwargs.get("metavar"),
                nargs=0 if kwargs.get("action") in ("store_true", "store_const") else None,
                help=argparse.SUPPRESS,
            )


def _flag(option: str, group: str, help: str, **kwargs) -> Flag:
    return Flag(option, group, {"help": help, **kwargs})


def _switch(option: str, group: str, dest: str, help: str) -> Flag:
    """A --no-X flag that passes dest=False when given, and nothing (the default, True) when not."""
    return _flag(option, group, help, dest=dest, action="store_const", const=False)


# Every flag, once. A verb that needs another default or another help text says so with `.but(...)`.
FLAGS: dict[str, Flag] = {
    flag.option: flag
    for flag in (
        # ------------------------------------------------------------------------------------------ model
        _flag("--task", "model", "multiclass (one label per text) or multilabel (default: multiclass)", choices=TASKS),
        _flag(
            "--model",
            "model",
            "checkpoint directory, e.g. RUN/models/<model>/best",
            metavar="MODEL",
        ),
        _flag(
            "--models",
            "model",
            "comma-separated: aliases (minilm-l6, mpnet-base, bert-base-uncased, distilbert-base-uncased), "
            "hub names, directories, student:<teacher>, and the small rungs tfidf (TF-IDF n-grams + logistic "
            "regression, seconds to train) and static:<teacher> (model2vec static embeddings distilled from the "
            "teacher) (default: minilm-l6,student:minilm-l6)",
            type=model_list,
            metavar="A,B,...",
        ),
        _flag("--teacher", "model", "fine-tuned teacher checkpoint, or a run directory with one model"),
        _flag(
            "--student",
            "model",
            "student:<teacher>[:layers], student-bert:..., scratch:..., a directory (e.g. the output of "
            "distill-general), or any pretrained model (alias or hub name; its own tokenizer)",
        ),
        _flag(
            "--head",
            "model",
            HEAD_HELP,
            choices=HEAD_CHOICES,
        ),
        # ------------------------------------------------------------------------------------------- data
        _flag("--data", "data", "CSV/TSV/JSONL/Parquet path, builtin:bbc-news, or hf:NAME[:SPLIT]", metavar="SOURCE"),
        _flag("--text-column", "data", "column holding the text (default: text)", metavar="NAME"),
        _flag(
            "--label-column",
            "data",
            "multiclass: the label column (default: label); multilabel: one column holding a list or a "
            "delimited string of labels (several 0/1 columns: --label-columns)",
            type=one_label_column,
            metavar="NAME",
        ),
        _flag(
            "--label-columns",
            "data",
            "multilabel: comma-separated 0/1 columns, e.g. toxic,insult",
            type=comma_list,
            metavar="A,B,...",
        ),
        _flag("--label-separator", "data", "multilabel: separator inside --label-column (default: ,)", metavar="SEP"),
        _flag("--max-chars", "data", "drop texts longer than this many characters", type=int, metavar="N"),
        _flag("--val-data", "data", "a separate validation source (default: 10%% of train)", metavar="SOURCE"),
        _flag("--test-data", "data", "a separate test source (default: 20%% of the data)", metavar="SOURCE"),
        _flag("--max-samples", "data", "use at most N rows of --data (stratified)", type=int, metavar="N"),
        _flag("--test-size", "data", "fraction of the data held out for test (0.2)", type=float, metavar="F"),
        _flag("--val-size", "data", "fraction of train held out for validation (0.1)", type=float, metavar="F"),
        # --------------------------------------------------------------------------------------- training
        _flag(
            "--preset",
            "training",
            "thesis: the thesis's settings exactly (flags and --config still win)",
            choices=("thesis",),
        ),
        _flag("--epochs", "training", "training epochs (5; thesis 4)", type=int, metavar="N"),
        _flag("--train-batch-size", "training", "training batch size (32; thesis 64)", type=int, metavar="N"),
        _flag("--eval-batch-size", "training", "batch size of validation and test (32)", type=int, metavar="N"),
        _flag("--learning-rate", "training", "AdamW learning rate (1e-4; thesis 5e-5)", type=float, metavar="LR"),
        _flag("--adam-epsilon", "training", "AdamW epsilon (1e-8)", type=float, metavar="EPS"),
        _flag("--weight-decay", "training", "AdamW weight decay (0)", type=float, metavar="W"),
        _flag(
            "--warmup-ratio",
            "training",
            "share of steps for linear warm-up, in [0, 1) (0.1; thesis 0)",
            type=float,
            metavar="R",
        ),
        _flag(
            "--lr-schedule",
            "training",
            "learning rate after the warm-up: linear or cosine decay to 0, or constant (linear)",
            choices=LR_SCHEDULES,
        ),
        _flag(
            "--layer-lr-decay",
            "training",
            "layer-wise learning-rate decay: the head and top layer train at the full rate, each layer below "
            "at this factor of the one above, in (0, 1] (1: off)",
            type=float,
            metavar="F",
        ),
        _flag(
            "--label-smoothing",
            "training",
            "multiclass: train against (1 - e) one-hot + e / K instead of one-hot targets, e in [0, 1) (0: off)",
            type=float,
            metavar="E",
        ),
        _flag(
            "--head-init",
            "training",
            "the output layer before fine-tuning: as built (random; multiclass default) or fitted by logistic "
            "regression on the frozen encoder's features (probe; multilabel default)",
            choices=HEAD_INITS,
        ),
        _flag("--max-grad-norm", "training", "gradient clipping (1.0)", type=float, metavar="N"),
        _flag(
            "--select-metric",
            "training",
            "validation metric that picks the best epoch (multiclass: accuracy; multilabel: hamming_score "
            "from a probed output layer, loss from a random one; any val metric, or loss)",
            metavar="METRIC",
        ),
        _flag(
            "--class-weight",
            "training",
            "multiclass: weigh each class's loss by n / (K * n_class) (balanced) or not (none)",
            choices=("none", "balanced"),
        ),
        _flag(
            "--pos-weight",
            "training",
            "multilabel: weigh each label's positives by negatives / positives (auto, capped by "
            "--pos-weight-cap), only labels with fewer than --rare-positives positives (rare), or not (none)",
            choices=("none", "auto", "rare"),
        ),
        _flag("--pos-weight-cap", "training", "multilabel: the largest positive weight (10)", type=float, metavar="W"),
        _flag(
            "--rare-positives",
            "training",
            "multilabel, --pos-weight rare: labels with fewer training positives are weighed (200)",
            type=int,
            metavar="N",
        ),
        _flag(
            "--patience",
            "training",
            "stop when the select metric has not improved on validation for N epochs (default: every epoch)",
            type=int,
            metavar="N",
        ),
        _flag(
            "--average-checkpoints",
            "training",
            "the averaged weights of the last 2..N epochs compete with the epochs for the kept checkpoint "
            "(4 for multiclass, 0 (off) for multilabel; thesis 0)",
            type=int,
            metavar="N",
        ),
        _flag(
            "--threshold-metric",
            "training",
            "multilabel: per-label thresholds tuned on validation: where the Platt-scaled probability crosses "
            "0.5 (calibrated, default), the best G-mean (gmean, the thesis's) or the best F1 (f1)",
            choices=THRESHOLD_CHOICES,
        ),
        _flag("--keep-checkpoints", "training", "keep every epoch (all, default) or the best", choices=("all", "best")),
        _flag("--seed", "training", "seed for splits, initialisation and shuffling (42)", type=int, metavar="N"),
        _flag(
            "--seeds",
            "training",
            "train every model once per seed: a count (3: --seed, --seed+1, --seed+2) or a list (1,2,3); the "
            "splits stay those of --seed / --split-seed",
            metavar="N|A,B,...",
        ),
        _flag(
            "--split-seed", "training", "seed of the subsample and the splits (default: --seed)", type=int, metavar="N"
        ),
        _flag(
            "--precision",
            "training",
            "training precision; auto: bf16 on CPUs with AVX512-BF16/AMX and on CUDA, else fp32",
            choices=PRECISIONS,
        ),
        # ----------------------------------------------------------------------------------- distillation
        _switch(
            "--no-distill",
            "distillation",
            "distill",
            "train students on labels only, not from their teacher listed before them in --models",
        ),
        _flag("--alpha", "distillation", "weight of the label loss (0.5)", type=float, metavar="A"),
        _flag("--temperature", "distillation", "softmax/sigmoid temperature (2.0)", type=float, metavar="T"),
        _flag(
            "--distill-hidden",
            "distillation",
            "weight of the MSE between the student's hidden states and its mapped teacher layers' (0: off)",
            type=float,
            metavar="WEIGHT",
        ),
        _flag(
            "--distill-attention",
            "distillation",
            "weight of the distance between the mapped layers' attention maps (0: off)",
            type=float,
            metavar="WEIGHT",
        ),
        _flag(
            "--unlabeled",
            "distillation",
            "more texts (csv/tsv/jsonl/parquet/txt) the student learns from the teacher's outputs on, without "
            "labels; texts in the validation/test split are removed",
            metavar="SOURCE",
        ),
        _flag("--unlabeled-column", "distillation", "text column of --unlabeled (text)", metavar="NAME"),
        _flag(
            "--augment",
            "distillation",
            "masked copies of the training texts learnt from the teacher's outputs (mask: 15%% of the words "
            "replaced by the mask token; none)",
            choices=("none", "mask"),
        ),
        _flag("--augment-copies", "distillation", "--augment: copies per training text (2)", type=int, metavar="N"),
        # ------------------------------------------------------------------------------------- statistics
        _flag(
            "--reference",
            "statistics",
            "the model every other is compared with (default: the first of --models)",
            metavar="MODEL",
        ),
        _flag(
            "--margin",
            "statistics",
            "points of the primary metric a model may lose against the reference and still be 'within margin' (1.0)",
            type=float,
            metavar="POINTS",
        ),
        _flag("--resamples", "statistics", "bootstrap resamples per confidence interval (1000)", type=int, metavar="N"),
        # -------------------------------------------------------------------------------------- inference
        _flag(
            "--max-length",
            "inference",
            "truncate texts to N tokens (default: the model's limit, 512 for BERT-family models)",
            type=int,
            metavar="N",
        ),
        _flag("--batch-size", "inference", "texts per forward pass (32)", type=int, metavar="N"),
        _flag("--device", "inference", "auto (CUDA if available), cpu, cuda, cuda:1 ... (auto)"),
        _flag(
            "--backend",
            "inference",
            "auto (the fastest that agrees with torch-fp32, measured once per model and machine; default), "
            + BACKENDS_HELP,
            choices=("auto", *BACKENDS, "onnx"),
            metavar="NAME",
        ),
        _flag(
            "--min-agreement",
            "inference",
            "--backend auto: a backend must give torch-fp32's prediction on this share of texts (0.99)",
            type=float,
            metavar="F",
        ),
        _flag(
            "--max-metric-drop",
            "inference",
            "--backend auto: and lose at most this many points of the primary metric (0.5)",
            type=float,
            metavar="POINTS",
        ),
        _flag(
            "--recalibrate",
            "inference",
            "--backend auto: measure the backends again instead of using the choice cached for this model and machine",
            action="store_true",
        ),
        _switch("--no-speed", "inference", "measure_speed", "skip the throughput/latency measurement after testing"),
        # ----------------------------------------------------------------------------------------- output
        _flag(
            "--config",
            "settings",
            "YAML file of settings (the keys are these flags' names); flags win over it",
            metavar="FILE",
        ),
        _flag("--out", "output", "run directory to create", metavar="DIR"),
        _flag("--output", "output", "file to write", metavar="FILE"),
        _flag("--overwrite", "output", "replace an existing --out directory", action="store_true"),
        _flag("--resume", "output", "continue a stopped run in --out", action="store_true"),
        _switch("--no-progress", "output", "progress", "hide progress bars"),
    )
}

# The settings of a training run, in their groups: compare takes all of them, the other training verbs a part.
DATA = ["--data", "--text-column", "--label-column", "--label-columns", "--label-separator", "--max-chars"]
SPLITS = ["--val-data", "--test-data", "--max-samples", "--test-size", "--val-size"]
TRAINING = [
    "--preset",
    "--epochs",
    "--train-batch-size",
    "--eval-batch-size",
    "--learning-rate",
    "--adam-epsilon",
    "--weight-decay",
    "--warmup-ratio",
    "--lr-schedule",
    "--layer-lr-decay",
    "--label-smoothing",
    "--head-init",
    "--max-grad-norm",
    "--select-metric",
    "--class-weight",
    "--pos-weight",
    "--pos-weight-cap",
    "--rare-positives",
    "--patience",
]
AFTER_TRAINING = ["--average-checkpoints", "--threshold-metric", "--keep-checkpoints"]
SEEDS = ["--seed", "--seeds", "--split-seed"]
DISTILLATION = [
    "--alpha",
    "--temperature",
    "--distill-hidden",
    "--distill-attention",
    "--unlabeled",
    "--unlabeled-column",
    "--augment",
    "--augment-copies",
]
BACKEND_GUARD = ["--min-agreement", "--max-metric-drop", "--recalibrate"]
INFERENCE = ["--max-length", "--device", "--backend", *BACKEND_GUARD]


def run_output(what: str, resume_help: str, config_help: str | None = None) -> list[Flag]:
    """The settings file and the output directory (`what` it is) of a verb that writes a run or a search."""
    return [
        FLAGS["--config"].but(help=config_help) if config_help else FLAGS["--config"],
        FLAGS["--out"].but(help=f"{what} to create"),
        FLAGS["--overwrite"].but(help=f"replace an existing {what}"),
        FLAGS["--resume"].but(help=resume_help),
        FLAGS["--no-progress"],
    ]


def flags(*names: str | Flag) -> list[Flag]:
    """The flags of these names (or given Flags, as they are), in order."""
    return [name if isinstance(name, Flag) else FLAGS[name] for name in names]


def add_flags(parser: argparse.ArgumentParser, verb_flags: list[Flag]) -> None:
    """Add a verb's flags to its parser in their groups (in GROUP_TITLES' order); --overwrite and --resume
    exclude each other."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name in sorted({flag.group for flag in verb_flags}, key=list(GROUP_TITLES).index):
        groups[name] = parser.add_argument_group(GROUP_TITLES[name])
    exclusive = None
    for flag in verb_flags:
        container = groups[flag.group]
        if flag.option in ("--overwrite", "--resume"):
            exclusive = exclusive or container.add_mutually_exclusive_group()
            container = exclusive
        flag.add_to(container)
