"""Is bf16 autocast faster than fp32 for training on this CPU? The probe `--precision auto` asks, and the answer.

    .venv/bin/python benchmarks/training_precision.py      # ~2 min

`--precision auto` trains with bf16 autocast only where `machine.cpu_fast_bf16` finds bf16 matrix products at
least 1.5x as fast as fp32's (measured once per machine; CPUs without bf16 instructions are not measured). This
script checks that rule against what it is for: it runs the probe's measurement 3 times (bf16 peak / fp32 peak),
then times real training steps of the packaged `minilm-l6` (pretrained weights, 4-class head, AdamW 1e-4) on
batches of 32 real headlines from ../shared/data/news-headlines.csv (padded to the batch's longest), in fp32
and in bf16 autocast, alternating, 2 warm-up steps each and then 7 rounds: median ms per step with min-max, and
the ratio. Each CPU kind gets its own row (keyed by model name and bf16 flags), so rows from other machines stay.
Results: benchmarks/results/training_precision.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES as DATA  # noqa: E402
from common import parser, results_dir, smoke_data, smoke_model, write_result  # noqa: E402

BATCH, ROUNDS, WARMUP = 32, 7, 2


def train_step(model, batches: list[dict], bf16: bool, optimizer) -> float:
    """Seconds of one training step (forward, backward, AdamW) on the next batch."""
    batch = batches.pop(0)
    batches.append(batch)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    smoke = parser(__doc__).parse_args(argv).smoke
    data, batch_size, rounds, warmup = (
        (DATA, BATCH, ROUNDS, WARMUP) if not smoke else (smoke_data("multiclass"), 4, 1, 0)
    )
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distilbench.models.registry import packaged_minilm_path
    from distilbench.runtime import machine
    from distilbench.runtime.inference import pick_precision

    if not Path(data).is_file():
        raise SystemExit(f"shared data not found at {data}")
    started = time.perf_counter()
    info = machine.machine_info()
    speedups = [machine._bf16_speedup() for _ in range(3)]
    chosen = pick_precision("auto", torch.device("cpu"))

    torch.manual_seed(0)
    path = packaged_minilm_path() if not smoke else smoke_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=4)
    model.train()
    frame = pd.read_csv(data).sample(batch_size * 4, random_state=0)
    codes = {name: i for i, name in enumerate(sorted(frame["category"].unique()))}
    batches = []
    for i in range(0, len(frame), batch_size):
        part = frame.iloc[i : i + batch_size]
        batch = dict(tokenizer(part["text"].tolist(), padding=True, truncation=True, return_tensors="pt"))
        batch["labels"] = torch.tensor([codes[c] for c in part["category"]])
        batches.append(batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = {"fp32": [], "bf16": []}
    for _ in range(warmup):
        for name in times:
            train_step(model, batches, name == "bf16", optimizer)
    for _ in range(rounds):
        for name in times:
            times[name].append(train_step(model, batches, name == "bf16", optimizer))

    row = {
        "cpu": info["cpu"],
        "cpu_flags": info["cpu_flags"],
        "cpu_native_bf16": info["cpu_native_bf16"],
        "torch_threads": info["torch_threads"],
        "torch": info["torch"],
        "probe_speedups": speedups,
        "auto_chooses": chosen,
        "step_ms": {
            name: {"median": 1e3 * statistics.median(values), "min": 1e3 * min(values), "max": 1e3 * max(values)}
            for name, values in times.items()
        },
        "tokens_per_batch": [int(b["input_ids"].numel()) for b in batches],
        "wall_s": time.perf_counter() - started,
    }
    row["bf16_over_fp32"] = row["step_ms"]["bf16"]["median"] / row["step_ms"]["fp32"]["median"]
    key = f"{info['cpu']} [{' '.join(f for f in info['cpu_flags'] if 'bf16' in f) or 'no bf16 flags'}]"
    json_path = results_dir(smoke) / "training_precision.json"
    # one row per CPU kind, each from its own machine: this machine's row replaces its earlier one
    rows = json.loads(json_path.read_text()) if json_path.is_file() else {}
    rows = rows.get("rows", rows) if "stamp" in rows else rows
    rows[key] = row
    write_result(json_path, {"rows": rows}, markdown(rows))
    print(markdown(rows))
    return 0


def markdown(rows: dict) -> str:
    lines = [
        "Training step of the packaged minilm-l6 (batch 32 real headlines, AdamW), fp32 against bf16 autocast, "
        f"median of {ROUNDS} alternating rounds (min-max); the probe's bf16/fp32 peak ratio, 3 measurements; "
        "what `--precision auto` chose. One row per CPU kind, each from its own machine.",
        "",
        "| CPU [bf16 flags] | threads | probe: bf16 peak / fp32 peak | auto chooses | fp32 ms/step | "
        "bf16 autocast ms/step | bf16 / fp32 |",
        "|" + " --- |" * 7,
    ]
    for key, row in rows.items():
        ms = row["step_ms"]
        cell = {name: f"{ms[name]['median']:.0f} ({ms[name]['min']:.0f}-{ms[name]['max']:.0f})" for name in ms}
        lines.append(
            f"| {key} | {row['torch_threads']} | "
            + ", ".join(f"{s:.2f}" for s in row["probe_speedups"])
            + f" | {row['auto_chooses']} | {cell['fp32']} | {cell['bf16']} | {row['bf16_over_fp32']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
