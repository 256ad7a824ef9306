"""The verbs that train: compare, train, distill, tune and distill-general.

compare, train, distill and tune take the settings of a run (ExperimentConfig's fields) as flags or from
--config; each lists only the settings it uses.
"""

from __future__ import annotations

from distilbench.cli.options import (
    AFTER_TRAINING,
    DATA,
    DISTILLATION,
    FLAGS,
    INFERENCE,
    SEEDS,
    SPLITS,
    TRAINING,
    Flag,
    comma_list,
    flags,
    one_model,
    run_output,
)
from distilbench.cli.verb import Verb

CONFIG_NOTE = (
    "Flags mirror the keys of the YAML config (--config run.yaml, keys spelt with underscores); flags win over "
    "the file."
)
RESUME_RUN = "continue a stopped run in --out with its saved settings: finished models are kept, training continues"


COMPARE = Verb(
    name="compare",
    api="compare",
    help="fine-tune several models on the same data and compare them",
    description="data -> fine-tune each model -> best epoch -> test -> comparison.json/.csv, a table with "
    "intervals and verdicts against the reference, and report.html, all in the run directory --out.",
    note=CONFIG_NOTE,
    examples=(
        "distilbench compare --data builtin:bbc-news --models minilm-l6,student:minilm-l6 --out runs/news",
        "distilbench compare --data news.csv --label-column category --models minilm-l6,mpnet-base --seeds 3 "
        "--out runs/news",
        "distilbench compare --task multilabel --data toxic.csv --label-columns toxic,insult --out runs/toxic",
        "distilbench compare --config configs/demo.yaml --out runs/demo --overwrite",
    ),
    flags=(
        *flags("--task", "--models", "--head", *DATA, *SPLITS, *TRAINING, *AFTER_TRAINING, *SEEDS, "--precision"),
        *flags("--no-distill", *DISTILLATION, "--reference", "--margin", "--resamples"),
        *flags(*INFERENCE, "--no-speed"),
        *run_output("run directory", RESUME_RUN),
    ),
)

TRAIN = Verb(
    name="train",
    api="train",
    help="fine-tune one model (a comparison of one)",
    description="Fine-tune one model; writes the same run directory as compare.",
    note=CONFIG_NOTE,
    examples=(
        "distilbench train --data news.csv --label-column category --model minilm-l6 --out runs/one",
        "distilbench train --config run.yaml --model mpnet-base --epochs 3 --out runs/mpnet",
        "distilbench train --out runs/one --resume",
    ),
    flags=(
        *flags("--task"),
        FLAGS["--model"].but(
            type=one_model, help="alias, hub name, directory or student:<teacher> (default: the one of --config)"
        ),
        *flags("--head", *DATA, *SPLITS, *TRAINING, *AFTER_TRAINING, *SEEDS, "--precision", "--resamples"),
        *flags(*INFERENCE, "--no-speed"),
        *run_output("run directory", RESUME_RUN),
    ),
)

DISTILL = Verb(
    name="distill",
    api="distill",
    help="distil a student from a fine-tuned teacher on labelled data",
    description="Task distillation: loss = alpha * label loss + (1 - alpha) * soft loss against the teacher's "
    "outputs. The task and labels are the teacher's; writes a run directory of one model.",
    note=CONFIG_NOTE,
    examples=(
        "distilbench distill --teacher runs/one/models/minilm-l6/best --student student:minilm-l6 "
        "--data news.csv --label-column category --out runs/student",
        "distilbench distill --teacher runs/one --student minilm-l6 --data news.csv --label-column category "
        "--unlabeled more-headlines.txt --out runs/student-unlabeled",
    ),
    flags=(
        FLAGS["--teacher"].but(required=True),
        FLAGS["--student"].but(required=True),
        *flags("--head", *DATA, *SPLITS, *TRAINING, *AFTER_TRAINING, *SEEDS),
        *flags("--precision", *DISTILLATION, "--resamples", *INFERENCE),
        *run_output("run directory", RESUME_RUN),
    ),
)

TUNE = Verb(
    name="tune",
    api="tune",
    help="search learning rate, epochs, batch size, warm-up, weight decay (and alpha, temperature) on the "
    "validation split",
    description="Optuna search (seeded TPE sampler; median pruning after each epoch) for one model, or a student "
    "distilled from --teacher, scored on the validation split only (the test split is made as compare makes it "
    "and never read). The study is stored in OUT/tune.db: --resume continues a stopped search. Writes "
    "trials.csv, tune.json, tune.png and best.yaml, the base settings with the best trial's values, for "
    "compare --config (distill --config).",
    note=CONFIG_NOTE + " A flag such as --learning-rate fixes that parameter; the file's values are the base "
    "for the rest.",
    examples=(
        "distilbench tune --model minilm-l6 --data news.csv --label-column category --trials 20 --out runs/tune",
        "distilbench tune --model student:minilm-l6 --teacher runs/one --data news.csv --label-column category "
        "--search learning_rate,alpha,temperature --out runs/tune-student",
        "distilbench tune --out runs/tune --resume --trials 40",
    ),
    flags=(
        *flags("--task"),
        FLAGS["--model"].but(type=one_model, help="the model to tune: alias, hub name, directory or student:<teacher>"),
        FLAGS["--teacher"].but(
            help="a distillation search: the fine-tuned teacher checkpoint (or a run with one model) that --model "
            "learns from; adds alpha and temperature"
        ),
        *flags("--head", *DATA, *SPLITS, *TRAINING, "--seed", "--split-seed", "--precision"),
        *flags("--alpha", "--temperature", "--max-length", "--device"),
        Flag(
            "--trials",
            "search",
            {
                "type": int,
                "help": "finished trials the search should hold; a resumed one runs the rest (20)",
                "metavar": "N",
            },
        ),
        Flag(
            "--timeout",
            "search",
            {"type": float, "help": "start no new trial after this many seconds", "metavar": "SECONDS"},
        ),
        Flag(
            "--search",
            "search",
            {
                "type": comma_list,
                "metavar": "NAME[=LOW:HIGH],...",
                "help": "parameters to search, each NAME or NAME=LOW:HIGH (train_batch_size=A:B:C: the choices): "
                "learning_rate 1e-5:5e-4 (log), epochs 2:8, train_batch_size 16:32:64, warmup_ratio 0:0.2, "
                "weight_decay 0:0.1, alpha 0:1, temperature 1:8, layer_lr_decay 0.6:1, label_smoothing 0:0.2 "
                "(default: all, but those given as flags, layer_lr_decay and label_smoothing, and alpha and "
                "temperature only with --teacher)",
            },
        ),
        Flag(
            "--no-prune",
            "search",
            {"dest": "prune", "action": "store_const", "const": False, "help": "train every trial to its last epoch"},
        ),
        *run_output(
            "search directory",
            "continue a stopped search in --out: finished trials are kept, interrupted ones run again, until "
            "--trials have finished",
            config_help="YAML file of base settings",
        ),
    ),
)


DISTILL_GENERAL = Verb(
    name="distill-general",
    api="distill_general",
    help="DistilBERT's own distillation of a student on unlabelled text",
    description="Masked-language training of a student against a pretrained teacher with DistilBERT's triple "
    "loss (hidden-state terms only for a teacher without an MLM head). Its defaults are DistilBERT's, not "
    "fine-tuning's: one epoch, learning rate 5e-4, texts cut to 128 tokens (a corpus of any size stays "
    "affordable). The output directory is a student for compare --models or distill --student.",
    examples=(
        "distilbench distill-general --teacher minilm-l6 --student student:minilm-l6 --data corpus.txt "
        "--out students/minilm-3l",
        "distilbench distill-general --teacher minilm-l6 --student student:minilm-l6:0,2,4 --data news.csv "
        "--max-samples 100000 --epochs 2 --out students/minilm-024",
    ),
    flags=(
        FLAGS["--teacher"].but(required=True, help="pretrained teacher (alias, hub name or directory)"),
        FLAGS["--student"].but(required=True, help="student:<teacher>[:layers] or student-bert:..."),
        FLAGS["--data"].but(required=True, help="unlabelled texts: any data source", deprecated=("--texts",)),
        FLAGS["--text-column"],
        FLAGS["--max-samples"].but(help="use at most N texts"),
        FLAGS["--epochs"].but(help="passes over the texts (1)"),
        FLAGS["--train-batch-size"].but(help="training batch size (32)", deprecated=("--batch-size",)),
        FLAGS["--learning-rate"].but(help="AdamW learning rate (5e-4, DistilBERT's)"),
        FLAGS["--temperature"].but(group="training", help="softmax temperature of the MLM distillation (2.0)"),
        Flag("--alpha-ce", "training", {"type": float, "help": "KL to the teacher's MLM distribution (5.0)"}),
        Flag("--alpha-mlm", "training", {"type": float, "help": "masked-language loss (2.0)"}),
        Flag("--alpha-cos", "training", {"type": float, "help": "cosine loss on last hidden states (1.0)"}),
        Flag("--alpha-mse", "training", {"type": float, "help": "MSE per mapped layer (0: off)"}),
        FLAGS["--seed"].but(help="seed for masking, shuffling and sampling (42)"),
        FLAGS["--precision"],
        FLAGS["--max-length"].but(help="truncate texts to N tokens (128, DistilBERT's, not the model's limit)"),
        FLAGS["--device"],
        FLAGS["--out"].but(required=True, help="directory for the distilled student"),
        FLAGS["--no-progress"],
    ),
)

VERBS = (COMPARE, TRAIN, DISTILL, DISTILL_GENERAL, TUNE)
