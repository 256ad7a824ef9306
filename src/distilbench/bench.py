"""`distilbench bench`: size, latency, throughput, memory, FLOPs and MFU per model and backend."""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .backends import BACKENDS, backend_logits, load_backend
from .console import DistilbenchError, say
from .inference import logits_to_probs, pick_device, tokenize_texts
from .metrics import compute_metrics, primary_metric
from .runs import write_json_atomic
from .speed import (
    BenchModel,
    flops_per_sample,
    machine_info,
    matmul_peak_flops,
    peak_rss_of,
    percentiles,
    resolve_bench_models,
    spread,
)

log = logging.getLogger(__name__)
DEFAULT_TEXTS = "builtin:bbc-news"
PEAK_DTYPE = {"torch-fp32": "fp32", "onnx-fp32": "fp32", "torch-bf16": "bf16"}


def bench_texts(bench_model: BenchModel, source: str | None, text_column: str, label_column: str | None,
                label_columns: list[str] | None) -> tuple[list[str], np.ndarray | None]:
    """Texts to measure on and, where the model was trained and the data has its labels, the labels."""
    from . import data as datalib
    from .training import label_array

    run = bench_model.extra.get("run")
    if source is None and run:
        frame = datalib.load_split(Path(run) / "data" / "test.csv", bench_model.task, bench_model.label_names)
        return frame["text"].tolist(), label_array(frame, bench_model.task, bench_model.label_names)
    raw = datalib.read_source(source or DEFAULT_TEXTS)
    if text_column not in raw.columns:
        raise DistilbenchError(f"text column '{text_column}' not found in {source}; use --text-column")
    if bench_model.task:
        try:
            frame, _ = datalib.to_task_frame(
                raw, bench_model.task, text_column=text_column, label_column=label_column,
                label_columns=label_columns or (bench_model.label_names if bench_model.task == "multilabel"
                                                and not label_column else None), min_classes=1)
            frame, _ = datalib.clean_texts(frame)
            return frame["text"].tolist(), label_array(frame, bench_model.task, bench_model.label_names)
        except DistilbenchError as exc:
            log.info("no test metric for %s: %s", bench_model.name, exc)
    texts = [" ".join(str(t).split()) for t in raw[text_column].tolist()]
    return [t for t in texts if t], None


def padded_batches(tokenizer, texts: list[str], batch_size: int, max_length: int | None) -> tuple[list[dict], int]:
    """Length-sorted batches padded to their own longest text, built once; and the count of real tokens."""
    encoded = tokenize_texts(tokenizer, texts, max_length)
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    batches = []
    for begin in range(0, len(texts), batch_size):
        index = order[begin:begin + batch_size]
        padded = tokenizer.pad({k: [encoded[k][i] for i in index] for k in keys}, return_tensors="np")
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in padded.items()})
    return batches, int(sum(len(ids) for ids in encoded["input_ids"]))


def run_batches(backend, batches: list[dict]) -> float:
    start = time.perf_counter()
    for batch in batches:
        backend({k: batch[k] for k in backend.input_names if k in batch})
    return time.perf_counter() - start


def run_bench(specs: list[str], backends: list[str], *, data: str | None = None, texts: list[str] | None = None,
              text_column: str = "text",
              label_column: str | None = None, label_columns: list[str] | None = None, batch_size: int = 64,
              samples: int = 512, repeats: int = 5, warmup: int = 2, latency_samples: int = 100,
              max_length: int | None = 128, memory: bool = True, metric: bool = True, device: str = "auto",
              out: str | None = None, progress: bool = True, show: bool = True) -> dict:
    """Measure every model with every backend under one protocol; write bench.json and print a table.

    The matrix-product peak behind MFU is measured again in every round, next to the models, and each
    round's MFU divides by its own round's peak: on a shared machine the peak itself drifts (this
    project's 2-core VM: 1,851 to 2,470 bf16 GFLOP/s between runs).
    """
    unknown = [b for b in backends if b not in BACKENDS and b != "onnx"]
    if unknown:
        raise DistilbenchError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    backends = ["onnx-fp32" if b == "onnx" else b for b in backends]
    if min(batch_size, samples, repeats) < 1 or warmup < 0 or latency_samples < 0:
        raise DistilbenchError("--batch-size, --samples and --repeats must be at least 1")
    target = pick_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise DistilbenchError(f"--device {device}: no CUDA device here; use --device cpu")
    models = resolve_bench_models(specs)
    for bench_model in models:
        if bench_model.model is not None:  # None: an exported ONNX directory (CPU)
            bench_model.model.to(target)

    workdir = tempfile.TemporaryDirectory(prefix="distilbench-bench-")
    pairs = []
    for bench_model in models:
        if texts is not None:  # given by the caller (compare: the test split), no metric
            model_texts, labels = texts, None
        else:
            model_texts, labels = bench_texts(bench_model, data, text_column, label_column, label_columns)
        if not model_texts:
            raise DistilbenchError(f"no texts to measure {bench_model.name} on")
        sample = [model_texts[i % len(model_texts)] for i in range(samples)]
        batches, tokens = padded_batches(bench_model.tokenizer, sample, batch_size, max_length)
        params = bench_model.parameter_counts()
        for name in backends:
            if show:
                say(f"preparing {bench_model.name} / {name}")
            backend = bench_model.load_backend(name, work_dir=Path(workdir.name) / f"{len(pairs)}-{name}")
            pairs.append({"model": bench_model, "backend_name": name, "backend": backend, "batches": batches,
                          "tokens": tokens, "texts": model_texts, "labels": labels, "params": params, "rounds": [],
                          "latency": []})

    for pair in pairs:  # warm-up: first calls pay for allocation, kernel choice, graph optimisation
        # a compiled model compiles again for new shapes: it warms up on every batch shape once
        count = len(pair["batches"]) if pair["backend_name"].endswith("compiled") else warmup
        for batch in pair["batches"][:count]:
            pair["backend"]({k: batch[k] for k in pair["backend"].input_names if k in batch})
    from tqdm.auto import tqdm

    peak_rounds: dict[str, list[float]] = {"fp32": [], "bf16": []}  # one per round, next to its timings
    for _ in tqdm(range(repeats), desc="throughput rounds", disable=not progress, leave=False):
        for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peak_rounds[kind].append(matmul_peak_flops(dtype, seconds=0.3, device=str(target)))
        for pair in pairs:  # alternate, so drift hits every pair alike
            pair["rounds"].append(run_batches(pair["backend"], pair["batches"]))
    for i in tqdm(range(latency_samples), desc="latency (batch 1)", disable=not progress, leave=False):
        for pair in pairs:
            text = pair["texts"][i % len(pair["texts"])]
            start = time.perf_counter()
            encoded = pair["model"].tokenizer([text], truncation=True, max_length=max_length or 512,
                                              return_tensors="np")
            pair["backend"]({k: np.asarray(encoded[k], dtype=np.int64) for k in pair["backend"].input_names
                             if k in encoded})
            pair["latency"].append((time.perf_counter() - start) * 1000)

    results = []
    fp32_reference: dict[str, tuple[np.ndarray, float]] = {}  # model -> (predictions, metric) with torch-fp32
    for pair in pairs:
        bench_model, name = pair["model"], pair["backend_name"]
        n = sum(len(b["input_ids"]) for b in pair["batches"])
        rates = [n / seconds for seconds in pair["rounds"]]
        flops = flops_per_sample(bench_model.config, pair["tokens"] / n, pair["backend"].first_token_only)
        peak_kind = PEAK_DTYPE.get(name)
        # each round's rate against the peak measured in that round
        mfus = [flops * rate / peak for rate, peak in zip(rates, peak_rounds[peak_kind])] if peak_kind else None
        row = {
            "model": bench_model.name, "backend": name, "source": bench_model.source,
            "params": pair["params"], "size_mb": bench_model.size_mb,
            "latency_ms": percentiles(pair["latency"]) if pair["latency"] else None,
            "batch_size": batch_size, "samples": n, "mean_tokens": pair["tokens"] / n,
            "rounds_s": pair["rounds"], "samples_per_s": spread(rates),
            "tokens_per_s": spread([pair["tokens"] / s for s in pair["rounds"]]),
            "flops_per_sample": flops,
            "mfu": statistics.median(mfus) if mfus else None,
            "mfu_range": [min(mfus), max(mfus)] if mfus else None,
            "mfu_peak": peak_kind,
        }
        if metric and pair["labels"] is not None and bench_model.task:
            predicted, value = _test_predictions(pair["backend"], bench_model, pair, batch_size, max_length)
            row["test"] = {primary_metric(bench_model.task): value, "texts": len(pair["texts"])}
            if bench_model.model is not None:  # an exported model has no PyTorch reference here
                if bench_model.name not in fp32_reference:
                    fp32_reference[bench_model.name] = _test_predictions(
                        load_backend(bench_model.model, "torch-fp32"), bench_model, pair, batch_size, max_length)
                reference, reference_value = fp32_reference[bench_model.name]
                same = predicted == reference if predicted.ndim == 1 else (predicted == reference).all(axis=1)
                row["test"].update(agreement_with_fp32=float(same.mean()), delta_vs_fp32=value - reference_value)
        results.append(row)

    if memory:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(pairs[0]["texts"][:batch_size * 4], handle)
        for pair, row in zip(pairs, results):
            spec = pair["model"].source if Path(pair["model"].source).is_dir() else pair["model"].name
            say(f"peak memory: {row['model']} / {row['backend']}")
            row.update(peak_rss_of(spec, row["backend"], handle.name, batch_size, max_length, str(target)))
        Path(handle.name).unlink()
    workdir.cleanup()

    peaks = {kind: statistics.median(values) for kind, values in peak_rounds.items()}
    if show:
        say(f"measured matrix-product peak on {target} (median of the rounds): fp32 {peaks['fp32'] / 1e9:.0f} "
            f"GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    report = {"machine": machine_info(), "device": str(target), "peaks_flops": peaks,
              "peaks_flops_rounds": peak_rounds,
              "protocol": {"batch_size": batch_size, "samples": samples, "repeats": repeats, "warmup_batches": warmup,
                           "latency_samples": latency_samples, "max_length": max_length,
                           "texts": data or "run test split / " + DEFAULT_TEXTS,
                           "order": "pairs alternate within each round"},
              "results": results}
    if out:
        write_json_atomic(Path(out), report)
    if show:
        say("\n" + bench_table(results).to_string(index=False))
    return report


def _test_predictions(backend, bench_model: BenchModel, pair: dict, batch_size: int,
                      max_length: int | None) -> tuple[np.ndarray, float]:
    """Predicted labels on the labelled texts through `backend`, and the primary test metric."""
    logits, _ = backend_logits(backend, bench_model.tokenizer, pair["texts"], batch_size=batch_size,
                               max_length=max_length)
    probs = logits_to_probs(bench_model.task, logits)
    metrics = compute_metrics(bench_model.task, pair["labels"], probs, bench_model.label_names)
    predicted = probs.argmax(axis=1) if bench_model.task == "multiclass" else probs >= 0.5
    return predicted, metrics[primary_metric(bench_model.task)]


def bench_table(results: list[dict]) -> pd.DataFrame:
    """One printed line per model and backend."""
    rows = []
    for r in results:
        rows.append({
            "model": r["model"], "backend": r["backend"],
            "params_m": round(r["params"]["total"] / 1e6, 1), "size_mb": round(r["size_mb"], 1),
            "p50_ms": round(r["latency_ms"]["p50"], 1) if r["latency_ms"] else None,
            "p99_ms": round(r["latency_ms"]["p99"], 1) if r["latency_ms"] else None,
            "samples_per_s": round(r["samples_per_s"]["median"], 1),
            "min-max": f"{r['samples_per_s']['min']:.0f}-{r['samples_per_s']['max']:.0f}",
            "mfu": f"{100 * r['mfu']:.0f}% ({100 * r['mfu_range'][0]:.0f}-{100 * r['mfu_range'][1]:.0f})"
            if r["mfu"] is not None else "",
            "peak_rss_mb": round(r["peak_rss_mb"]) if r.get("peak_rss_mb") else None,
            "test_metric": round(next(iter(r["test"].values())), 4) if r.get("test") else None,
            "agree_fp32": round(r["test"]["agreement_with_fp32"], 4) if "agreement_with_fp32" in r.get("test", {})
            else None,
        })
    return pd.DataFrame(rows)
