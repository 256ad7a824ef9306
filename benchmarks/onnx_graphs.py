"""Which ONNX graph to build: plain or fused, fp32 or int8 with per-tensor or per-channel weights.

    .venv/bin/python benchmarks/onnx_graphs.py --checkpoint RUN/models/minilm-l6/best \
        [--samples 2000] [--speed-samples 512] [--threads 1] [--repeats 5] [--out FILE]

On a fine-tuned checkpoint and headlines of ../shared/data/news-headlines.csv that the checkpoint's run
did not train on: the plain exported graph (sdpa attention; ONNX Runtime's own session optimizations
only) against ONNX Runtime's transformer optimizer's fused graph (eager attention exported, then
Attention / SkipLayerNormalization / BiasGelu / EmbedLayerNormalization fusions), each in fp32 and in
dynamic int8 with per-tensor and per-channel weights. Reported: test accuracy, argmax agreement with
torch-fp32, max |logit difference| (all on --samples headlines), and throughput on the first
--speed-samples of them (length-sorted batches of 32; median of --repeats rounds, min-max beside it;
the variants alternate within a round, and each one's time is also given relative to the plain fp32
graph's in the same round, median over rounds, so that drift of a shared machine cancels).
Results: --out (default benchmarks/results/onnx_graphs.json).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distilbench.benchmarking.speed import spread
from distilbench.models.inputs import model_input_names
from distilbench.models.registry import load_trained
from distilbench.runtime.backends import OnnxBackend, load_backend
from distilbench.runtime.export import _fused_operators, export_onnx, optimize_onnx, quantize_onnx
from distilbench.runtime.inference import backend_logits
from distilbench.runtime.machine import machine_info

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, RESULTS, results_dir, smoke_checkpoint, smoke_data, write_result  # noqa: E402
from common import parser as common_parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.checkpoint, args.data = str(smoke_checkpoint()), str(smoke_data("multiclass"))
        args.samples, args.speed_samples, args.repeats = 16, 8, 1
        args.out = str(results_dir(True) / "onnx_graphs.json")
    elif not args.checkpoint:
        parser.error("--checkpoint is required (a fine-tuned checkpoint directory)")
    measure(args)
    return 0


def make_parser():
    parser = common_parser(__doc__)
    parser.add_argument("--checkpoint", help="a fine-tuned checkpoint directory (required)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--speed-samples", type=int, default=512, help="texts per throughput round (512)")
    parser.add_argument("--data", default=str(HEADLINES), help="texts (default: the headlines)")
    parser.add_argument("--label-column", default="category", help="labels of --data for the accuracy column")
    parser.add_argument("--out", default=str(RESULTS / "onnx_graphs.json"))
    return parser


def measure(args) -> None:
    """Builds the six graphs, times them against torch-fp32 and writes the result to args.out."""
    torch.set_num_threads(args.threads)

    model, tokenizer, task, labels = load_trained(args.checkpoint)
    model.eval()
    names = model_input_names(model)
    frame = pd.read_csv(args.data)
    train = Path(args.checkpoint).resolve().parents[2] / "data" / "train.csv"
    if train.is_file():  # leave out what the checkpoint was trained on
        frame = frame[~frame["text"].isin(set(pd.read_csv(train)["text"]))]
    frame = frame.sample(args.samples, random_state=0)
    texts = frame["text"].tolist()
    labelled = args.label_column in frame.columns  # other data (e.g. longer texts): speed and agreement only
    truth = np.array([labels.index(v) for v in frame[args.label_column]]) if labelled else None

    work = Path(tempfile.mkdtemp(prefix="onnx-graphs-"))
    graphs = {}
    start = time.perf_counter()
    export_onnx(model, work / "plain.onnx", names)
    graphs["plain fp32"] = work / "plain.onnx"
    export_onnx(model, work / "plain-eager.onnx", names, eager_attention=True)
    optimize_onnx(work / "plain-eager.onnx", work / "fused.onnx", model.config, names)
    graphs["fused fp32"] = work / "fused.onnx"
    graphs["plain int8 per-tensor"] = quantize_onnx(work / "plain.onnx", work / "plain-int8.onnx", per_channel=False)
    graphs["plain int8 per-channel"] = quantize_onnx(work / "plain.onnx", work / "plain-int8-pc.onnx", per_channel=True)
    graphs["fused int8 per-tensor"] = quantize_onnx(work / "fused.onnx", work / "fused-int8.onnx", per_channel=False)
    graphs["fused int8 per-channel"] = quantize_onnx(work / "fused.onnx", work / "fused-int8-pc.onnx", per_channel=True)
    build_s = time.perf_counter() - start

    contenders = {"torch-fp32": load_backend(model, "torch-fp32")}
    contenders.update({name: OnnxBackend(name, path, len(labels)) for name, path in graphs.items()})
    logits, rounds = {}, {name: [] for name in contenders}
    for name, backend in contenders.items():  # warm-up and the logits
        logits[name], _ = backend_logits(backend, tokenizer, texts, batch_size=32)
    timed = texts[: args.speed_samples]
    for _ in range(args.repeats):
        for name, backend in contenders.items():
            rounds[name].append(backend_logits(backend, tokenizer, timed, batch_size=32)[1])
    reference = logits["torch-fp32"]
    rows = []
    for name in contenders:
        rates = [len(timed) / s for s in rounds[name]]
        rows.append(
            {
                "graph": name,
                "accuracy": float((logits[name].argmax(1) == truth).mean()) if labelled else None,
                "agreement_with_torch_fp32": float((logits[name].argmax(1) == reference.argmax(1)).mean()),
                "max_abs_logit_diff": float(np.abs(logits[name] - reference).max()),
                "texts_per_s": spread(rates),
                "median_ms_per_text": 1000 / statistics.median(rates),
                # time against the plain fp32 graph in the same round: drift of a shared machine cancels
                "time_vs_plain_fp32": statistics.median(a / b for a, b in zip(rounds[name], rounds["plain fp32"])),
                "size_mb": graphs[name].stat().st_size / 1e6 if name in graphs else None,
                "fused_operators": _fused_operators(graphs[name]) if name in graphs else None,
            }
        )
    report = {
        "machine": machine_info(),
        "threads": args.threads,
        "checkpoint": args.checkpoint,
        "data": args.data,
        "mean_tokens": float(np.mean([len(ids) for ids in tokenizer(texts)["input_ids"]])),
        "texts": len(texts),
        "speed_texts": len(timed),
        "batch_size": 32,
        "repeats": args.repeats,
        "build_s_all_graphs": build_s,
        "results": rows,
    }
    write_result(Path(args.out), report)
    table = pd.DataFrame(
        [
            {
                "graph": r["graph"],
                "accuracy": round(r["accuracy"], 4) if labelled else None,
                "agree_fp32": round(r["agreement_with_torch_fp32"], 4),
                "max_diff": f"{r['max_abs_logit_diff']:.2g}",
                "texts/s": f"{r['texts_per_s']['median']:.0f} ({r['texts_per_s']['min']:.0f}-"
                f"{r['texts_per_s']['max']:.0f})",
                "time_vs_plain": round(r["time_vs_plain_fp32"], 2),
                "MB": round(r["size_mb"], 1) if r["size_mb"] else None,
            }
            for r in rows
        ]
    )
    print(table.to_string(index=False))


if __name__ == "__main__":
    raise SystemExit(main())
