"""Where bf16 inference time goes: MFU by sequence length, plain bf16 copy vs the fused backend, and operators.

    .venv/bin/python benchmarks/bf16_profile.py      # ~1 min

Random-weight DistilBERT-base (DistilBertConfig()) and the packaged MiniLM-L6, each as a plain bf16
copy (transformers' own modules) and as the torch-bf16 backend (the same copy with its encoder
layers fused, fused.py), batch 64, sequence lengths 15 (a headline), 64 and 128 without padding:
samples/s (median of 7 after 2 warm-up calls, the two variants alternating) and MFU against the
machine's measured bf16 matrix-product peak, counting the FLOPs each variant needs (the fused one
computes the last layer for the first token only). Then the top operators of both DistilBERT-base
variants at length 15 under torch.profiler, and the rate their matrix products alone reach.
Results: benchmarks/results/bf16_profile.{json,md}.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parser, results_dir, smoke_model, write_result  # noqa: E402


def operator_profile(model, batch: dict, linear_flops: float, peak: float) -> dict:
    """Share of operator time per operator (top 6), and the rate the linear layers' products reach."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(**batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model(**batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    linear_s = sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "mkldnn::_linear_pointwise"))
    return {
        "operators": [{"op": e.key, "share": e.self_cpu_time_total / total} for e in events[:6]],
        "linear_share_of_peak": linear_flops / (linear_s / 1e6 / 5) / peak,
    }


def main(argv: list[str] | None = None) -> int:
    smoke = parser(__doc__).parse_args(argv).smoke
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    from distilbench.benchmarking.speed import encoder_shape, flops_per_sample
    from distilbench.models.registry import packaged_minilm_path
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.machine import machine_info, matmul_peak_flops

    torch.manual_seed(0)
    peak = matmul_peak_flops(torch.bfloat16)[0]
    models = {
        "arch:distilbert-base-uncased": DistilBertForSequenceClassification(DistilBertConfig(num_labels=4))
        if not smoke
        else DistilBertForSequenceClassification.from_pretrained(smoke_model("distilbert"), num_labels=4),
        "minilm-l6": AutoModelForSequenceClassification.from_pretrained(
            packaged_minilm_path() if not smoke else smoke_model(), num_labels=4
        ),
    }
    lengths, rounds = ((15, 64, 128), 9) if not smoke else ((15,), 3)
    rows, variants_of = [], {}
    for name, model in models.items():
        model.eval()
        fused = load_backend(model, "torch-bf16")
        variants = {
            "plain bf16 copy": (copy.deepcopy(model).to(torch.bfloat16), False),
            "torch-bf16 (fused)": (fused.model, fused.first_token_only),
        }
        variants_of[name] = variants
        for seq in lengths:
            batch = {
                "input_ids": torch.randint(1000, 20000, (64, seq)),
                "attention_mask": torch.ones(64, seq, dtype=torch.long),
            }
            times = {variant: [] for variant in variants}
            with torch.inference_mode():
                for i in range(rounds):
                    for variant, (module, _) in variants.items():  # alternating
                        start = time.perf_counter()
                        module(**batch)
                        if i >= 2:
                            times[variant].append(time.perf_counter() - start)
            for variant, (_, first) in variants.items():
                seconds = statistics.median(times[variant])
                rows.append(
                    {
                        "model": name,
                        "variant": variant,
                        "seq": seq,
                        "samples_per_s": 64 / seconds,
                        "mfu": flops_per_sample(model.config, seq, first) * 64 / seconds / peak,
                    }
                )
                print(rows[-1], flush=True)

    batch = {"input_ids": torch.randint(1000, 20000, (64, 15)), "attention_mask": torch.ones(64, 15, dtype=torch.long)}
    shape = encoder_shape(models["arch:distilbert-base-uncased"].config)
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    per_layer = 2 * 64 * 15 * (4 * h * h + 2 * h * i)
    last_first = 2 * 64 * 15 * 3 * h * h + 2 * 64 * (h * h + 2 * h * i)  # fused: q, k, v for all; out, FFN for one
    profiles = {}
    for variant, (module, first) in variants_of["arch:distilbert-base-uncased"].items():
        linear_flops = layers * per_layer if not first else (layers - 1) * per_layer + last_first
        profiles[variant] = operator_profile(module, batch, linear_flops, peak)
    report = {"machine": machine_info(), "bf16_peak_flops": peak, "rows": rows, "profiles": profiles}
    lines = [
        f"bf16 peak {peak / 1e9:.0f} GFLOP/s; batch 64, no padding",
        "",
        "| model | tokens | plain bf16 copy: samples/s | MFU | torch-bf16 (fused): samples/s | MFU | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in models:
        for seq in lengths:
            plain, fast = (
                next(r for r in rows if r["model"] == name and r["seq"] == seq and r["variant"] == v)
                for v in ("plain bf16 copy", "torch-bf16 (fused)")
            )
            lines.append(
                f"| {name} | {seq} | {plain['samples_per_s']:.0f} | {100 * plain['mfu']:.0f} % "
                f"| {fast['samples_per_s']:.0f} | {100 * fast['mfu']:.0f} % "
                f"| {fast['samples_per_s'] / plain['samples_per_s']:.2f}x |"
            )
    for variant, prof in profiles.items():
        lines += [
            "",
            f"DistilBERT-base, 15 tokens, {variant}, share of operator time: "
            + ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in prof["operators"][:5])
            + f"; its linear layers' products run at {100 * prof['linear_share_of_peak']:.0f} % of the peak.",
        ]
    write_result(results_dir(smoke) / "bf16_profile.json", report, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
