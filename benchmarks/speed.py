"""The README's performance section: three tables, measured in one process on this machine.

    .venv/bin/python benchmarks/speed.py [--run runs/benchmarks/multiclass] [--repeats 5]

1. The thesis's speed table: arch:bert-base-uncased vs arch:distilbert-base-uncased (random weights
   from BertConfig() / DistilBertConfig(); speed does not depend on values) predicting headlines of
   ../shared/data/news-headlines.csv, the thesis's way (fp32, every text padded to the longest one,
   batch 32, in file order) and distilbench's fastest way (each backend; length-sorted batches padded
   to their own longest text, batch 64). DistilBERT/BERT time ratio (thesis: 0.51) and speed-ups.
2. Against the usual way: transformers.pipeline("text-classification") (fp32, batch 32, default
   settings) on the trained minilm-l6 / student:minilm-l6 checkpoints of benchmarks/thesis_tasks.py,
   on their test headlines, next to every distilbench backend (length-sorted batches of 256):
   throughput, ratio, test accuracy. Compilation and ONNX export happen before timing (warm-up).
   Plus bf16 MFU of arch:distilbert-base-uncased at batch 64.
3. Training: one epoch of minilm-l6 on 5,000 headlines, the thesis's way (plain transformers
   Trainer, fp32, every text padded to the longest) vs distilbench's (bf16 autocast where fast,
   dynamic padding, length-grouped batches); time and accuracy on 1,000 other headlines.

Every timing is a median over --repeats rounds (min-max beside it); within a round the contenders run
one after another, so drift hits them alike. Results: benchmarks/results/speed.{json,md}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from distilbench.benchmarking.speed import spread

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HEADLINES,
    ROOT,
    parser,
    results_dir,
    smoke_checkpoint,
    smoke_data,
    smoke_dir,
    smoke_model,
    write_result,
)  # noqa: E402

FAST_BACKENDS = ["torch-fp32", "torch-bf16", "torch-bf16-compiled", "torch-int8", "onnx-fp32", "onnx-int8"]
# what --smoke changes: the tiny model for every architecture and checkpoint, two backends, a few texts
SMOKE_BACKENDS = ["torch-fp32", "onnx-fp32"]


def thesis_way_batches(tokenizer, texts: list[str], batch_size: int = 32) -> list[dict]:
    """The thesis's inference: every text padded to the longest in the whole set, fixed order."""
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=512, return_tensors="np")
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [
        {k: np.asarray(encoded[k][i : i + batch_size], dtype=np.int64) for k in keys}
        for i in range(0, len(texts), batch_size)
    ]


def time_rounds(contenders: dict, repeats: int) -> dict:
    """contenders: name -> zero-argument callable. Alternating rounds; returns name -> seconds spread."""
    for run in contenders.values():  # warm-up
        run()
    seconds = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: spread(values) for name, values in seconds.items()}


def table_thesis_speed(texts: list[str], repeats: int, smoke: bool = False) -> dict:
    from distilbench.benchmarking.bench import measurement_batches, run_batches
    from distilbench.benchmarking.speed import build_architecture
    from distilbench.models.registry import load_tokenizer, packaged_minilm_path
    from distilbench.runtime.backends import load_backend

    tokenizer = load_tokenizer(packaged_minilm_path())  # the uncased BERT vocabulary
    contenders, meta = {}, {}
    for arch in ("bert-base-uncased", "distilbert-base-uncased"):
        model = build_architecture(arch, num_labels=4) if not smoke else tiny_classifier()
        thesis = load_backend(model, "torch-fp32")
        batches = thesis_way_batches(tokenizer, texts)
        contenders[(arch, "thesis way: torch-fp32, pad to longest, batch 32")] = lambda b=thesis, x=batches: (
            run_batches(b, x)
        )
        fast_batches, _ = measurement_batches(tokenizer, texts, 64, None)
        for name in SMOKE_BACKENDS if smoke else FAST_BACKENDS:
            backend = load_backend(model, name)
            contenders[(arch, f"distilbench: {name}, sorted dynamic padding, batch 64")] = (
                lambda b=backend, x=fast_batches: run_batches(b, x)
            )
        meta[arch] = {"padded_length": int(batches[0]["input_ids"].shape[1])}
        print(f"table 1: prepared {arch}", flush=True)
    timings = time_rounds(contenders, repeats)
    rows = [{"architecture": arch, "way": way, "seconds": t} for (arch, way), t in timings.items()]
    return {"texts": len(texts), "meta": meta, "rows": rows}


def tiny_classifier():
    """The smoke model with a random 4-class head, in place of a base-size architecture."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(smoke_model(), num_labels=4)


def smoke_run() -> Path:
    """A run directory shaped like thesis_tasks.py's: both checkpoints (the smoke checkpoint) and a test split."""
    run = smoke_dir() / "speed-run"
    for slug in ("minilm-l6", "student-minilm-l6"):
        best = run / "models" / slug / "best"
        best.parent.mkdir(parents=True, exist_ok=True)
        if not best.exists():
            best.symlink_to(smoke_checkpoint(), target_is_directory=True)
    (run / "data").mkdir(exist_ok=True)
    pd.read_csv(smoke_data("multiclass")).rename(columns={"category": "label"}).to_csv(run / "data" / "test.csv")
    return run


def table_vs_pipeline(run_dir: Path, repeats: int, max_texts: int, batch_size: int, smoke: bool = False) -> dict:
    from transformers import pipeline

    from distilbench.data.datasets import load_split
    from distilbench.models.registry import load_trained
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.inference import backend_logits, logits_to_probs

    rows, contenders, accuracy = [], {}, {}
    for slug in ("minilm-l6", "student-minilm-l6"):
        best = run_dir / "models" / slug / "best"
        model, tokenizer, task, labels = load_trained(best)
        test = load_split(run_dir / "data" / "test.csv", task, labels).head(max_texts)
        texts, truth = test["text"].tolist(), test["label"].map(labels.index).to_numpy()
        classifier = pipeline("text-classification", model=str(best), device="cpu")
        contenders[(slug, "transformers.pipeline fp32, batch 32")] = lambda c=classifier, x=texts: c(
            x, batch_size=32, truncation=True
        )
        predicted = [
            labels.index(p["label"]) if p["label"] in labels else -1
            for p in classifier(texts, batch_size=32, truncation=True)
        ]
        accuracy[(slug, "transformers.pipeline fp32, batch 32")] = float(np.mean(np.array(predicted) == truth))
        for name in SMOKE_BACKENDS if smoke else FAST_BACKENDS:
            backend = load_backend(model, name)
            key = (slug, f"distilbench {name}, batch {batch_size}")
            # tokenization included, as in the pipeline: tokenize, sort, pad, predict
            contenders[key] = lambda b=backend, t=tokenizer, x=texts: backend_logits(b, t, x, batch_size=batch_size)
            logits, _ = backend_logits(backend, tokenizer, texts, batch_size=batch_size)
            accuracy[key] = float(np.mean(logits_to_probs(task, logits).argmax(axis=1) == truth))
        print(f"table 2: prepared {slug}", flush=True)
    timings = time_rounds(contenders, repeats)
    for (slug, way), t in timings.items():
        rows.append(
            {
                "model": slug,
                "way": way,
                "seconds": t,
                "samples_per_s": len(texts) / t["median"],
                "accuracy": accuracy[(slug, way)],
            }
        )
    return {"texts": len(texts), "rows": rows}


def distilbert_mfu(texts: list[str], work: Path, smoke: bool = False) -> dict:
    """bf16 MFU of arch:distilbert-base-uncased at batch 64, by `distilbench bench`'s protocol."""
    from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench

    work.mkdir(parents=True, exist_ok=True)
    path = work / "bench-distilbert.json"
    pd.DataFrame({"text": texts}).to_csv(work / "headlines.csv", index=False)
    report = run_bench(
        ["arch:distilbert-base-uncased" if not smoke else str(smoke_checkpoint())],
        ["torch-bf16", "torch-fp32"],
        options=BenchOptions(
            batch_size=64,
            samples=512 if not smoke else 8,
            repeats=5 if not smoke else 1,
            latency_samples=50,
            memory=not smoke,  # a subprocess per backend: seconds each
            metric=False,
        ),
        source=BenchTexts(data=str(work / "headlines.csv")),
        out=str(path),
        progress=False,
    )
    return {
        "peaks_flops": report["peaks_flops"],
        "peaks_flops_rounds": report["peaks_flops_rounds"],
        "rows": [
            {
                k: r.get(k)
                for k in (
                    "backend",
                    "samples_per_s",
                    "mean_tokens",
                    "flops_per_sample",
                    "mfu",
                    "mfu_range",
                    "latency_ms",
                    "peak_rss_mb",
                )
            }
            for r in report["results"]
        ],
    }


def table_training(headlines: pd.DataFrame, work: Path, runs: int = 3, smoke: bool = False) -> dict:
    """One epoch each way on the same 5,000 headlines, accuracy on the same 1,000 others; `runs` rounds,
    the two ways alternating, median (min-max)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from distilbench.config import ExperimentConfig
    from distilbench.models.registry import load_classifier, packaged_minilm_path
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.inference import backend_logits
    from distilbench.training.finetune import encode_split, train_model

    labels = sorted(headlines["category"].unique())
    frame = headlines.rename(columns={"category": "label"})
    train_rows, held_rows = (5000, 1000) if not smoke else (32, 16)
    train = frame.iloc[:train_rows].reset_index(drop=True)
    held = frame.iloc[train_rows : train_rows + held_rows].reset_index(drop=True)
    spec = "minilm-l6" if not smoke else str(smoke_model())
    truth = held["label"].map(labels.index).to_numpy()

    def thesis_way() -> dict:
        """Plain transformers: fp32, every text padded to the longest of the set, random order."""
        set_seed(42)
        path = packaged_minilm_path() if not smoke else spec
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoded = tokenizer(train["text"].tolist(), padding="longest", truncation=True, max_length=512)
        dataset = [
            {**{k: encoded[k][i] for k in encoded}, "labels": labels.index(train["label"][i])}
            for i in range(len(train))
        ]
        args = TrainingArguments(
            output_dir=str(work / "thesis-way"),
            num_train_epochs=1,
            per_device_train_batch_size=64,
            learning_rate=5e-5,
            adam_epsilon=1e-8,
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=42,
        )
        start = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=dataset).train()
        seconds = time.perf_counter() - start
        logits, _ = backend_logits(load_backend(model.eval(), "torch-fp32"), tokenizer, held["text"].tolist())
        return {
            "seconds": seconds,
            "accuracy": float(np.mean(logits.argmax(axis=1) == truth)),
            "padded_length": len(encoded["input_ids"][0]),
        }

    def our_way() -> dict:
        """train_model as compare runs it; its call also validates on the 1,000 texts and writes the epoch's
        checkpoint and resume state, which the thesis way does not: `train_seconds` is the training alone."""
        config = ExperimentConfig(task="multiclass", epochs=1, models=[spec]).validate()
        set_seed(42)
        model, tokenizer = load_classifier(spec, "multiclass", labels)
        train_data = encode_split(tokenizer, train, "multiclass", labels, None)
        val_data = encode_split(tokenizer, held, "multiclass", labels, None)
        start = time.perf_counter()
        result = train_model(
            model,
            tokenizer,
            train_data,
            val_data,
            "multiclass",
            labels,
            config,
            work / "our-way",
            spec,
            progress=False,
        )
        return {
            "seconds": time.perf_counter() - start,
            "train_seconds": result.stats[0]["train_time_s"],
            "accuracy": result.stats[0]["val_accuracy"],
            "precision": result.precision,
        }

    measured: dict = {"thesis": [], "ours": []}
    for round_ in range(runs):
        measured["thesis"].append(thesis_way())
        measured["ours"].append(our_way())
        print(f"table 3: round {round_ + 1}/{runs} done", flush=True)
    rows = {
        "thesis way (transformers Trainer, fp32, pad to longest)": {
            "seconds": spread([r["seconds"] for r in measured["thesis"]]),
            "accuracy": [r["accuracy"] for r in measured["thesis"]],
            "padded_length": measured["thesis"][0]["padded_length"],
        },
        f"distilbench ({measured['ours'][0]['precision']} autocast, dynamic padding, length-grouped)": {
            "seconds": spread([r["seconds"] for r in measured["ours"]]),
            "train_seconds": spread([r["train_seconds"] for r in measured["ours"]]),
            "accuracy": [r["accuracy"] for r in measured["ours"]],
        },
    }
    return {"train_texts": len(train), "held_out_texts": len(held), "runs": runs, "rows": rows}


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [
        f"Machine: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cpu_count']} cores, {m['torch_threads']} "
        f"torch threads; torch {m['torch']}, transformers {m['transformers']}, onnxruntime "
        f"{m.get('onnxruntime')}. Median of {report['repeats']} rounds (min-max), contenders alternating.",
        "",
    ]
    t1 = report["thesis_speed"]
    out += [
        f"**1. The thesis's speed table** ({t1['texts']} headlines, random-weight architectures; thesis way "
        f"pads to {t1['meta']['bert-base-uncased']['padded_length']} tokens)",
        "",
        "| way | BERT-base s | DistilBERT-base s | DistilBERT / BERT | BERT speed-up vs thesis way |",
        "| --- | --- | --- | --- | --- |",
    ]
    by_way: dict = {}
    for row in t1["rows"]:
        by_way.setdefault(row["way"], {})[row["architecture"]] = row["seconds"]
    base = by_way["thesis way: torch-fp32, pad to longest, batch 32"]["bert-base-uncased"]["median"]
    for way, t in by_way.items():
        bert, distil = t["bert-base-uncased"], t["distilbert-base-uncased"]
        out.append(
            f"| {way} | {bert['median']:.2f} ({bert['min']:.2f}-{bert['max']:.2f}) "
            f"| {distil['median']:.2f} ({distil['min']:.2f}-{distil['max']:.2f}) "
            f"| {distil['median'] / bert['median']:.2f} | {base / bert['median']:.1f}x |"
        )
    t2 = report["vs_pipeline"]
    out += [
        "",
        f"**2. Against transformers.pipeline** ({t2['texts']} test headlines, trained checkpoints, "
        "tokenization included)",
        "",
        "| model | way | seconds | samples/s | vs pipeline | test accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in t2["rows"]:
        pipe = next(r for r in t2["rows"] if r["model"] == row["model"] and r["way"].startswith("transformers"))
        s = row["seconds"]
        out.append(
            f"| {row['model']} | {row['way']} | {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}) "
            f"| {row['samples_per_s']:.0f} | {row['samples_per_s'] / pipe['samples_per_s']:.1f}x "
            f"| {row['accuracy']:.4f} |"
        )
    mfu = report["distilbert_mfu"]
    peaks = {kind: spread(values) for kind, values in mfu["peaks_flops_rounds"].items()}
    out += [
        "",
        "MFU, arch:distilbert-base-uncased, batch 64; the matrix-product peak measured in each round, "
        "next to the model, and each round's MFU against its own round's peak (peaks, median (min-max): "
        + ", ".join(
            f"{kind} {p['median'] / 1e9:.0f} ({p['min'] / 1e9:.0f}-{p['max'] / 1e9:.0f}) GFLOP/s"
            for kind, p in peaks.items()
        )
        + "):",
        "",
    ]
    for row in mfu["rows"]:
        low, high = row["mfu_range"]
        out.append(
            f"- {row['backend']}: {row['samples_per_s']['median']:.0f} samples/s at "
            f"{row['mean_tokens']:.1f} tokens, {row['flops_per_sample'] / 1e9:.2f} GFLOP/sample, "
            f"MFU {100 * row['mfu']:.0f} % ({100 * low:.0f}-{100 * high:.0f}), "
            f"peak RSS {row['peak_rss_mb'] or 0:.0f} MB"
        )
    t3 = report["training"]
    out += [
        "",
        f"**3. Training**: one epoch of minilm-l6 on {t3['train_texts']} headlines, accuracy on "
        f"{t3['held_out_texts']} others; {t3['runs']} runs each, alternating, median (min-max). "
        "distilbench's call also validates and writes the epoch's checkpoint and resume state; "
        "the last column is its training steps alone",
        "",
        "| way | seconds | ratio | accuracy | training steps alone: seconds | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    first = next(iter(t3["rows"].values()))["seconds"]["median"]
    for way, row in t3["rows"].items():
        s_, acc = row["seconds"], sorted(set(row["accuracy"]))
        steps = row.get("train_seconds")
        alone = (
            f"{steps['median']:.1f} ({steps['min']:.1f}-{steps['max']:.1f}) | {steps['median'] / first:.2f}x"
            if steps
            else "- | -"
        )
        out.append(
            f"| {way} | {s_['median']:.1f} ({s_['min']:.1f}-{s_['max']:.1f}) | {s_['median'] / first:.2f}x "
            f"| {' / '.join(f'{a:.4f}' for a in acc)} | {alone} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__)
    args_parser.add_argument(
        "--run",
        default=str(ROOT / "runs" / "benchmarks" / "multiclass"),
        help="a multiclass run of benchmarks/thesis_tasks.py (trained checkpoints)",
    )
    args_parser.add_argument("--repeats", type=int, default=5)
    args_parser.add_argument("--texts", type=int, default=2000, help="headlines per timing")
    args_parser.add_argument("--batch-size", type=int, default=256, help="distilbench's batch size in table 2")
    args_parser.add_argument("--only", help="comma-separated subset: thesis_speed,vs_pipeline,mfu,training")
    args = args_parser.parse_args(argv)

    from distilbench.core.console import quiet_libraries
    from distilbench.runtime.machine import machine_info

    quiet_libraries(False)
    smoke = args.smoke
    if smoke:
        args.run, args.repeats, args.texts = str(smoke_run()), 1, 16
        headlines = pd.read_csv(smoke_data("multiclass"))
    else:
        headlines = pd.read_csv(HEADLINES).sample(frac=1.0, random_state=0).reset_index(drop=True)
    texts = headlines["text"].astype(str).tolist()[: args.texts]
    only = set(args.only.split(",")) if args.only else {"thesis_speed", "vs_pipeline", "mfu", "training"}
    results = results_dir(smoke)
    path = results / "speed.json"
    report = json.loads(path.read_text()) if path.exists() and args.only else {}
    report.pop("stamp", None)
    report.update({"machine": machine_info(), "repeats": args.repeats})
    work = smoke_dir() / "speed" if smoke else ROOT / "runs" / "benchmarks" / "speed"
    if "thesis_speed" in only:
        report["thesis_speed"] = table_thesis_speed(texts, args.repeats, smoke)
    if "vs_pipeline" in only:
        report["vs_pipeline"] = table_vs_pipeline(Path(args.run), args.repeats, args.texts, args.batch_size, smoke)
    if "mfu" in only:
        report["distilbert_mfu"] = distilbert_mfu(texts, work, smoke)
    if "training" in only:
        report["training"] = table_training(headlines, work, runs=3 if not smoke else 1, smoke=smoke)
    complete = all(k in report for k in ("thesis_speed", "vs_pipeline", "distilbert_mfu", "training"))
    write_result(path, report, markdown(report) if complete else None)
    if complete:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
