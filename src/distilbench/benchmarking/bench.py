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

from distilbench.benchmarking.speed import (
    BenchModel,
    flops_note,
    flops_per_sample,
    peak_rss_of,
    percentiles,
    resolve_bench_models,
    spread,
)
from distilbench.core.console import DistilbenchError, say, warn
from distilbench.evaluation.metrics import compute_metrics, primary_metric
from distilbench.runs import write_json_atomic
from distilbench.runtime.backends import ALIASES, BACKENDS, load_backend
from distilbench.runtime.inference import backend_logits, logits_to_probs, max_positions, padded_batches
from distilbench.runtime.machine import cpu_native_bf16, machine_info, matmul_peak_flops, native_precisions, pick_device

log = logging.getLogger(__name__)
DEFAULT_TEXTS = "builtin:bbc-news"
PEAK_DTYPE = {"torch-fp32": "fp32", "onnx-fp32": "fp32", "torch-bf16": "bf16", "torch-bf16-compiled": "bf16"}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bench_texts(
    bench_model: BenchModel,
    source: str | None,
    text_column: str,
    label_column: str | None,
    label_columns: list[str] | None,
) -> tuple[list[str], np.ndarray | None]:
    """Texts to measure on and, where the model was trained and the data has its labels, the labels."""
    from distilbench.data import datasets as datalib
    from distilbench.evaluation.metrics import label_array

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
                raw,
                bench_model.task,
                text_column=text_column,
                label_column=label_column,
                label_columns=label_columns
                or (bench_model.label_names if bench_model.task == "multilabel" and not label_column else None),
                min_classes=1,
            )
            frame, _ = datalib.clean_texts(frame)
            return frame["text"].tolist(), label_array(frame, bench_model.task, bench_model.label_names)
        except DistilbenchError as exc:
            log.info("no test metric for %s: %s", bench_model.name, exc)
    texts = [" ".join(str(t).split()) for t in raw[text_column].tolist()]
    return [t for t in texts if t], None


def measurement_batches(tokenizer, texts: list[str], batch_size: int, max_length: int | None) -> tuple[list[dict], int]:
    """The inference loop's length-sorted, dynamically padded batches, built once; and the count of real tokens."""
    batches = [batch for _, batch in padded_batches(tokenizer, texts, batch_size, max_length)]
    return batches, int(sum(batch["attention_mask"].sum() for batch in batches))


def run_batches(backend, batches: list[dict]) -> float:
    start = time.perf_counter()
    for batch in batches:
        backend(batch)
    return time.perf_counter() - start


def run_bench(
    specs: list[str],
    backends: list[str] | None = None,
    *,
    data: str | None = None,
    texts: list[str] | None = None,
    text_column: str = "text",
    label_column: str | None = None,
    label_columns: list[str] | None = None,
    batch_size: int = 64,
    samples: int = 512,
    repeats: int = 5,
    warmup: int = 2,
    latency_samples: int = 100,
    max_length: int | None = 128,
    memory: bool = True,
    metric: bool = True,
    device: str = "auto",
    per_model_backends: list[str] | None = None,
    choose: bool = True,
    choice_settings=None,
    out: str | None = None,
    progress: bool = True,
    show: bool = True,
) -> dict:
    """Measure every model with every backend under one protocol; write bench.json and print a table.

    `backends` None: the candidates `--backend auto` considers on this machine (never emulated bf16).
    `per_model_backends`: one backend per spec instead (compare: each model's chosen backend).
    The matrix-product peak behind MFU is measured in every round, next to the models, for the precisions
    of the backends measured; each round's MFU divides by its own round's peak: on a shared machine the peak
    itself drifts (this project's 2-core VM: 1,851 to 2,470 bf16 GFLOP/s between runs).
    `choose`: for trained checkpoints, also record what `--backend auto` picks (cached or calibrated).
    """
    from distilbench.runtime.auto import candidate_backends

    if min(batch_size, samples, repeats) < 1 or warmup < 0 or latency_samples < 0:
        raise DistilbenchError("--batch-size, --samples and --repeats must be at least 1")
    target = pick_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise DistilbenchError(f"--device {device}: no CUDA device here; use --device cpu")
    if per_model_backends is not None:
        if len(per_model_backends) != len(specs):
            raise DistilbenchError("per_model_backends needs one backend per model")
        backends = sorted(set(per_model_backends))
    elif not backends:
        backends = candidate_backends(target)
    unknown = [b for b in backends if ALIASES.get(b, b) not in BACKENDS]
    if unknown:
        raise DistilbenchError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    backends = [ALIASES.get(b, b) for b in backends]
    if per_model_backends is not None:
        per_model_backends = [ALIASES.get(b, b) for b in per_model_backends]
    models = resolve_bench_models(specs)
    if per_model_backends is not None and len(models) != len(specs):
        raise DistilbenchError("per_model_backends needs checkpoint directories, one model each")
    for bench_model in models:
        if bench_model.model is not None:  # None: an exported ONNX directory (CPU)
            bench_model.model.to(target)
    slow = [b for b in backends if PEAK_DTYPE.get(b) == "bf16" and "bf16" not in native_precisions(target)]
    if slow and show and target.type == "cpu" and cpu_native_bf16():
        warn(
            f"this CPU's bf16 matrix products were measured no faster than fp32's: {', '.join(slow)} will likely "
            f"be slower than fp32 here"
        )
    elif slow and show:
        warn(
            f"this {target.type.upper()} has no native bf16: {', '.join(slow)} run emulated kernels, far slower "
            f"than fp32 here"
        )

    from distilbench.models.inputs import model_input_names

    workdir = tempfile.TemporaryDirectory(prefix="distilbench-bench-")
    pairs = []
    for index, bench_model in enumerate(models):
        if texts is not None:  # given by the caller (compare: the test split), no metric
            model_texts, labels = texts, None
        else:
            model_texts, labels = bench_texts(bench_model, data, text_column, label_column, label_columns)
        if not model_texts:
            raise DistilbenchError(f"no texts to measure {bench_model.name} on")
        sample = [model_texts[i % len(model_texts)] for i in range(samples)]
        names = model_input_names(bench_model.model) if bench_model.model is not None else None
        batches = [
            batch
            for _, batch in padded_batches(
                bench_model.tokenizer, sample, batch_size, max_length, names, max_positions(bench_model.config)
            )
        ]
        tokens = int(sum(batch["attention_mask"].sum() for batch in batches))
        params = bench_model.parameter_counts()
        for name in [per_model_backends[index]] if per_model_backends is not None else backends:
            if show:
                say(f"preparing {bench_model.name} / {name}")
            backend = bench_model.load_backend(name, work_dir=Path(workdir.name) / f"{len(pairs)}-{name}")
            pairs.append(
                {
                    "model": bench_model,
                    "backend_name": name,
                    "backend": backend,
                    "batches": batches,
                    "tokens": tokens,
                    "texts": model_texts,
                    "labels": labels,
                    "params": params,
                    "rounds": [],
                    "latency": [],
                }
            )

    for pair in pairs:  # warm-up: first calls pay for allocation, kernel choice, graph optimisation
        # a compiled model compiles again for new shapes: it warms up on every batch shape once
        count = len(pair["batches"]) if pair["backend_name"].endswith("compiled") else warmup
        for batch in pair["batches"][:count]:
            pair["backend"](batch)
    from tqdm.auto import tqdm

    # the peaks of the precisions measured, and only those: an emulated bf16 product is not a peak worth a minute
    peak_rounds: dict[str, list[float]] = {
        kind: [] for kind in sorted({PEAK_DTYPE[p["backend_name"]] for p in pairs if p["backend_name"] in PEAK_DTYPE})
    }
    peak_sizes: dict[str, int] = {}
    for _ in tqdm(range(repeats), desc="throughput rounds", disable=not progress, leave=False):
        for kind in peak_rounds:
            rate, peak_sizes[kind] = matmul_peak_flops(TORCH_DTYPES[kind], seconds=0.3, device=str(target))
            peak_rounds[kind].append(rate)
        for pair in pairs:  # alternate, so drift hits every pair alike
            pair["rounds"].append(run_batches(pair["backend"], pair["batches"]))
    for i in tqdm(range(latency_samples), desc="latency (batch 1)", disable=not progress, leave=False):
        for pair in pairs:  # one text through the inference loop: tokenization included
            text = pair["texts"][i % len(pair["texts"])]
            start = time.perf_counter()
            backend_logits(pair["backend"], pair["model"].tokenizer, [text], batch_size=1, max_length=max_length)
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
        mfus = (
            [flops * rate / peak for rate, peak in zip(rates, peak_rounds[peak_kind])]
            if peak_kind and flops is not None
            else None
        )
        row = {
            "model": bench_model.name,
            "backend": name,
            "source": bench_model.source,
            "params": pair["params"],
            "size_mb": bench_model.size_mb,
            "latency_ms": percentiles(pair["latency"]) if pair["latency"] else None,
            "batch_size": batch_size,
            "samples": n,
            "mean_tokens": pair["tokens"] / n,
            "rounds_s": pair["rounds"],
            "samples_per_s": spread(rates),
            "tokens_per_s": spread([pair["tokens"] / s for s in pair["rounds"]]),
            "flops_per_sample": flops,
            "mfu": statistics.median(mfus) if mfus else None,
            "mfu_range": [min(mfus), max(mfus)] if mfus else None,
            "mfu_peak": peak_kind,
        }
        notes = [note for note in (flops_note(bench_model.config), pair["backend"].note) if note]
        if notes:
            row["notes"] = notes
        if metric and pair["labels"] is not None and bench_model.task:
            predicted, value = _test_predictions(pair["backend"], bench_model, pair, batch_size, max_length)
            row["test"] = {primary_metric(bench_model.task): value, "texts": len(pair["texts"])}
            if bench_model.model is not None:  # an exported model has no PyTorch reference here
                if bench_model.name not in fp32_reference:
                    fp32_reference[bench_model.name] = _test_predictions(
                        load_backend(bench_model.model, "torch-fp32"), bench_model, pair, batch_size, max_length
                    )
                reference, reference_value = fp32_reference[bench_model.name]
                same = predicted == reference if predicted.ndim == 1 else (predicted == reference).all(axis=1)
                row["test"].update(agreement_with_fp32=float(same.mean()), delta_vs_fp32=value - reference_value)
        results.append(row)
    auto = (
        _auto_choices(models, pairs, results, target, batch_size, max_length, choice_settings, show) if choose else {}
    )

    if memory:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(pairs[0]["texts"][: batch_size * 4], handle)
        for pair, row in zip(pairs, results):
            spec = pair["model"].source if Path(pair["model"].source).is_dir() else pair["model"].name
            say(f"peak memory: {row['model']} / {row['backend']}")
            row.update(peak_rss_of(spec, row["backend"], handle.name, batch_size, max_length, str(target)))
        Path(handle.name).unlink()
    workdir.cleanup()

    peaks = {kind: statistics.median(values) for kind, values in peak_rounds.items()}
    if show and peaks:
        say(
            f"measured matrix-product peak on {target} (median of the rounds): "
            + ", ".join(f"{kind} {value / 1e9:.0f} GFLOP/s ({peak_sizes[kind]}-cube)" for kind, value in peaks.items())
        )
    report = {
        "machine": machine_info(),
        "device": str(target),
        "peaks_flops": peaks,
        "peaks_flops_rounds": peak_rounds,
        "peak_product_sizes": peak_sizes,
        "auto_choice": auto,
        "protocol": {
            "batch_size": batch_size,
            "samples": samples,
            "repeats": repeats,
            "warmup_batches": warmup,
            "latency_samples": latency_samples,
            "max_length": max_length,
            "texts": data or "run test split / " + DEFAULT_TEXTS,
            "order": "pairs alternate within each round",
        },
        "results": results,
    }
    if out:
        write_json_atomic(Path(out), report)
    if show:
        say("\n" + bench_table(results).to_string(index=False))
        for name, choice in auto.items():
            here = choice.get("measured_here")
            if here:
                say(
                    f"auto for {name}: {choice['chosen']}, {here['ratio_to_fastest_valid']:.2f}x the fastest valid "
                    f"backend measured here ({here['fastest_valid']})"
                )
    return report


def _auto_choices(
    models: list[BenchModel],
    pairs: list[dict],
    results: list[dict],
    device,
    batch_size: int,
    max_length: int | None,
    settings,
    show: bool,
) -> dict:
    """What `--backend auto` picks for each trained checkpoint (cached or calibrated), marked in its rows, and
    how its measured speed compares with the fastest backend measured here that agrees with fp32."""
    from distilbench.runtime.auto import ChoiceSettings, resolve_backend

    settings = settings or ChoiceSettings()
    choices = {}
    for bench_model in models:
        if not bench_model.task or bench_model.cache_key is None:
            continue  # random or hub weights: nothing to guard the choice with
        texts = next(p["texts"] for p in pairs if p["model"] is bench_model)
        name, record = resolve_backend(
            bench_model.source,
            "auto",
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            held_texts=texts,
            settings=settings,
            show=show,
        )
        rows = [r for r, p in zip(results, pairs) if p["model"] is bench_model]
        for row in rows:
            row["auto"] = row["backend"] == name

        def valid(row: dict) -> bool:
            test = row.get("test")
            if test is None:
                return (record or {}).get("candidates", {}).get(row["backend"], {}).get("valid", True)
            return (
                test["agreement_with_fp32"] >= settings.min_agreement
                and -100 * test["delta_vs_fp32"] <= settings.max_metric_drop
            )

        candidates = [r for r in rows if valid(r)]
        chosen = next((r for r in rows if r["backend"] == name), None)
        if candidates and chosen is not None:
            fastest = max(candidates, key=lambda r: r["samples_per_s"]["median"])
            record = {
                **record,
                "measured_here": {
                    "fastest_valid": fastest["backend"],
                    "ratio_to_fastest_valid": chosen["samples_per_s"]["median"] / fastest["samples_per_s"]["median"],
                },
            }
        choices[bench_model.name] = record
    return choices


def _test_predictions(
    backend, bench_model: BenchModel, pair: dict, batch_size: int, max_length: int | None
) -> tuple[np.ndarray, float]:
    """Predicted labels on the labelled texts through `backend`, and the primary test metric."""
    logits, _ = backend_logits(
        backend, bench_model.tokenizer, pair["texts"], batch_size=batch_size, max_length=max_length
    )
    probs = logits_to_probs(bench_model.task, logits)
    metrics = compute_metrics(bench_model.task, pair["labels"], probs, bench_model.label_names)
    predicted = probs.argmax(axis=1) if bench_model.task == "multiclass" else probs >= 0.5
    return predicted, metrics[primary_metric(bench_model.task)]


def bench_table(results: list[dict]) -> pd.DataFrame:
    """One printed line per model and backend."""
    rows = []
    for r in results:
        rows.append(
            {
                "model": r["model"],
                "backend": r["backend"],
                "params_m": round(r["params"]["total"] / 1e6, 1),
                "size_mb": round(r["size_mb"], 1),
                "p50_ms": round(r["latency_ms"]["p50"], 1) if r["latency_ms"] else None,
                "p99_ms": round(r["latency_ms"]["p99"], 1) if r["latency_ms"] else None,
                "samples_per_s": round(r["samples_per_s"]["median"], 1),
                "min-max": f"{r['samples_per_s']['min']:.0f}-{r['samples_per_s']['max']:.0f}",
                "mfu": f"{100 * r['mfu']:.0f}% ({100 * r['mfu_range'][0]:.0f}-{100 * r['mfu_range'][1]:.0f})"
                if r["mfu"] is not None
                else "",
                "peak_rss_mb": round(r["peak_rss_mb"]) if r.get("peak_rss_mb") else None,
                "test_metric": round(next(iter(r["test"].values())), 4) if r.get("test") else None,
                "agree_fp32": round(r["test"]["agreement_with_fp32"], 4)
                if "agreement_with_fp32" in r.get("test", {})
                else None,
                "auto": "*" if r.get("auto") else "",
            }
        )
    return pd.DataFrame(rows)
