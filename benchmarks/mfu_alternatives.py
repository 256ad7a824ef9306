"""What else was tried for bf16 MFU on headlines, and why the fused path stays short of 60 %.

    .venv/bin/python benchmarks/mfu_alternatives.py      # ~1 min; the OpenVINO row needs `pip install openvino`

Part 1, whole models: arch:distilbert-base-uncased (random weights) on the batches `distilbench bench`
measures MFU on (the first 512 shuffled headlines of ../shared/data/news-headlines.csv, length-sorted,
batch 64, each padded to its longest), in 7 alternating rounds after warm-up; in each round the bf16
matrix-product peak is measured next to the models and each round's MFU divides by its own peak.
FLOPs are those of the real tokens, as `bench` counts them, with the last layer on the first token
alone where a variant computes only that (the fused path). Contenders:
- the plain bf16 copy (transformers' own modules, what torch-bf16 was before fused.py);
- distilbench's torch-bf16 (the fused path);
- the fused path with each batch split in two halves run at once on one core each (two Python
  threads, one torch thread each) instead of every operator split over both cores;
- OpenVINO (bf16 inference precision, latency hint, 2 threads) on the same batches, if installed.
Each one's logits are compared with fp32's.

Part 2, matrix products at a headline batch's shape (928 rows = 64 x 14.5 tokens), median of 15:
the first feed-forward product with and without its exact-GELU post-op, one layer's four
products with its weights hot in cache against six layers' weights taken in turn (as in a model),
and the time to fill a headline batch's q/k/v grid (memory bandwidth, which bounds the other ops).
Results: benchmarks/results/mfu_alternatives.{json,md}.
"""

from __future__ import annotations

import copy
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distilbench.benchmarking.speed import spread

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, parser, results_dir, smoke_data, smoke_model, write_result  # noqa: E402

ROUNDS = 7
# what --smoke changes: the smoke headlines and DistilBERT, small products, one round
SETUP = {"headlines": HEADLINES, "rounds": ROUNDS, "rows": 928, "width": 768, "inner": 3072}


def headline_batches(tokenizer) -> list[dict]:
    """The batches of benchmarks/speed.py's MFU row: bench's protocol on its first 512 headlines."""
    from distilbench.benchmarking.bench import measurement_batches

    texts = pd.read_csv(SETUP["headlines"]).sample(frac=1.0, random_state=0)["text"].astype(str).tolist()[:512]
    batches, _ = measurement_batches(tokenizer, [" ".join(t.split()) for t in texts], 64, 128)
    return batches


def split_runner(backend):
    """Each batch as two halves at once, one per core: two threads with one torch thread each."""

    def half(batch: dict, part: int, out: list) -> None:
        torch.set_num_threads(1)  # per thread: this one's operators stay on one core
        middle = len(batch["input_ids"]) // 2
        out[part] = backend({k: (v[:middle] if part == 0 else v[middle:]) for k, v in batch.items()})

    def run(batch: dict) -> np.ndarray:
        out = [None, None]
        threads = [threading.Thread(target=half, args=(batch, part, out)) for part in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return np.concatenate(out)

    return run


def openvino_runner(model, batches: list[dict]):
    """OpenVINO's own compile of the model, bf16 on this CPU; None where openvino is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None, None
    example = {k: torch.from_numpy(v) for k, v in batches[len(batches) // 2].items() if k != "token_type_ids"}
    converted = ov.convert_model(copy.deepcopy(model), example_input=example)
    compiled = ov.Core().compile_model(
        converted,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2},
    )
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in converted.inputs]

    def run(batch: dict) -> np.ndarray:
        request.infer({name: batch[name] for name in names})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    return run, ov.__version__.split("-")[0]


def whole_models() -> dict:
    from transformers import AutoModelForSequenceClassification

    from distilbench.benchmarking.speed import build_architecture, flops_per_sample
    from distilbench.models.registry import load_tokenizer, packaged_minilm_path
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.machine import matmul_peak_flops

    model = (
        build_architecture("distilbert-base-uncased")
        if SETUP["rounds"] == ROUNDS
        else AutoModelForSequenceClassification.from_pretrained(smoke_model("distilbert"), num_labels=4)
    )
    batches = headline_batches(load_tokenizer(packaged_minilm_path()))
    inputs = ("input_ids", "attention_mask")
    batches = [{k: b[k] for k in inputs} for b in batches]
    fp32 = load_backend(model, "torch-fp32")
    plain = copy.deepcopy(model).to(torch.bfloat16).eval()
    fused = load_backend(model, "torch-bf16")

    @torch.inference_mode()
    def plain_run(batch: dict) -> np.ndarray:
        return plain(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.float().numpy()

    contenders = {
        "plain bf16 copy (transformers modules)": (plain_run, False),
        "distilbench torch-bf16 (fused)": (fused, True),
        "fused, two half-batches at once, one core each": (split_runner(fused), True),
    }
    openvino, version = openvino_runner(model, batches)
    if openvino is not None:
        contenders[f"OpenVINO {version} bf16"] = (openvino, False)
    n = sum(len(b["input_ids"]) for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / n
    reference = [fp32(b) for b in batches]
    rows = {}
    for name, (run, first_only) in contenders.items():
        for batch in batches[:2]:
            run(batch)
        diff = max(float(np.abs(run(b) - r).max()) for b, r in zip(batches, reference))
        rows[name] = {
            "flops_per_sample": flops_per_sample(model.config, tokens, first_only),
            "rounds_s": [],
            "max_abs_logit_diff_vs_fp32": diff,
        }
    peaks = []
    for _ in range(SETUP["rounds"]):
        peaks.append(matmul_peak_flops(torch.bfloat16, seconds=0.3)[0])
        for name, (run, _) in contenders.items():
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            rows[name]["rounds_s"].append(time.perf_counter() - start)
    for row in rows.values():
        rates = [n / s for s in row["rounds_s"]]
        mfus = [row["flops_per_sample"] * rate / peak for rate, peak in zip(rates, peaks)]
        row.update({"samples_per_s": spread(rates), "mfu": spread(mfus)})
    return {"samples": n, "mean_tokens": tokens, "peaks_flops": peaks, "rows": rows}


def products() -> dict:
    """Rates of the feed-forward and attention products at 928 rows: GELU's cost, and cold weights' cost."""
    torch.manual_seed(0)
    rows, width, inner = SETUP["rows"], SETUP["width"], SETUP["inner"]
    shapes = [
        (width, 3 * width, 16, "none", ""),
        (width, width, 1, "none", ""),
        (width, inner, 1, "gelu", "none"),
        (inner, width, 1, "none", ""),
    ]  # q/k/v, attention output, up (GELU), down: fused.py's packing

    def layer() -> list:
        return [
            (
                torch.ops.mkldnn._reorder_linear_weight(torch.randn(n, k).bfloat16(), hint),
                torch.randn(n).bfloat16(),
                attr,
                algorithm,
                k,
                n,
            )
            for k, n, hint, attr, algorithm in shapes
        ]

    inputs = {width: torch.randn(rows, width).bfloat16(), inner: torch.randn(rows, inner).bfloat16()}

    def rate(calls: list, flops: float) -> float:
        for _ in range(3):
            for call in calls:
                call()
        times = []
        for _ in range(15):
            start = time.perf_counter()
            for call in calls:
                call()
            times.append(time.perf_counter() - start)
        return flops / statistics.median(times)

    def product(packed, bias, attr, algorithm, k, n):
        return lambda: torch.ops.mkldnn._linear_pointwise(inputs[k], packed, bias, attr, [], algorithm)

    up = layer()[2]
    gelu = rate([product(*up)], 2 * rows * width * inner)
    no_gelu = rate([product(*up[:2], "none", "", *up[4:])], 2 * rows * width * inner)
    layer_flops = sum(2 * rows * k * n for k, n, *_ in shapes)
    one = [product(*p) for p in layer()]
    six = [product(*p) for _ in range(6) for p in layer()]
    grid = torch.empty(64 * 16, 3 * width, dtype=torch.bfloat16)  # attention's q/k/v grid of a headline batch
    fill_seconds = grid.numel() * grid.element_size() / rate([lambda: grid.fill_(1.0)], grid.numel() * 2)
    return {
        "rows": rows,
        "grid_mb": grid.numel() * 2 / 1e6,
        "grid_fill_us": fill_seconds * 1e6,
        "up_with_gelu": gelu,
        "up_without_gelu": no_gelu,
        "one_layer_hot": rate(one, layer_flops),
        "six_layers_in_turn": rate(six, 6 * layer_flops),
    }


def markdown(report: dict) -> str:
    whole, prod = report["whole_models"], report["products"]
    peaks = spread(whole["peaks_flops"])
    lines = [
        f"arch:distilbert-base-uncased, {whole['samples']} headlines in batches of 64 ({whole['mean_tokens']:.1f} "
        f"tokens each on average), {ROUNDS} alternating rounds, median (min-max); bf16 peak per round "
        f"{peaks['median'] / 1e9:.0f} ({peaks['min'] / 1e9:.0f}-{peaks['max'] / 1e9:.0f}) GFLOP/s",
        "",
        "| variant | samples/s | MFU | max logit difference vs fp32 |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in whole["rows"].items():
        s, m = row["samples_per_s"], row["mfu"]
        lines.append(
            f"| {name} | {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}) | {100 * m['median']:.0f} % "
            f"({100 * m['min']:.0f}-{100 * m['max']:.0f}) | {row['max_abs_logit_diff_vs_fp32']:.3f} |"
        )
    lines += [
        "",
        f"Matrix products at {prod['rows']} rows (GFLOP/s, median of 15): first feed-forward product "
        f"with its exact-GELU post-op {prod['up_with_gelu'] / 1e9:.0f}, without "
        f"{prod['up_without_gelu'] / 1e9:.0f}; one layer's four products with its weights hot "
        f"{prod['one_layer_hot'] / 1e9:.0f}, six layers' weights in turn {prod['six_layers_in_turn'] / 1e9:.0f}. "
        f"Filling a {prod['grid_mb']:.1f} MB tensor (a batch's q/k/v grid): {prod['grid_fill_us']:.0f} µs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    smoke = parser(__doc__).parse_args(argv).smoke
    if smoke:
        SETUP.update(headlines=smoke_data("multiclass"), rounds=1, rows=64, width=32, inner=64)
    from distilbench.core.console import quiet_libraries
    from distilbench.runtime.machine import cpu_native_bf16, machine_info

    if not cpu_native_bf16():  # oneDNN's prepacked bf16 products need AVX512-BF16 or AMX (AVX-NE-CONVERT)
        print(
            "mfu_alternatives.py measures the fused bf16 path's products; this CPU has no native bf16, so there is "
            "nothing to measure here"
        )
        return 0 if smoke else 2
    quiet_libraries(False)
    report = {"machine": machine_info(), "whole_models": whole_models(), "products": products()}
    write_result(results_dir(smoke) / "mfu_alternatives.json", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
