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
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, RESULTS, ROOT, results_dir, smoke_checkpoint, smoke_data, smoke_dir, write_result  # noqa: E402
from common import parser as common_parser

WORK = ROOT / "runs" / "benchmarks" / "bulk"
ROW_GROUP_ROWS = 100_000


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


def run_predict(model: Path, source: Path, rows: int, workers: int, args) -> dict:
    """One `distilbench predict` in a fresh process: wall time, its own rows/s, peak memory of its processes."""
    import psutil

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
        raise SystemExit(f"distilbench predict failed ({process.returncode}): {' '.join(command)}")
    import pyarrow.parquet as pq

    written = pq.ParquetFile(output).metadata.num_rows
    if written != rows:
        raise SystemExit(f"{output} holds {written} rows, not {rows}")
    output.unlink()
    summary = stdout.strip().splitlines()[-1]
    match = re.search(r"\((\S+), .*?(\d+) rows/s\)", summary)
    others = [mb for pid, mb in peaks.items() if pid != process.pid]
    return {
        "rows": rows,
        "workers": workers,
        "backend": match.group(1) if match else args.backend,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "predict_rows_per_s": float(match.group(2)) if match else None,
        "peak_rss_mb": {
            "main": peaks.get(process.pid),
            "largest_child": max(others) if others else None,
            "children": len(others),
            "sum": sum(peaks.values()),
        },
        "load_average_before": load,
        "summary": summary,
    }


def markdown(report: dict) -> str:
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
    args = parser.parse_args(argv)
    from distilbench.runtime.machine import machine_info

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


if __name__ == "__main__":
    sys.exit(main())
