"""Where bf16 inference time goes: MFU by sequence length, and the operators of one batch.

    .venv/bin/python benchmarks/bf16_profile.py      # ~2 min

Random-weight DistilBERT-base (DistilBertConfig()) and the packaged MiniLM-L6 as bf16 copies (the
torch-bf16 backend), batch 64, sequence lengths 15 (a headline), 64 and 128: samples/s (median of
5 after 2 warm-up calls) and MFU against the machine's measured bf16 matrix-product peak, then the
top operators of DistilBERT-base at length 15 under torch.profiler, and the rate the matrix products
alone reach. Results: benchmarks/results/bf16_profile.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    from distilbench.models import packaged_minilm_path
    from distilbench.speed import flops_per_sample, machine_info, matmul_peak_flops

    torch.manual_seed(0)
    peak = matmul_peak_flops(torch.bfloat16)
    models = {
        "arch:distilbert-base-uncased": DistilBertForSequenceClassification(DistilBertConfig(num_labels=4)),
        "minilm-l6": AutoModelForSequenceClassification.from_pretrained(packaged_minilm_path(), num_labels=4),
    }
    rows = []
    for name, model in models.items():
        model = model.eval().to(torch.bfloat16)
        for seq in (15, 64, 128):
            batch = {"input_ids": torch.randint(1000, 20000, (64, seq)),
                     "attention_mask": torch.ones(64, seq, dtype=torch.long)}
            times = []
            with torch.inference_mode():
                for i in range(7):
                    start = time.perf_counter()
                    model(**batch)
                    if i >= 2:
                        times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            rows.append({"model": name, "seq": seq, "samples_per_s": 64 / seconds,
                         "mfu": flops_per_sample(model.config, seq) * 64 / seconds / peak})
            print(rows[-1], flush=True)

    model = models["arch:distilbert-base-uncased"]
    batch = {"input_ids": torch.randint(1000, 20000, (64, 15)),
             "attention_mask": torch.ones(64, 15, dtype=torch.long)}
    with torch.inference_mode():
        model(**batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model(**batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    operators = [{"op": e.key, "share": e.self_cpu_time_total / total} for e in events[:8]]
    addmm_s = next(e.self_cpu_time_total for e in events if e.key == "aten::addmm") / 1e6 / 5
    tokens = 64 * 15
    linear_flops = 2 * tokens * model.config.n_layers * (4 * 768 * 768 + 2 * 768 * 3072)
    report = {"machine": machine_info(), "bf16_peak_flops": peak, "rows": rows, "operators": operators,
              "matmul_share_of_peak": linear_flops / addmm_s / peak}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bf16_profile.json").write_text(json.dumps(report, indent=2))
    lines = [f"bf16 peak {peak / 1e9:.0f} GFLOP/s; batch 64", "", "| model | tokens | samples/s | MFU |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['seq']} | {r['samples_per_s']:.0f} | {100 * r['mfu']:.0f} % |" for r in rows]
    lines += ["", "DistilBERT-base, 15 tokens, share of operator time: "
              + ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in operators[:5])
              + f"; the matrix products (aten::addmm) alone run at {100 * report['matmul_share_of_peak']:.0f} % of "
              "the peak."]
    (RESULTS / "bf16_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
