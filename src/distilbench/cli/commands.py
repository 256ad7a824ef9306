"""The `distilbench` command: parse flags, call one function, print; errors become one clear line."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

from distilbench import __version__
from distilbench.config import HEAD_CHOICES, HEAD_INITS, LR_SCHEDULES, THRESHOLD_CHOICES
from distilbench.core.console import DistilbenchError, quiet_libraries

BACKENDS_HELP = "torch-fp32, torch-bf16, torch-bf16-compiled, torch-int8, onnx-fp32, onnx-int8"
EPILOG = "Flags mirror the keys of the YAML config (--config run.yaml); flags win over the file."


def comma_list(value: str) -> list[str]:
    """A flag of comma-separated names as a list (every verb parses them here, once): 'a, b,' -> ['a', 'b']."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _add_data_flags(parser: argparse.ArgumentParser, with_splits: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="CSV/TSV/JSONL/Parquet path, builtin:bbc-news, or hf:NAME[:SPLIT]")
    group.add_argument("--text-column", help="column holding the text (default: text)")
    group.add_argument(
        "--label-column",
        help="multiclass label column (default: label); multilabel: a column "
        "holding a list or a delimited string of labels",
    )
    group.add_argument(
        "--label-columns", type=comma_list, help="multilabel: comma-separated 0/1 columns, e.g. toxic,insult"
    )
    group.add_argument("--label-separator", help="multilabel: separator inside --label-column (default: ,)")
    group.add_argument("--max-chars", type=int, help="drop texts longer than this many characters")
    if with_splits:
        group.add_argument("--val-data", help="a separate validation source (default: 10%% of train)")
        group.add_argument("--test-data", help="a separate test source (default: 20%% of the data)")
        group.add_argument("--max-samples", type=int, help="use at most N rows of --data (stratified)")
        group.add_argument("--test-size", type=float, help="fraction of the data held out for test (0.2)")
        group.add_argument("--val-size", type=float, help="fraction of train held out for validation (0.1)")


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (--preset thesis for the thesis's settings)")
    group.add_argument(
        "--head",
        choices=list(HEAD_CHOICES),
        help="classification head (auto: mean pooling for checkpoints pretrained with it, such as "
        "sentence-transformers models; else the architecture's own, standard)",
    )
    group.add_argument("--epochs", type=int, help="training epochs (5; thesis 4)")
    group.add_argument("--train-batch-size", type=int, help="training batch size (32; thesis 64)")
    group.add_argument("--eval-batch-size", type=int, help="evaluation batch size (32)")
    group.add_argument("--learning-rate", type=float, help="AdamW learning rate (1e-4; thesis 5e-5)")
    group.add_argument("--adam-epsilon", type=float, help="AdamW epsilon (1e-8)")
    group.add_argument("--weight-decay", type=float, help="AdamW weight decay (0)")
    group.add_argument(
        "--warmup-ratio", type=float, help="share of steps for linear warm-up, in [0, 1) (0.1; thesis 0)"
    )
    group.add_argument(
        "--lr-schedule",
        choices=list(LR_SCHEDULES),
        help="learning rate after the warm-up: linear or cosine decay to 0, or constant (linear)",
    )
    group.add_argument(
        "--layer-lr-decay",
        type=float,
        help="layer-wise learning-rate decay: the head and top layer train at the full rate, each "
        "layer below at this factor of the one above, in (0, 1] (1: off)",
    )
    group.add_argument(
        "--label-smoothing",
        type=float,
        help="multiclass: train against (1 - e) one-hot + e / K instead of one-hot targets, e in "
        "[0, 1) (0: off); validation and test losses stay plain",
    )
    group.add_argument(
        "--head-init",
        choices=list(HEAD_INITS),
        help="the output layer before fine-tuning: as built (random; multiclass default) or fitted by "
        "logistic regression on the frozen encoder's features of the training texts first "
        "(probe; multilabel default)",
    )
    group.add_argument("--max-grad-norm", type=float, help="gradient clipping (1.0)")
    group.add_argument(
        "--preset", choices=["thesis"], help="thesis: the thesis's settings exactly (flags and --config still win)"
    )
    group.add_argument(
        "--select-metric",
        help="validation metric that picks the best epoch (accuracy for "
        "multiclass; multilabel: hamming_score from a probed output layer, "
        "loss from a random one; the thesis: hamming_score; any val "
        "metric, or loss)",
    )
    group.add_argument(
        "--class-weight",
        choices=["none", "balanced"],
        help="multiclass: weigh each class's loss by n / (K * n_class) (balanced) or not (none)",
    )
    group.add_argument(
        "--pos-weight",
        choices=["none", "auto", "rare"],
        help="multilabel: weigh each label's positives by negatives / positives in the training "
        "split (auto, capped by --pos-weight-cap), only the labels with fewer than "
        "--rare-positives positives (rare), or not (none)",
    )
    group.add_argument("--pos-weight-cap", type=float, help="multilabel: the largest positive weight (10)")
    group.add_argument(
        "--rare-positives",
        type=int,
        help="multilabel, --pos-weight rare: labels with fewer training positives are weighed (200)",
    )
    group.add_argument(
        "--patience",
        type=int,
        help="stop training when the select metric has not improved on "
        "validation for this many epochs (default: train every epoch)",
    )
    group.add_argument(
        "--average-checkpoints",
        type=int,
        metavar="N",
        help="the uniform averages of the weights of the last 2..N epochs compete with the epochs "
        "for the kept checkpoint, by the validation select metric (4 for multiclass, 0 (off) "
        "for multilabel; thesis 0)",
    )
    group.add_argument(
        "--threshold-metric",
        choices=list(THRESHOLD_CHOICES),
        help="multilabel: per-label thresholds tuned on validation: where the Platt-scaled "
        "probability crosses 0.5 (calibrated, default), the best G-mean (gmean, the thesis's) "
        "or the best F1 (f1)",
    )
    group.add_argument(
        "--no-distill",
        dest="distill",
        action="store_false",
        default=None,
        help="compare: train students on labels only, not from their teacher in the run",
    )
    group.add_argument("--alpha", type=float, help="distillation: weight of the label loss (0.5)")
    group.add_argument("--temperature", type=float, help="distillation: softmax/sigmoid temperature (2.0)")
    group.add_argument(
        "--distill-hidden",
        type=float,
        metavar="WEIGHT",
        help="distillation: weight of the MSE between the student's hidden states and its mapped "
        "teacher layers' (and the embeddings'); runs the teacher alongside (0: off)",
    )
    group.add_argument(
        "--distill-attention",
        type=float,
        metavar="WEIGHT",
        help="distillation: weight of the distance between the mapped layers' attention maps; "
        "runs the teacher alongside (0: off)",
    )
    group.add_argument(
        "--unlabeled",
        metavar="SOURCE",
        help="distillation: more texts (csv/tsv/jsonl/parquet/txt) the student learns from the "
        "teacher's outputs on, without labels; texts in the validation/test split are removed",
    )
    group.add_argument("--unlabeled-column", help="text column of --unlabeled (text)")
    group.add_argument(
        "--augment",
        choices=["none", "mask"],
        help="distillation: masked copies of the training texts learnt from the teacher's outputs "
        "(mask: 15%% of the words replaced by the mask token; none)",
    )
    group.add_argument("--augment-copies", type=int, help="--augment: copies per training text (2)")
    group.add_argument("--keep-checkpoints", choices=["all", "best"], help="keep every epoch (all) or the best")


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--max-length", type=int, help="truncate texts to N tokens (default: model limit, 512)")
    group.add_argument("--device", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    group.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 on CPUs with AVX512-BF16/AMX and on CUDA, else fp32",
    )
    group.add_argument(
        "--backend",
        help=f"inference backend for testing: auto (the fastest that agrees with "
        f"torch-fp32, measured once per model and machine), {BACKENDS_HELP}",
    )
    _add_choice_flags(group, with_defaults=False)
    group.add_argument(
        "--no-speed",
        dest="measure_speed",
        action="store_false",
        default=None,
        help="compare: skip the throughput/latency measurement after testing",
    )
    group.add_argument("--seed", type=int, help="seed for splits, initialisation and shuffling (42)")
    group.add_argument(
        "--seeds",
        help="train every model once per seed: a count (3: --seed, --seed+1, --seed+2) "
        "or a list (1,2,3); the splits stay those of --seed / --split-seed",
    )
    group.add_argument("--split-seed", type=int, help="seed of the subsample and the splits (default: --seed)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_choice_flags(group, with_defaults: bool = True) -> None:
    """The accuracy guard and cache of --backend auto."""
    group.add_argument(
        "--min-agreement",
        type=float,
        default=0.99 if with_defaults else None,
        help="auto: a backend must give torch-fp32's prediction on this share of texts (0.99)",
    )
    group.add_argument(
        "--max-metric-drop",
        type=float,
        default=0.5 if with_defaults else None,
        help="auto: and lose at most this many points of the primary metric (0.5)",
    )
    group.add_argument(
        "--recalibrate",
        action="store_true",
        default=False if with_defaults else None,
        help="auto: measure the backends again instead of using the choice cached for this model and machine",
    )


def _choice(args: argparse.Namespace):
    from distilbench.runtime.auto import ChoiceSettings

    return ChoiceSettings(args.min_agreement, args.max_metric_drop, args.recalibrate).validate()


def _add_experiment_flags(parser: argparse.ArgumentParser, what: str, config_help: str, resume_help: str) -> None:
    """Config file, output directory (`what` it is), overwrite/resume, then the data, training and runtime flags:
    every verb that trains (compare, train, distill, tune)."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--out", help=f"{what} to create")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")
    parser.add_argument("--resume", action="store_true", help=resume_help)
    _add_data_flags(parser)
    _add_training_flags(parser)
    _add_runtime_flags(parser)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every verb that writes a run directory, and the verdicts of compare."""
    _add_experiment_flags(
        parser,
        "run directory",
        "YAML file of settings",
        "continue a stopped run in --out with its saved settings: finished models are "
        "kept, training continues after the last finished epoch",
    )
    group = parser.add_argument_group("verdicts")
    group.add_argument("--reference", help="compare: the model every other is compared with (default: the first)")
    group.add_argument(
        "--margin",
        type=float,
        help="points of the primary metric a model may lose against the reference and still be 'within margin' (1.0)",
    )
    group.add_argument("--resamples", type=int, help="bootstrap resamples per confidence interval (1000)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilbench", description="Fine-tune, distil and compare BERT-family text classifiers on your data."
    )
    parser.add_argument("--version", action="version", version=f"distilbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    compare = verbs.add_parser(
        "compare",
        help="fine-tune several models on the same data and compare them",
        description="data -> fine-tune each model -> best epoch -> test -> comparison.json/.csv and a table",
        epilog=EPILOG,
    )
    compare.add_argument("--task", choices=["multiclass", "multilabel"])
    compare.add_argument(
        "--models",
        type=comma_list,
        help="comma-separated: aliases (minilm-l6, mpnet-base, "
        "bert-base-uncased, distilbert-base-uncased), hub names, directories, "
        "student:<teacher>",
    )
    _add_run_flags(compare)

    train = verbs.add_parser(
        "train",
        help="fine-tune one model (a comparison of one)",
        description="Fine-tune one model; writes the same run directory as compare.",
        epilog=EPILOG,
    )
    train.add_argument("--task", choices=["multiclass", "multilabel"])
    train.add_argument("--model", help="alias, hub name, directory or student:<teacher>")
    _add_run_flags(train)

    distill = verbs.add_parser(
        "distill",
        help="distil a student from a fine-tuned teacher on labelled data",
        description="Task distillation: loss = alpha * label loss + (1 - alpha) * soft "
        "loss against the teacher's cached outputs.",
        epilog=EPILOG,
    )
    distill.add_argument("--teacher", required=True, help="fine-tuned checkpoint, or a run directory with one model")
    distill.add_argument(
        "--student",
        required=True,
        help="student:<teacher>[:layers], student-bert:..., scratch:..., a directory (e.g. the "
        "output of distill-general), or any pretrained model (alias or hub name, e.g. "
        "minilm-l6 learning from a fine-tuned mpnet-base; its own tokenizer)",
    )
    _add_run_flags(distill)

    general = verbs.add_parser(
        "distill-general",
        help="DistilBERT's own distillation of a student on unlabelled text",
        description="Masked-language training of a student against a pretrained teacher with DistilBERT's "
        "triple loss (hidden-state terms only for a teacher without an MLM head).",
    )
    general.add_argument("--teacher", required=True, help="pretrained teacher (alias, hub name or directory)")
    general.add_argument("--student", required=True, help="student:<teacher>[:layers] or student-bert:...")
    general.add_argument("--texts", required=True, help="unlabelled texts: any data source")
    general.add_argument("--text-column", default="text")
    general.add_argument("--max-samples", type=int, help="use at most N texts")
    general.add_argument("--out", required=True, help="directory for the distilled student")
    general.add_argument("--epochs", type=int, default=1)
    general.add_argument("--batch-size", type=int, default=32)
    general.add_argument("--learning-rate", type=float, default=5e-4)
    general.add_argument("--max-length", type=int, default=128)
    general.add_argument("--temperature", type=float, default=2.0)
    general.add_argument("--alpha-ce", type=float, default=5.0, help="KL to the teacher's MLM distribution (5.0)")
    general.add_argument("--alpha-mlm", type=float, default=2.0, help="masked-language loss (2.0)")
    general.add_argument("--alpha-cos", type=float, default=1.0, help="cosine loss on last hidden states (1.0)")
    general.add_argument("--alpha-mse", type=float, default=0.0, help="MSE per mapped layer (0: off)")
    general.add_argument("--seed", type=int, default=42)
    general.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    general.add_argument("--device", default="auto")
    general.add_argument("--no-progress", action="store_true", help="hide progress bars")

    evaluate = verbs.add_parser(
        "evaluate",
        help="test a saved checkpoint on any data",
        description="Metrics of a fine-tuned checkpoint on a data source.",
    )
    evaluate.add_argument("--model", required=True, help="checkpoint directory, e.g. RUN_DIR/models/<m>/best")
    evaluate.add_argument("--out", help="write the metrics to this JSON file")
    _add_data_flags(evaluate, with_splits=False)
    evaluate.add_argument("--eval-batch-size", type=int, help="batch size (32)")
    evaluate.add_argument(
        "--check-fp32",
        action="store_true",
        help="also predict with torch-fp32 and report the agreement and the metric's difference "
        "(a second pass over the data)",
    )
    _add_runtime_flags(evaluate)
    predict = verbs.add_parser(
        "predict",
        help="predict texts from a file or stdin, one record per text (JSON lines or Parquet)",
        description="Stream texts through a saved model in chunks (memory stays flat for any input size): one "
        "record per text with its input row, the predicted label(s) and every probability. With "
        "--output, finished chunks are kept in OUTPUT.parts/ until the output is complete, so an "
        "interrupted run continues with --resume.",
    )
    predict.add_argument(
        "--model",
        required=True,
        help="checkpoint directory, e.g. RUN_DIR/models/<m>/best, or an exported ONNX directory (distilbench export)",
    )
    predict.add_argument(
        "--input", default="-", help="- (stdin, one text per line), .txt, .csv, .tsv, .jsonl or .parquet (default: -)"
    )
    predict.add_argument(
        "--output", help="file to write: .jsonl (JSON lines) or .parquet (default: JSON lines on stdout)"
    )
    predict.add_argument("--text-column", default="text", help="text column of a table input (text)")
    predict.add_argument(
        "--backend",
        default="auto",
        help=f"auto (the fastest that agrees with torch-fp32, measured once per model and machine), {BACKENDS_HELP}",
    )
    _add_choice_flags(predict)
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--max-length", type=int, help="truncate texts to N tokens (default: model limit)")
    predict.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    predict.add_argument(
        "--chunk-rows",
        type=int,
        default=4096,
        help="texts read, predicted and written at a time; the unit of --resume (4096)",
    )
    predict.add_argument(
        "--workers",
        type=int,
        help="processes predicting chunks in parallel, each with its own model copy and "
        "CPUs/N threads (default: 1; on several GPUs, one per GPU)",
    )
    predict.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: keep the chunks in OUTPUT.parts/ (same input, "
        "model and settings), predict the rest",
    )
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cluster = predict.add_argument_group(
        "on a Ray cluster (--engine ray; pip install 'distilbench[ray]')",
        "Ray Data reads --input (a file, a directory or a glob, on any filesystem Ray reads), a pool of actors "
        "predicts --chunk-rows texts at a time, and Ray writes files to the directory --output.",
    )
    cluster.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this machine's processes (default); ray: a Ray cluster",
    )
    cluster.add_argument(
        "--address",
        help="the Ray cluster to use, e.g. 10.0.0.1:6379 (ray start --head); "
        "default: $RAY_ADDRESS, else a Ray instance on this machine",
    )
    cluster.add_argument(
        "--actors",
        type=int,
        help="actors predicting, each with its own model copy (default: "
        "one per GPU, else the cluster's CPUs / --cpus-per-actor)",
    )
    cluster.add_argument(
        "--cpus-per-actor", type=float, default=1.0, help="CPUs each actor reserves and uses as threads (1)"
    )
    cluster.add_argument("--output-format", choices=["parquet", "jsonl"], help="files written into --output (parquet)")

    serve = verbs.add_parser(
        "serve",
        help="serve a saved model over HTTP (POST /predict) with dynamic micro-batching",
        description='FastAPI + uvicorn: POST /predict {"texts": [...]} -> label(s) and probabilities per text, '
        "GET /health, GET /metadata, OpenAPI schema at /openapi.json (docs at /docs). Concurrent "
        "requests are gathered into one forward pass of up to --max-batch-size texts, waiting at "
        "most --max-wait-ms for company.",
    )
    serve.add_argument(
        "--model",
        required=True,
        help="checkpoint directory, e.g. RUN_DIR/models/<m>/best, or an exported ONNX directory (distilbench export)",
    )
    serve.add_argument(
        "--backend",
        default="auto",
        help=f"auto (the fastest that agrees with torch-fp32, measured once per model and machine), {BACKENDS_HELP}",
    )
    _add_choice_flags(serve)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (8000; 0: any free port)")
    serve.add_argument("--max-batch-size", type=int, default=64, help="texts per forward pass (64)")
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request may wait for others to share its forward pass (5)",
    )
    serve.add_argument(
        "--no-batching",
        action="store_true",
        help="one request per forward pass, one at a time (the benchmark's baseline)",
    )
    serve.add_argument("--max-texts", type=int, default=256, help="texts per request; more: 422 (256)")
    serve.add_argument("--max-text-chars", type=int, default=10_000, help="characters per text (10000)")
    serve.add_argument(
        "--on-long-text",
        choices=["truncate", "reject"],
        default="truncate",
        help="a text over --max-text-chars: cut it (truncate) or answer 413 (reject)",
    )
    serve.add_argument("--max-length", type=int, help="truncate texts to N tokens (default: model limit)")
    serve.add_argument("--max-body-mb", type=float, default=32.0, help="request body size; more: 413 (32)")
    serve.add_argument(
        "--max-inflight-mb",
        type=float,
        help="request bodies held at once across requests; more: 503 with Retry-After (default: 2 x --max-body-mb)",
    )
    serve.add_argument(
        "--max-pending",
        type=int,
        default=4096,
        help="texts waiting or in a forward pass; more: 503 with Retry-After (4096)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        help="torch threads for the forward passes (default: one per "
        "core); fewer leaves cores to the HTTP work and other processes",
    )

    export = verbs.add_parser(
        "export",
        help="export a fine-tuned checkpoint as an ONNX directory (runs without PyTorch)",
        description="Write DIR with model.onnx (output `logits`; optionally int8, optionally with ONNX Runtime's "
        "transformer fusions), config.json (labels, problem type, tuned thresholds), the tokenizer files "
        "and export.json. It runs in plain ONNX Runtime, in optimum's ORTModelForSequenceClassification, "
        "and as MODEL of predict, serve and bench. The graph is checked against PyTorch on sample "
        "texts (max |logit diff|, argmax agreement; stored in export.json); beyond the tolerance the "
        "export fails and DIR is not written.",
    )
    export.add_argument("model", metavar="MODEL", help="checkpoint directory, e.g. RUN_DIR/models/<m>/best")
    export.add_argument("--format", default="onnx", help="output format: onnx (the only one so far)")
    export.add_argument("--quantize", help="int8: dynamic int8 quantization of the weights (default: fp32)")
    export.add_argument(
        "--fuse",
        action="store_true",
        help="apply ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization, BiasGelu "
        "fusions; BERT/DistilBERT/RoBERTa types): as accurate, measured slower on the "
        "development CPU; try it on yours with bench",
    )
    export.add_argument("--out", required=True, metavar="DIR", help="directory to create (must not exist)")
    export.add_argument(
        "--tolerance",
        type=float,
        help="max |logit difference| to PyTorch on the sample texts (default 1e-3; int8: 0.1 "
        "times the largest |logit|, at least 0.1)",
    )

    report = verbs.add_parser(
        "report",
        help="write plots, report.html and report.md for a run directory",
        description="Plots (PNG) and a self-contained HTML report plus Markdown for a "
        "finished run; compare writes them itself at the end.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR")

    bench = verbs.add_parser(
        "bench",
        help="measure size, latency, throughput, memory and MFU per model and backend",
        description="Measure models under one protocol: warm-up, alternating rounds, median (min-max).",
    )
    bench.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="run directory (its best checkpoints), checkpoint directory, exported ONNX directory "
        "(its onnx-* backend only), alias, hub name, or arch:bert-base-uncased / "
        "arch:distilbert-base-uncased (random weights, speed only)",
    )
    bench.add_argument(
        "--backends",
        type=comma_list,
        help=f"comma-separated: {BACKENDS_HELP} (default: the candidates of --backend auto on this "
        f"machine; bf16 only where it is native)",
    )
    _add_choice_flags(bench)
    bench.add_argument("--data", help="texts to measure on (default: a run's test split, else builtin:bbc-news)")
    bench.add_argument("--text-column", default="text")
    bench.add_argument("--label-column", help="labels for the test metric (multiclass, or multilabel lists)")
    bench.add_argument("--label-columns", type=comma_list, help="multilabel 0/1 columns for the test metric")
    bench.add_argument("--batch-size", type=int, default=64, help="throughput batch size (64)")
    bench.add_argument("--samples", type=int, default=512, help="texts per throughput round (512)")
    bench.add_argument("--repeats", type=int, default=5, help="throughput rounds (5)")
    bench.add_argument("--warmup", type=int, default=2, help="warm-up batches per model and backend (2)")
    bench.add_argument("--latency-samples", type=int, default=100, help="batch-1 calls for latency (100)")
    bench.add_argument("--max-length", type=int, default=128, help="truncate texts to N tokens (128)")
    bench.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    bench.add_argument("--no-memory", action="store_true", help="skip peak-memory probes (one process each)")
    bench.add_argument("--no-metric", action="store_true", help="skip test metrics of trained models")
    bench.add_argument("--out", help="write bench.json here")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")

    tune = verbs.add_parser(
        "tune",
        help="search learning rate, epochs, batch size, warm-up, weight decay (and alpha, temperature) "
        "on the validation split",
        description="Optuna search (seeded TPE sampler; median pruning after each epoch) for one model, or a "
        "student distilled from --teacher, scored on the validation split only (the test split is "
        "made as compare makes it and never read). The study is stored in OUT/tune.db: --resume "
        "continues a stopped search. Writes trials.csv, tune.json, tune.png and best.yaml, the base "
        "settings with the best trial's values, for compare --config (distill --config).",
        epilog=EPILOG + " A flag such as --learning-rate fixes that parameter; the file's values are the base "
        "for the rest.",
    )
    tune.add_argument("--task", choices=["multiclass", "multilabel"])
    tune.add_argument("--model", help="the model to tune: alias, hub name, directory or student:<teacher>")
    tune.add_argument(
        "--teacher",
        help="a distillation search: the fine-tuned teacher checkpoint (or a run with "
        "one model) that --model learns from; adds alpha and temperature",
    )
    tune.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials the search should hold; a resumed one runs the rest (20)",
    )
    tune.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    tune.add_argument(
        "--search",
        type=comma_list,
        help="parameters to search, each NAME or NAME=LOW:HIGH (train_batch_size=A:B:C: the "
        "choices): learning_rate 1e-5:5e-4 (log), epochs 2:8, train_batch_size 16:32:64, "
        "warmup_ratio 0:0.2, weight_decay 0:0.1, alpha 0:1, temperature 1:8, layer_lr_decay "
        "0.6:1, label_smoothing 0:0.2 (default: all, but those given as flags, layer_lr_decay "
        "and label_smoothing, and alpha and temperature only with --teacher)",
    )
    tune.add_argument("--no-prune", action="store_true", help="train every trial to its last epoch")
    _add_experiment_flags(
        tune,
        "search directory",
        "YAML file of base settings",
        "continue a stopped search in --out: finished trials are kept, interrupted ones run "
        "again, until --trials have finished",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    """The flags the user actually gave, as config keys."""
    from distilbench.config import FIELDS

    values = {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}
    if getattr(args, "model", None) and args.verb == "train":
        values["models"] = [args.model]
    return values


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    quiet_libraries(args.verbose)
    progress = not getattr(args, "no_progress", False)
    from distilbench.config import ExperimentConfig, load_config, load_resumed_config
    from distilbench.experiments.compare import compare, evaluate

    if args.verb in ("compare", "train", "distill", "tune"):
        if args.resume and args.overwrite:
            raise DistilbenchError("--resume continues a run and --overwrite replaces it: pass one of them")
        if args.resume:
            if not args.out:
                raise DistilbenchError("--resume needs --out RUN_DIR, the run to continue")
            from distilbench.runs import require_run

            require_run(args.out)  # before its config.yaml is read: another project's file is not a run's
            config = load_resumed_config(args.out, args.config, _overrides(args))
        else:
            config = load_config(args.config, _overrides(args))
    if args.verb in ("compare", "train"):
        if args.verb == "train" and len(config.models) != 1:
            raise DistilbenchError("train fine-tunes one model: pass --model NAME (compare takes several)")
        compare(config, overwrite=args.overwrite, progress=progress, resume=args.resume)
    elif args.verb == "distill":
        from distilbench.experiments.compare import distill

        distill(config, args.teacher, args.student, overwrite=args.overwrite, progress=progress, resume=args.resume)
    elif args.verb == "tune":
        from distilbench.experiments.tune import tune

        tune(
            config,
            args.model,
            teacher=args.teacher,
            trials=args.trials,
            timeout=args.timeout,
            search=args.search,
            fixed=set(_overrides(args)),
            prune=not args.no_prune,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=progress,
        )
    elif args.verb == "distill-general":
        from distilbench.data.readers import read_texts
        from distilbench.training.distillation import distill_general

        texts = read_texts(args.texts, args.text_column, args.max_samples, args.seed)
        distill_general(
            args.teacher,
            args.student,
            texts,
            args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            max_length=args.max_length,
            temperature=args.temperature,
            alpha_ce=args.alpha_ce,
            alpha_mlm=args.alpha_mlm,
            alpha_cos=args.alpha_cos,
            alpha_mse=args.alpha_mse,
            seed=args.seed,
            precision=args.precision,
            device=args.device,
            progress=progress,
        )
    elif args.verb == "report":
        from distilbench.core.console import say
        from distilbench.report.report import write_report

        html, markdown = write_report(args.run_dir)
        say(f"report: {html}\n        {markdown}")
    elif args.verb == "predict" and args.engine == "ray":
        from distilbench.runtime.ray_predict import predict_on_ray

        if args.workers is not None or args.resume:
            raise DistilbenchError(
                "--workers and --resume are for --engine local; with --engine ray, use "
                "--actors (Ray restarts failed work itself)"
            )
        predict_on_ray(
            args.model,
            args.input,
            args.output,
            text_column=args.text_column,
            backend=args.backend,
            batch_size=args.batch_size,
            max_length=args.max_length,
            device=args.device,
            progress=progress,
            chunk_rows=args.chunk_rows,
            output_format=args.output_format or "parquet",
            address=args.address,
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            choice=_choice(args),
        )
    elif args.verb == "predict":
        from distilbench.runtime.predict import predict

        if args.address or args.actors is not None or args.output_format:
            raise DistilbenchError(
                "--address, --actors and --output-format are for --engine ray (locally, "
                "--output's suffix gives the format)"
            )
        predict(
            args.model,
            args.input,
            args.output,
            text_column=args.text_column,
            backend=args.backend,
            batch_size=args.batch_size,
            max_length=args.max_length,
            device=args.device,
            progress=progress,
            chunk_rows=args.chunk_rows,
            workers=args.workers,
            resume=args.resume,
            choice=_choice(args),
        )
    elif args.verb == "serve":
        from distilbench.serving.app import ServeLimits, serve

        limits = ServeLimits(
            max_texts=args.max_texts,
            max_text_chars=args.max_text_chars,
            on_long_text=args.on_long_text,
            max_length=args.max_length,
            batching=not args.no_batching,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            max_body_mb=args.max_body_mb,
            max_pending=args.max_pending,
            max_inflight_mb=args.max_inflight_mb,
        )
        serve(
            args.model,
            host=args.host,
            port=args.port,
            backend=args.backend,
            device=args.device,
            limits=limits,
            threads=args.threads,
            access_log=args.verbose,
            choice=_choice(args),
        )
    elif args.verb == "bench":
        from distilbench.bench.bench import run_bench

        run_bench(
            args.models,
            args.backends or None,
            data=args.data,
            choice_settings=_choice(args),
            text_column=args.text_column,
            label_column=args.label_column,
            label_columns=args.label_columns or None,
            batch_size=args.batch_size,
            samples=args.samples,
            repeats=args.repeats,
            warmup=args.warmup,
            latency_samples=args.latency_samples,
            max_length=args.max_length,
            memory=not args.no_memory,
            metric=not args.no_metric,
            device=args.device,
            out=args.out,
            progress=progress,
        )
    elif args.verb == "export":
        from distilbench.runtime.export import export_model

        export_model(
            args.model, args.out, fmt=args.format, quantize=args.quantize, fuse=args.fuse, tolerance=args.tolerance
        )
    elif args.verb == "evaluate":
        config = ExperimentConfig(**_overrides(args)).validate()
        if not config.data:
            raise DistilbenchError("evaluate needs --data SOURCE")
        evaluate(args.model, config.data, config, args.out, progress=progress, check_fp32=args.check_fp32)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler, a container stop), raised like Ctrl-C so that the same clean-up
    runs: worker processes stopped, temporary files removed, finished work kept for --resume."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one clear line and a non-zero exit for problems the user can fix."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = run(argv)
    except DistilbenchError as exc:
        print(f"distilbench: error: {exc}", file=sys.stderr)
        code = 2
    except Terminated:
        print("distilbench: terminated (SIGTERM)", file=sys.stderr)
        code = 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("distilbench: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - only disk problems are turned into a message; the rest re-raise
        message = disk_problem(exc)
        if message is None:
            raise
        print(f"distilbench: error: {message}", file=sys.stderr)
        code = 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def disk_problem(exc: BaseException) -> str | None:
    """A message for a full disk or a file we may not write (libraries wrap the OSError in their own
    exceptions, hence the text check); None for anything else. Results are written atomically, so what
    was finished before is intact and a run continues with --resume."""
    text = str(exc)
    errno_ = getattr(exc, "errno", None)
    where = f" while writing {exc.filename}" if getattr(exc, "filename", None) else ""
    if errno_ in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text:
        return (
            f"the disk is full{where}; files finished before are intact. Free some space, then continue "
            f"a run with --resume"
        )
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS) or "Read-only file system" in text:
        target = f": {exc.filename}" if getattr(exc, "filename", None) else f" ({text})"
        return f"{getattr(exc, 'strerror', None) or 'permission denied'}{target}"
    return None


if __name__ == "__main__":
    main()
