"""The verbs that run a trained model: evaluate, predict, serve and export."""

from __future__ import annotations

import argparse

from distilbench.cli.options import (
    BACKEND_GUARD,
    DATA,
    FLAGS,
    QUANTIZATION_HELP,
    QUANTIZATIONS,
    Flag,
    comma_list,
    deprecation,
    flags,
)
from distilbench.cli.verb import OldPositional, Verb

CHECKPOINT = "checkpoint directory (RUN/models/<model>/best), or a finished run directory: its reference model"
CHECKPOINT_OR_EXPORT = CHECKPOINT + "; or an exported ONNX directory (distilbench export)"

EVALUATE = Verb(
    name="evaluate",
    api="evaluate",
    help="test a saved checkpoint on any data",
    description="Metrics of a fine-tuned checkpoint on a data source, each with its 95% bootstrap interval; the "
    "task and labels are the checkpoint's.",
    examples=(
        "distilbench evaluate --model runs/news/models/minilm-l6/best --data held-out.csv --label-column category",
        "distilbench evaluate --model runs/toxic/models/minilm-l6/best --data toxic-test.csv "
        "--label-columns toxic,insult --backend onnx-int8 --check-fp32 --output metrics.json",
    ),
    flags=(
        FLAGS["--model"].but(required=True, help=CHECKPOINT),
        FLAGS["--data"].but(required=True),
        *flags(*DATA[1:]),
        FLAGS["--batch-size"].but(dest="eval_batch_size", deprecated=("--eval-batch-size",)),
        *flags("--max-length", "--device", "--backend", *BACKEND_GUARD),
        Flag(
            "--check-fp32",
            "inference",
            {
                "action": "store_true",
                "help": "also predict with torch-fp32 and report the agreement and the metric's difference (a "
                "second pass over the data)",
            },
        ),
        FLAGS["--resamples"],
        FLAGS["--seed"].but(group="statistics", help="seed of the bootstrap resamples (42)"),
        FLAGS["--output"].but(dest="out", help="write the metrics to this JSON file", deprecated=("--out",)),
        FLAGS["--no-progress"],
    ),
)


def _predict_output(arguments: dict, parser: argparse.ArgumentParser) -> dict:
    """--output FILE locally, --out DIR on Ray (it writes a directory of files); the API takes either as
    `output`. Ray's old spelling, --output DIR, still works with a warning."""
    ray = arguments.get("engine") == "ray"
    if "out" in arguments and not ray:
        parser.error("--out DIR is for --engine ray (it writes a directory); locally, write a file with --output FILE")
    if ray and "output" in arguments:
        if "out" in arguments:
            parser.error("--engine ray writes the directory --out DIR; pass --out alone")
        deprecation("predict --engine ray's --output DIR", "--out DIR")
        arguments["out"] = arguments.pop("output")
    if ray and "out" in arguments:
        arguments["output"] = arguments.pop("out")
    return arguments


PREDICT = Verb(
    name="predict",
    api="predict",
    help="predict texts from a file or stdin, one record per text (JSON lines or Parquet)",
    description="Stream texts through a saved model in chunks (memory stays flat for any input size): one record "
    "per text with its input row, the predicted label(s) and every probability. With --output, finished chunks "
    "are kept in OUTPUT.parts/ until the output is complete, so an interrupted run continues with --resume.",
    examples=(
        'echo "Stocks rally as inflation cools" | distilbench predict --model runs/news/models/minilm-l6/best',
        "distilbench predict --model runs/news/models/minilm-l6/best --input big.csv --output predictions.jsonl "
        "--backend onnx-int8 --workers 2",
        "distilbench predict --engine ray --model /shared/models/student/best --input 's3://bucket/texts/*.parquet' "
        "--out s3://bucket/predictions",
    ),
    flags=(
        FLAGS["--model"].but(required=True, help=CHECKPOINT_OR_EXPORT),
        Flag(
            "--input",
            "data",
            {
                "metavar": "FILE",
                "help": "- (stdin, one text per line), .txt, .csv, .tsv, .jsonl or .parquet; on Ray also a directory "
                "or a glob (default: -)",
            },
        ),
        FLAGS["--text-column"].but(help="text column of a table input (text)"),
        *flags("--backend", *BACKEND_GUARD, "--batch-size", "--max-length", "--device"),
        Flag(
            "--chunk-rows",
            "inference",
            {
                "type": int,
                "metavar": "N",
                "help": "texts read, predicted and written at a time; the unit of --resume (4096)",
            },
        ),
        Flag(
            "--workers",
            "inference",
            {
                "type": int,
                "metavar": "N",
                "help": "processes predicting chunks in parallel, each with its own model "
                "copy and CPUs/N threads (default: 1; on several GPUs, one per GPU)",
            },
        ),
        Flag(
            "--engine",
            "ray",
            {"choices": ("local", "ray"), "help": "local: this machine's processes (default); ray: a Ray cluster"},
        ),
        Flag(
            "--address",
            "ray",
            {
                "help": "the Ray cluster to use, e.g. 10.0.0.1:6379 (ray start --head); default: $RAY_ADDRESS, else a "
                "Ray instance on this machine"
            },
        ),
        Flag(
            "--actors",
            "ray",
            {
                "type": int,
                "metavar": "N",
                "help": "actors predicting, each with its own model copy (default: one per "
                "GPU, else the cluster's CPUs / --cpus-per-actor)",
            },
        ),
        Flag(
            "--cpus-per-actor",
            "ray",
            {"type": float, "metavar": "N", "help": "CPUs each actor reserves and uses as threads (1)"},
        ),
        Flag("--output-format", "ray", {"choices": ("parquet", "jsonl"), "help": "files written into --out (parquet)"}),
        FLAGS["--output"].but(
            help="local: the file to write, .jsonl (JSON lines) or .parquet (default: JSON lines on stdout)"
        ),
        FLAGS["--out"].but(help="--engine ray: the directory Ray writes its files into"),
        FLAGS["--resume"].but(
            help="local: continue an interrupted run, keeping the chunks in OUTPUT.parts/ (same input, model and "
            "settings)"
        ),
        FLAGS["--no-progress"],
    ),
    adjust=_predict_output,
)

SERVE = Verb(
    name="serve",
    api="serve",
    help="serve a saved model over HTTP (POST /predict) with dynamic micro-batching",
    description='FastAPI + uvicorn: POST /predict {"texts": [...]} -> label(s) and probabilities per text, GET '
    "/health, GET /metadata, OpenAPI schema at /openapi.json (docs at /docs). Concurrent requests are gathered "
    "into one forward pass of up to --max-batch-size texts, waiting at most --max-wait-ms for company. "
    "distilbench -v serve logs every request.",
    examples=(
        "distilbench serve --model runs/news/models/minilm-l6/best --port 8000",
        "distilbench serve --model exported/minilm-int8 --host 0.0.0.0 --max-batch-size 32 --max-wait-ms 2",
        "curl -s localhost:8000/predict -H 'content-type: application/json' -d '{\"texts\": [\"Stocks fall\"]}'",
    ),
    flags=(
        FLAGS["--model"].but(required=True, help=CHECKPOINT_OR_EXPORT),
        *flags("--backend", *BACKEND_GUARD, "--device"),
        FLAGS["--max-length"],
        Flag(
            "--threads",
            "inference",
            {
                "type": int,
                "metavar": "N",
                "help": "torch threads for the forward passes (default: one per core); "
                "fewer leaves cores to the HTTP work and other processes",
            },
        ),
        Flag(
            "--host",
            "server",
            {"help": "address to listen on (127.0.0.1; 0.0.0.0: every interface)"},
        ),
        Flag("--port", "server", {"type": int, "help": "TCP port (8000; 0: any free port)"}),
        Flag("--max-batch-size", "server", {"type": int, "metavar": "N", "help": "texts per forward pass (64)"}),
        Flag(
            "--max-wait-ms",
            "server",
            {
                "type": float,
                "metavar": "MS",
                "help": "how long a request may wait for others to share its forward pass (5)",
            },
        ),
        Flag(
            "--no-batching",
            "server",
            {
                "dest": "batching",
                "action": "store_const",
                "const": False,
                "help": "one request per forward pass, one at a time (the benchmark's baseline)",
            },
        ),
        Flag("--max-texts", "limits", {"type": int, "metavar": "N", "help": "texts per request; more: 422 (256)"}),
        Flag("--max-text-chars", "limits", {"type": int, "metavar": "N", "help": "characters per text (10000)"}),
        Flag(
            "--on-long-text",
            "limits",
            {
                "choices": ("truncate", "reject"),
                "help": "a text over --max-text-chars: cut it (truncate, default) or answer 413 (reject)",
            },
        ),
        Flag("--max-body-mb", "limits", {"type": float, "metavar": "MB", "help": "request body size; more: 413 (32)"}),
        Flag(
            "--max-inflight-mb",
            "limits",
            {
                "type": float,
                "metavar": "MB",
                "help": "request bodies held at once across requests; more: 503 with "
                "Retry-After (default: 2 x --max-body-mb)",
            },
        ),
        Flag(
            "--max-pending",
            "limits",
            {
                "type": int,
                "metavar": "N",
                "help": "texts waiting or in a forward pass; more: 503 with Retry-After (4096)",
            },
        ),
    ),
    verbose_as="access_log",
)

EXPORT = Verb(
    name="export",
    api="export",
    help="export a fine-tuned checkpoint as an ONNX directory (runs in plain ONNX Runtime)",
    description="Write DIR with model.onnx (output `logits`; optionally int8, optionally with ONNX Runtime's "
    "transformer fusions) and its weights in model.onnx.data, config.json (labels, problem type, tuned "
    "thresholds), the tokenizer files and export.json. It runs in plain ONNX Runtime, and as --model of "
    "predict, serve and bench. The graph is checked against PyTorch on sample texts (max |logit diff|, argmax "
    "agreement; stored in export.json); beyond the tolerance the export fails and DIR is not written.",
    examples=(
        "distilbench export --model runs/news/models/minilm-l6/best --out exported/minilm",
        "distilbench export --model runs/news/models/minilm-l6/best --quantize int8 --out exported/minilm-int8",
        "distilbench predict --model exported/minilm-int8 --input big.csv --output predictions.jsonl",
    ),
    flags=(
        FLAGS["--model"].but(help=CHECKPOINT),
        Flag("--format", "output", {"choices": ("onnx",), "help": "output format: onnx (the only one so far)"}),
        Flag(
            "--quantize",
            "output",
            {"choices": QUANTIZATIONS, "help": QUANTIZATION_HELP},
        ),
        Flag(
            "--fuse",
            "output",
            {
                "action": "store_true",
                "help": "apply ONNX Runtime's transformer optimizer (Attention, "
                "SkipLayerNormalization, BiasGelu fusions; BERT/DistilBERT/RoBERTa types): as accurate, measured "
                "slower on the development CPU; try it on yours with bench",
            },
        ),
        Flag(
            "--tolerance",
            "output",
            {
                "type": float,
                "help": "max |logit difference| to PyTorch on the sample texts (default 1e-3; int8: 0.1 "
                "times the largest |logit|, at least 0.1)",
            },
        ),
        FLAGS["--out"].but(required=True, help="directory to create (must not exist)"),
    ),
    old_positional=OldPositional("model", "MODEL", "--model MODEL"),
    required=("model",),
)


CASCADE = Verb(
    name="cascade",
    api="cascade",
    help="a small model answers the rows it is sure of, a big one the rest, with a guaranteed loss at most",
    description="Choose where --small hands rows to --big on labelled calibration rows neither trained on, so that "
    "with probability --confidence the cascade loses at most --max-loss points of the primary metric (accuracy, "
    "hamming score) against --big alone: Learn then Test with an exact test (see the cascade guide). Then test it "
    "(share each model answered, the cascade against --big with a paired 95% interval, whether the guarantee held, "
    "both models' throughput measured) and save it to --out, a model directory for predict, serve and evaluate.",
    examples=(
        "distilbench cascade --small runs/news/models/tfidf/best --big runs/news/models/minilm-l6/best "
        "--max-loss 0.5 --confidence 0.95 --out cascades/news",
        "distilbench cascade --small tfidf/best --big minilm/best --data calibration.csv --label-column category "
        "--test-data held-out.csv --objective accuracy --out cascades/best",
        "distilbench cascade --stages runs/news/models/tfidf,runs/news/models/student-minilm-l6,runs/news/models/"
        "minilm-l6 --out cascades/three",
        "distilbench predict --model cascades/news --input big.csv --output predictions.jsonl",
    ),
    flags=(
        Flag("--small", "model", {"metavar": "MODEL", "help": "the model that answers first: " + CHECKPOINT_OR_EXPORT}),
        Flag("--big", "model", {"metavar": "MODEL", "help": "the model that answers the rows --small defers"}),
        Flag(
            "--stages",
            "model",
            {
                "type": comma_list,
                "metavar": "A,B,...",
                "help": "instead of --small and --big: two models or more, smallest first (each stage gets an equal "
                "share of the loss, the confidence and the calibration rows)",
            },
        ),
        FLAGS["--data"].but(
            help="labelled calibration rows that no model trained on (default: the validation split of the run the "
            "models come from)"
        ),
        *flags(*DATA[1:]),
        FLAGS["--test-data"].but(help="labelled test rows (default: the test split of the run the models come from)"),
        Flag(
            "--max-loss",
            "statistics",
            {"type": float, "metavar": "POINTS", "help": "points of the primary metric the cascade may lose (0.5)"},
        ),
        Flag(
            "--confidence",
            "statistics",
            {"type": float, "metavar": "P", "help": "probability that the loss stays within --max-loss (0.95)"},
        ),
        Flag(
            "--objective",
            "statistics",
            {
                "choices": ("cost", "accuracy"),
                "help": "cost: the most rows for --small within the guarantee (default); accuracy: the best "
                "calibration metric (no guarantee)",
            },
        ),
        FLAGS["--resamples"],
        FLAGS["--seed"].but(group="statistics", help="seed of the bootstrap and of the random order of rows (42)"),
        *flags("--batch-size", "--max-length", "--device"),
        FLAGS["--no-speed"].but(help="skip measuring the throughput of the cascade and of --big alone"),
        FLAGS["--out"].but(required=True, help="the cascade directory to write (a model directory)"),
        FLAGS["--overwrite"].but(help="replace an existing cascade directory --out"),
    ),
)


VERBS = (EVALUATE, PREDICT, SERVE, EXPORT, CASCADE)
