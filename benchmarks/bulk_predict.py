"""Bulk prediction: rows/s and peak memory of `distilbench predict` over 100,000 and 1,000,000 rows.

    .venv/bin/python benchmarks/bulk_predict.py [--rows 100000,1000000] [--workers 1,2] [--backend auto]
                                                [--model DIR] [--input-format parquet]

Inputs: synthetic files of N rows, headlines of ../shared/data/news-headlines.csv sampled with replacement
(seed 0), written once to runs/benchmarks/bulk/ (Parquet in row groups of 100,000 rows, or CSV/JSONL).
Model: the packaged MiniLM-L6 with a random head over the headline categories (speed does not depend on
the weights), saved once beside the inputs; or a trained checkpoint with --model.

Each (rows, workers) pair runs `distilbench predict --output OUT.parquet` as a fresh process, one after
another, once (the 1M-row runs take minutes each). Reported per run: wall time and rows/s including start-up
and model loading, the rows/s that predict reports itself (after loading), and peak resident memory from
VmHWM in /proc of the command's process and of each worker (sampled every 0.2 s; VmHWM is a high-water
mark, so no peak is missed), plus their sum, an upper bound of the whole command's peak. The speed-up is
rows/s with N workers over rows/s with 1 worker on the same rows. Results: benchmarks/results/bulk_predict.{json,md}.

With --versus-pipeline (issue 39's bulk target), instead: a fine-tuned checkpoint (--model, default the ladder's
converged MiniLM-L6) is exported once per --bundles quantization (fp32, int8-static, openvino-int8, and auto: what
auto measures fastest under its guard; bundles already in runs/benchmarks/bulk-vs-pipeline/ are reused). Each round
then runs, as fresh whole processes on the checkpoint run's test split (--test), `transformers.pipeline` (torch
fp32, batch 64, labels written to a file) and `distilbench predict --backend auto` on every bundle (plus --extra
BUNDLE:BACKEND pairs, e.g. fp32:openvino-bf16), in alternating order (reversed in odd rounds) after --warmup
untimed rounds, --threads threads each (OMP_NUM_THREADS). Reported per way: wall seconds (median, min, max over
--rounds), the ratio of medians against the pipeline, peak memory (VmHWM), the labels' agreement with the
pipeline's (torch fp32) and accuracy on the test labels, whether a way's labels changed between rounds, the backend
predict ran, the guard each bundle's export recorded, and the load average before every run (the machine is shared).
With --runtime-venv DIR (an environment made by runtime_env.py, e.g. with --extras openvino), distilbench predict runs
on that environment's python and libraries, as a deployment would, with this working tree's code; the pipeline runs
here. With --avx2, every process (the pipeline too) runs as on an AVX2-only CPU, simulated: the machine probe reports
AVX2 alone (DISTILBENCH_CPU_FLAGS) and oneDNN, ATen and MKL run their AVX2 kernels (OpenVINO's CPU plugin too, being
built on oneDNN); ONNX Runtime's own kernels cannot be restricted this way, so an onnx-* row there is not an AVX2
number and the markdown says so. Results: benchmarks/results/bulk_vs_pipeline.{json,md} (-avx2 with --avx2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HEADLINES,
    RESULTS,
    ROOT,
    results_dir,
    runtime_python,
    smoke_checkpoint,
    smoke_data,
    smoke_dir,
    write_result,
)
from common import parser as common_parser

WORK = ROOT / "runs" / "benchmarks" / "bulk"
ROW_GROUP_ROWS = 100_000
VERSUS_MODEL = ROOT / "runs" / "ladder-headlines" / "models" / "minilm-l6" / "best"
VERSUS_BUNDLES = "fp32,int8-static,openvino-int8,auto"
PIPELINE_BATCH = 64
# an AVX2-only CPU, simulated on a bigger x86 one (as benchmarks/evaluate_speed.py)
AVX2_ONLY = {
    "DISTILBENCH_CPU_FLAGS": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
# transformers.pipeline the usual way, whole process: read the texts, load, classify in batches of 64, write labels
PIPELINE_SCRIPT = (
    "import csv, sys\n"
    "from transformers import pipeline\n"
    "model, source, out, batch = sys.argv[1:5]\n"
    "with open(source, newline='', encoding='utf-8') as handle:\n"
    "    texts = [row['text'] for row in csv.DictReader(handle)]\n"
    "classify = pipeline('text-classification', model=model, device='cpu')\n"
    "labels = [r['label'] for r in classify(texts, batch_size=int(batch), truncation=True)]\n"
    "with open(out, 'w', encoding='utf-8') as handle:\n"
    "    handle.write('\\n'.join(labels) + '\\n')\n"
)


_SMOKE = []


def work_dir() -> Path:
    """Where the inputs, the model and the predictions go: runs/benchmarks/bulk, or the smoke folder."""
    return smoke_dir() / "bulk" if _SMOKE else WORK


def synthetic_input(rows: int, fmt: str, headlines: list[str]) -> Path:
    """`rows` headlines sampled with replacement, written once (in slices, so this script stays small too)."""
    path = work_dir() / f"headlines-{rows}.{fmt}"
    if path.exists():
        return path
    work_dir().mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pool = np.array(headlines, dtype=object)
    tmp = path.with_name(path.name + ".tmp")
    writer = None
    with open(tmp, "wb") as handle:
        for begin in range(0, rows, ROW_GROUP_ROWS):
            frame = pd.DataFrame({"text": pool[rng.integers(0, len(pool), min(ROW_GROUP_ROWS, rows - begin))]})
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(handle, table.schema)
                writer.write_table(table)
            elif fmt == "csv":
                handle.write(frame.to_csv(index=False, header=begin == 0).encode("utf-8"))
            else:
                handle.write(frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
        if writer is not None:
            writer.close()
    tmp.replace(path)
    return path


def packaged_model(labels: list[str]) -> Path:
    """The packaged MiniLM-L6 with a fresh classification head over `labels`, saved once."""
    path = work_dir() / "minilm-l6-random-head"
    if (path / "config.json").exists():
        return path
    from distilbench.models.registry import load_classifier

    model, tokenizer = load_classifier("minilm-l6", "multiclass", labels)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident memory) of a live process, in MB (2^20 bytes)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_sampled(command: list[str], env: dict) -> tuple[float, dict[int, float], str, int]:
    """Run `command` to its end: (wall seconds, {pid: peak MB} of it and its children, its stdout, its pid)."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)  # progress bar on stderr
    peaks: dict[int, float] = {}
    main = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            pids = [process.pid] + [child.pid for child in main.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for pid in pids:
            peak = peak_rss_mb(pid)
            if peak is not None:
                peaks[pid] = max(peak, peaks.get(pid, 0.0))
        time.sleep(0.2)
    stdout = process.communicate()[0]
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}")
    return seconds, peaks, stdout, process.pid


def run_predict(model: Path, source: Path, rows: int, workers: int, args) -> dict:
    """One `distilbench predict` in a fresh process: wall time, its own rows/s, peak memory of its processes."""
    output = work_dir() / f"predictions-{rows}-{workers}w.parquet"
    output.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "distilbench",
        "predict",
        "--model",
        str(model),
        "--input",
        str(source),
        "--output",
        str(output),
        "--backend",
        args.backend,
        "--batch-size",
        str(args.batch_size),
        "--chunk-rows",
        str(args.chunk_rows),
        "--workers",
        str(workers),
    ]
    if args.no_progress:
        command.append("--no-progress")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    load = os.getloadavg()[0]
    seconds, peaks, stdout, pid = run_sampled(command, env)
    import pyarrow.parquet as pq

    written = pq.ParquetFile(output).metadata.num_rows
    if written != rows:
        raise SystemExit(f"{output} holds {written} rows, not {rows}")
    output.unlink()
    summary = stdout.strip().splitlines()[-1]
    match = re.search(r"\((\S+), .*?(\d+) rows/s\)", summary)
    others = [mb for child, mb in peaks.items() if child != pid]
    return {
        "rows": rows,
        "workers": workers,
        "backend": match.group(1) if match else args.backend,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "predict_rows_per_s": float(match.group(2)) if match else None,
        "peak_rss_mb": {
            "main": peaks.get(pid),
            "largest_child": max(others) if others else None,
            "children": len(others),
            "sum": sum(peaks.values()),
        },
        "load_average_before": load,
        "summary": summary,
    }


def markdown(report: dict) -> str:
    """The markdown view of either result of this script (render.py calls it): bulk_vs_pipeline.json's or
    bulk_predict.json's."""
    if "bundles" in report:
        return versus_markdown(report)
    lines = [
        "# Bulk prediction",
        "",
        f"`distilbench predict` over synthetic headline files ({report['input_format']}), model "
        f"{report['model']}, backend {report['runs'][0]['backend']}, batch {report['batch_size']}, chunks "
        f"of {report['chunk_rows']} rows, on {report['machine']['cpu']} ({report['machine']['cpu_count']} "
        "CPUs). One run each; rows/s (wall) includes start-up and model loading; peak memory is VmHWM: "
        "the command's own process, its largest worker process, and the sum over all its processes.",
        "",
        "| rows | workers | wall s | rows/s (wall) | rows/s (predict) | peak MB main | peak MB largest child "
        "| peak MB sum | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        peak = run["peak_rss_mb"]
        child = f"{peak['largest_child']:.0f}" if peak["largest_child"] else "-"
        speedup = f"{run['speedup']:.2f}x" if run.get("speedup") else "-"
        lines.append(
            f"| {run['rows']:,} | {run['workers']} | {run['seconds']:.1f} | {run['rows_per_s']:.0f} | "
            f"{run['predict_rows_per_s'] or 0:.0f} | {peak['main']:.0f} | {child} | {peak['sum']:.0f} "
            f"| {speedup} |"
        )
    lines.append("")
    for line in report["memory_growth"]:
        lines.append(f"- {line}")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- --versus-pipeline: issue 39's bulk target


def versus_env(threads: int) -> dict:
    """The environment of every timed process: the same threads for all, offline, distilbench from src/."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def export_bundles(checkpoint: Path, names: list[str], root: Path) -> dict[str, dict]:
    """One bundle of `checkpoint` per quantization name (fp32, int8-static, openvino-int8, auto), exported once in this
    process with `distilbench export` (an existing bundle is reused): {name: {path, export seconds, guard}}."""
    from distilbench.core.console import DistilbenchError
    from distilbench.runtime.bundle import export_info
    from distilbench.runtime.export import export_model

    bundles = {}
    for name in names:
        path = root / f"bundle-{name}"
        seconds = None
        if not (path / "export.json").is_file():
            started = time.perf_counter()
            try:
                export_model(checkpoint, path, quantize=None if name == "fp32" else name)
            except DistilbenchError as exc:  # e.g. a static int8 graph too far from PyTorch: recorded, not timed
                error = str(exc).replace(str(ROOT) + os.sep, "")
                bundles[name] = {"path": None, "export_error": error, "guard": latest_static_record(checkpoint)}
                continue
            seconds = time.perf_counter() - started
        info = export_info(path)
        guard = {k: v for k, v in (info.get("static") or {}).items() if k not in ("tried", "excluded_nodes")}
        bundles[name] = {"path": path, "backend": info.get("backend"), "export_s": seconds, "guard": guard or None}
        if info.get("auto"):  # export --quantize auto: what auto measured on the checkpoint, and its choice
            bundles[name]["auto"] = {
                "fastest": info["auto"]["chosen"],
                "bundle_backend": info["auto"]["bundle_backend"],
                "candidates": {
                    key: {k: v for k, v in found.items() if k != "static"}
                    for key, found in info["auto"]["candidates"].items()
                },
            }
    return bundles


def latest_static_record(checkpoint: Path) -> dict | None:
    """The static int8 record built last for `checkpoint` in the ONNX cache (what a failed export measured)."""
    from distilbench.core.cache import cache_dir, checkpoint_key

    entries = (cache_dir() / "onnx" / checkpoint_key(checkpoint)).glob("int8-static*/static.json")
    found = sorted(entries, key=os.path.getmtime)
    if not found:
        return None
    return {k: v for k, v in json.loads(found[-1].read_text()).items() if k not in ("tried", "excluded_nodes")}


def versus_ways(bundles: dict[str, dict], extra: list[str], test: Path, out: Path, args, python: str) -> list[dict]:
    """The commands timed each round: the pipeline, then predict --backend auto on every bundle, then the --extra
    BUNDLE:BACKEND pairs (distilbench run by `python`)."""
    ways = [
        {
            "way": f"transformers.pipeline (torch fp32, batch {PIPELINE_BATCH})",
            "key": "pipeline",
            "command": [
                sys.executable,
                "-c",
                PIPELINE_SCRIPT,
                str(args.model),
                str(test),
                str(out / "pipeline.txt"),
                str(PIPELINE_BATCH),
            ],
            "labels": out / "pipeline.txt",
        }
    ]
    pairs = [(name, "auto") for name in bundles if bundles[name]["path"]] + [tuple(p.split(":", 1)) for p in extra]
    for name, backend in pairs:
        key = f"{name}-{backend}"
        command = [python, "-m", "distilbench", "predict", "--model", str(bundles[name]["path"])]
        command += ["--input", str(test), "--output", str(out / f"{key}.jsonl"), "--backend", backend]
        command += ["--batch-size", str(args.batch_size), "--no-progress"]
        ways.append({"way": f"distilbench predict --backend {backend}, {name} bundle", "key": key, "command": command})
        ways[-1]["labels"] = out / f"{key}.jsonl"
    return ways


def read_labels(path: Path) -> list[str]:
    """The labels a way wrote: one per line (pipeline), or predict's JSON lines in row order."""
    import json

    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        return lines
    records = sorted((json.loads(line) for line in lines if line.strip()), key=lambda record: record["row"])
    return [record["label"] for record in records]


def time_ways(ways: list[dict], rounds: int, env: dict, warmup: int = 1) -> dict[str, dict]:
    """Every way once per round, in alternating order (reversed in odd rounds), after `warmup` untimed rounds (the
    file cache, OpenVINO's compiled-model cache): seconds, peak memory, load average before each run, the labels of
    each round, the backend predict reported."""
    for _ in range(warmup):
        for way in ways:
            run_sampled(way["command"], env)
    measured = {way["key"]: {"seconds": [], "peak_mb": [], "load_before": [], "labels": []} for way in ways}
    for index in range(rounds):
        for way in ways if index % 2 == 0 else ways[::-1]:
            found = measured[way["key"]]
            found["load_before"].append(os.getloadavg()[0])
            seconds, peaks, stdout, _ = run_sampled(way["command"], env)
            found["seconds"].append(seconds)
            found["peak_mb"].append(sum(peaks.values()))
            found["labels"].append(read_labels(way["labels"]))
            match = re.search(r"predictions \((\S+),", stdout)
            found["backend"] = match.group(1) if match else found.get("backend")
            print(f"round {index + 1}: {way['way']}: {seconds:.1f} s", flush=True)
    return measured


def summarize_way(way: dict, found: dict, reference: list[str], gold: list[str], pipeline_s: float) -> dict:
    """A way's row of the result: medians, ratio against the pipeline, agreement and accuracy."""
    labels = found["labels"][-1]
    seconds = found["seconds"]
    return {
        "way": way["way"],
        "key": way["key"],
        "backend": found.get("backend") or ("torch-fp32" if way["key"] == "pipeline" else None),
        "seconds": {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "all": seconds},
        "speedup_vs_pipeline": pipeline_s / statistics.median(seconds),
        "peak_rss_mb": statistics.median(found["peak_mb"]),
        "agreement_with_pipeline": float(np.mean([a == b for a, b in zip(labels, reference, strict=True)])),
        "accuracy": float(np.mean([a == b for a, b in zip(labels, gold, strict=True)])),
        "labels_changed_between_rounds": any(other != labels for other in found["labels"]),
        "load_before": found["load_before"],
        "command": " ".join(Path(part).name if part == sys.executable else part for part in way["command"][:3])
        if way["key"] == "pipeline"
        else " ".join(way["command"][2:]).replace(str(ROOT) + "/", ""),
    }


def versus_pipeline(args) -> dict:
    """Issue 39's bulk target, side by side: the pipeline and predict --backend auto on bundles, whole processes."""
    from distilbench.runtime.machine import machine_info

    checkpoint = Path(args.model)
    test = Path(args.test) if args.test else checkpoint.resolve().parents[2] / "data" / "test.csv"
    if not (checkpoint / "config.json").is_file() or not test.is_file():
        raise SystemExit(f"--versus-pipeline needs a checkpoint (--model: {checkpoint}) and its test split ({test})")
    name = "bulk-vs-pipeline-avx2" if args.avx2 else "bulk-vs-pipeline"  # bundles quantized on the simulated CPU
    root = (smoke_dir() / name) if args.smoke else WORK.parent / name
    out = root / "outputs"
    out.mkdir(parents=True, exist_ok=True)
    bundles = export_bundles(checkpoint, [n for n in args.bundles.split(",") if n], root)
    python = runtime_python(args.runtime_venv)
    ways = versus_ways(bundles, [p for p in args.extra.split(",") if p], test, out, args, python)
    load_start = os.getloadavg()
    measured = time_ways(ways, args.rounds, versus_env(args.threads), args.warmup)
    gold = pd.read_csv(test)["label"].astype(str).tolist()
    reference = measured["pipeline"]["labels"][-1]
    pipeline_s = statistics.median(measured["pipeline"]["seconds"])
    rows = [summarize_way(way, measured[way["key"]], reference, gold, pipeline_s) for way in ways]
    return {
        "model": shown(checkpoint),
        "test": shown(test),
        "texts": len(gold),
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "simulated_avx2": AVX2_ONLY if args.avx2 else None,
        "distilbench_environment": runtime_environment(args.runtime_venv, python),
        "bundles": {
            name: {**bundle, "path": shown(bundle["path"]) if bundle["path"] else None}
            for name, bundle in bundles.items()
        },
        "rows": rows,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "machine": machine_info(),
    }


def runtime_environment(venv: str | None, python: str) -> dict:
    """Where distilbench predict ran: this environment, or --runtime-venv's with the packages it holds."""
    if venv is None:
        return {"venv": None, "what": "this environment (everything installed)"}
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    packages = {item["name"].lower(): item["version"] for item in json.loads(listed.stdout)}
    wanted = ("onnxruntime", "openvino", "tokenizers", "numpy", "pandas", "pyarrow", "torch")
    return {"venv": venv, "what": "a runtime install", "packages": {k: packages.get(k) for k in wanted}}


def shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def versus_sentences(report: dict) -> str:
    """Where distilbench predict ran, what --avx2 simulated and could not, and which runs peaked within half the
    pipeline's memory: said under the table here and in render.py's block."""
    environment = report.get("distilbench_environment") or {}
    if environment.get("venv"):
        packages = ", ".join(f"{name} {version}" for name, version in environment["packages"].items() if version)
        said = [f"`distilbench predict` ran in a runtime install ({packages}; no torch), the pipeline beside it."]
    else:
        said = ["`distilbench predict` ran in the development environment (every extra installed)."]
    if report.get("simulated_avx2"):
        settings = " ".join(f"`{k}={v}`" for k, v in report["simulated_avx2"].items())
        said.append(
            f"Every process ran as on an AVX2-only CPU, simulated ({settings}): oneDNN (PyTorch's and OpenVINO's), "
            "ATen and MKL use their AVX2 kernels; ONNX Runtime's ignore these settings, so an `onnx-*` row is not "
            "an AVX2 number."
        )
    pipeline = next(row for row in report["rows"] if row["key"] == "pipeline")
    half = pipeline["peak_rss_mb"] / 2
    within = [row["backend"] for row in report["rows"] if row["key"] != "pipeline" and row["peak_rss_mb"] <= half]
    said.append(
        f"Half the pipeline's peak memory is {half:.0f} MB: "
        f"{', '.join(f'`{name}`' for name in within) or 'no distilbench run'} stayed within it."
    )
    return " ".join(said)


def versus_markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        "# Bulk prediction against transformers.pipeline",
        "",
        f"{report['texts']:,} test texts of {report['test']}, model {report['model']}, whole processes (start-up, "
        f"loading, tokenization, writing labels), {report['threads']} thread(s) each, median of {report['rounds']} "
        f"rounds in alternating order after {report.get('warmup_rounds', 0)} untimed, on {machine['cpu']} "
        f"({machine['cpu_count']} CPUs, flags "
        f"{', '.join(machine['cpu_flags'])}); load average {report['load_average']['start'][0]:.2f} at the start, "
        f"{report['load_average']['end'][0]:.2f} at the end. Agreement: the share of texts with the pipeline's "
        "(torch fp32) label. " + versus_sentences(report),
        "",
        "| way | backend | wall s, median (min-max) | vs pipeline | peak MB | agreement with fp32 | accuracy "
        "| labels changed between rounds |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        s = row["seconds"]
        lines.append(
            f"| {row['way']} | {row['backend']} | {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) | "
            f"{row['speedup_vs_pipeline']:.2f}x | {row['peak_rss_mb']:.0f} | {row['agreement_with_pipeline']:.2%} | "
            f"{row['accuracy']:.4f} | {'yes' if row['labels_changed_between_rounds'] else 'no'} |"
        )
    lines += ["", "Bundles and the guard their export recorded (agreement with fp32 on the calibration texts):", ""]
    for name, bundle in report["bundles"].items():
        guard = bundle["guard"]
        said = (
            f"{guard['agreement_with_fp32']:.2%} on {guard['calibration_texts']} {guard['calibration_source']} "
            f"texts, kept fp32: {', '.join(guard['kept_fp32']) or 'nothing'}"
            if guard
            else "no quantization"
        )
        if bundle.get("export_error"):
            said += f"; not exported: {bundle['export_error']}"
        lines.append(f"- {name} ({bundle.get('backend') or 'not exported'}): {said}")
        if bundle.get("auto"):
            measured = ", ".join(
                f"{key} {found['samples_per_s']:.0f}/s {found['agreement_with_fp32']:.2%}"
                + ("" if found["valid"] else " (refused)")
                for key, found in bundle["auto"]["candidates"].items()
                if "samples_per_s" in found
            )
            lines.append(f"  - auto measured on the checkpoint's validation split: {measured}")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated input sizes")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--backend", default="auto", help="predict's --backend (auto: torch-bf16 where fast)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-rows", type=int, default=4096)
    parser.add_argument("--model", help="a trained checkpoint (default: packaged MiniLM-L6, random head)")
    parser.add_argument("--input-format", choices=["parquet", "csv", "jsonl"], default="parquet")
    parser.add_argument("--results", default=str(RESULTS), help="directory for bulk_predict.json/.md")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--versus-pipeline", action="store_true", help="issue 39's bulk target (see above)")
    parser.add_argument("--test", help="--versus-pipeline: the test split (default: the checkpoint's run's)")
    parser.add_argument("--bundles", default=VERSUS_BUNDLES, help="--versus-pipeline: quantizations to export")
    parser.add_argument("--extra", default="", help="--versus-pipeline: BUNDLE:BACKEND pairs, e.g. fp32:openvino-bf16")
    parser.add_argument("--rounds", type=int, default=5, help="--versus-pipeline: rounds")
    parser.add_argument("--warmup", type=int, default=1, help="--versus-pipeline: untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="--versus-pipeline: OMP_NUM_THREADS of every process")
    parser.add_argument("--runtime-venv", help="--versus-pipeline: run distilbench predict in this runtime install")
    parser.add_argument("--avx2", action="store_true", help="--versus-pipeline: every process on simulated AVX2 only")
    args = parser.parse_args(argv)
    from distilbench.runtime.machine import machine_info

    if args.versus_pipeline or args.smoke:  # the smoke run checks both modes
        code = main_versus(argparse.Namespace(**vars(args)))
        if args.versus_pipeline or code:
            return code

    source = HEADLINES
    if args.smoke:  # 64 rows of the smoke headlines, the smoke checkpoint, one worker, torch-fp32
        _SMOKE.append(True)
        source, args.model, args.rows, args.workers = smoke_data("multiclass"), str(smoke_checkpoint()), "64", "1"
        args.backend, args.no_progress, args.results = "torch-fp32", True, str(results_dir(True))
    headlines = pd.read_csv(source)
    sizes = [int(n) for n in args.rows.split(",")]
    worker_counts = [int(n) for n in args.workers.split(",")]
    model = Path(args.model) if args.model else packaged_model(sorted(headlines["category"].unique()))
    runs = []
    for rows in sizes:
        source = synthetic_input(rows, args.input_format, headlines["text"].astype(str).tolist())
        for workers in worker_counts:
            print(f"predict {rows:,} rows with {workers} worker(s) ...", flush=True)
            run = run_predict(model, source, rows, workers, args)
            print(f"  {run['seconds']:.1f} s, {run['rows_per_s']:.0f} rows/s, peak MB {run['peak_rss_mb']}", flush=True)
            runs.append(run)
            if len(runs) == 1 and max(sizes) > rows:
                estimate = sum(max(sizes) / run["rows_per_s"] for _ in worker_counts) / 60
                print(f"  at this rate the {max(sizes):,}-row runs take about {estimate:.0f} min", flush=True)
    base = {run["rows"]: run["rows_per_s"] for run in runs if run["workers"] == 1}
    for run in runs:
        if run["workers"] > 1 and run["rows"] in base:
            run["speedup"] = run["rows_per_s"] / base[run["rows"]]
    growth = []
    for workers in worker_counts:
        mine = sorted((r for r in runs if r["workers"] == workers), key=lambda r: r["rows"])
        if len(mine) > 1:
            small, large = mine[0], mine[-1]
            growth.append(
                f"{workers} worker(s): peak sum {small['peak_rss_mb']['sum']:.0f} MB at "
                f"{small['rows']:,} rows, {large['peak_rss_mb']['sum']:.0f} MB at {large['rows']:,} rows "
                f"({large['peak_rss_mb']['sum'] / small['peak_rss_mb']['sum']:.2f}x for "
                f"{large['rows'] / small['rows']:.0f}x the rows)"
            )
    report = {
        "model": args.model or "minilm-l6 (packaged, random head)",
        "input_format": args.input_format,
        "batch_size": args.batch_size,
        "chunk_rows": args.chunk_rows,
        "runs": runs,
        "memory_growth": growth,
        "machine": machine_info(),
    }
    write_result(Path(args.results) / "bulk_predict.json", report, markdown(report))
    print(markdown(report))
    return 0


def main_versus(args) -> int:
    """--versus-pipeline: measure, write bulk_vs_pipeline.json and its view (smoke: the smoke checkpoint, its fp32
    bundle, 48 rows, one round, in the smoke folder)."""
    results = Path(args.results)
    if args.smoke:
        test = smoke_dir() / "bulk-vs-pipeline-test.csv"
        pd.read_csv(smoke_data("multiclass")).rename(columns={"category": "label"}).to_csv(test, index=False)
        args.model, args.test, args.bundles, args.extra = str(smoke_checkpoint()), str(test), "fp32", ""
        args.rounds, args.warmup = 1, 0
        results = results_dir(True)
    args.model = args.model or str(VERSUS_MODEL)
    if args.avx2:  # this process too: the stamp and the machine record say what the others ran as
        os.environ.update(AVX2_ONLY)
    report = versus_pipeline(args)
    name = "bulk_vs_pipeline-avx2" if args.avx2 else "bulk_vs_pipeline"
    write_result(results / f"{name}.json", report, versus_markdown(report))
    print(versus_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
