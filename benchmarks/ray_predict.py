"""Bulk prediction on Ray against local processes: `predict --engine ray` vs `predict --workers N`.

    .venv/bin/python benchmarks/ray_predict.py [--rows 1000000] [--workers 2] [--actors 2]
                                               [--startup-rows 1000] [--backend torch-bf16] [--model DIR]

Input: N headlines of ../shared/data/news-headlines.csv sampled with replacement (seed 0), Parquet in row
groups of 100,000 rows, the same file as benchmarks/bulk_predict.py (written once to runs/benchmarks/bulk/).
Model: the 3-layer student of the headline benchmark (runs/benchmarks/multiclass/models/student-minilm-l6/best,
from benchmarks/thesis_tasks.py) where it exists, else the same architecture (student:minilm-l6: MiniLM's
layers 0, 2, 4) with a random head over the headline categories, saved once (speed does not depend on the
weights). Backend torch-bf16 for both engines by default (`auto` on a random head refuses bf16: its near-tied
probabilities flip), batch 64, chunks of 4,096 rows.

Each run is a fresh `distilbench predict` process, one after another: local with --workers N (Parquet file
out), and --engine ray with --actors N (1 CPU each) on a Ray instance of its own on this machine (Parquet
files out). Reported per run: wall time and rows/s including start-up; the rows/s each command reports after
its start-up; peak memory as the sum of VmHWM over the command's process and all its descendants (sampled
every 0.2 s; for Ray: the driver, GCS, raylet, the actors and the read and write workers; a high-water mark
per process, so the sum is an upper bound, and Ray's object store pages count in every process that maps
them); and start-up overhead: the wall time of the same command on --startup-rows rows. For the scaling
paragraph: the reader's rate alone (readers.iter_texts over the input, one process) and the bytes per row
a cluster moves (texts in, records out). Results: benchmarks/results/ray_predict.{json,md}.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bulk_predict  # noqa: E402 - the same synthetic inputs and memory probe
from common import RESULTS, results_dir, smoke_checkpoint, smoke_data, smoke_dir, write_result  # noqa: E402
from common import parser as common_parser  # noqa: E402

WORK = ROOT / "runs" / "benchmarks" / "ray"
TRAINED_STUDENT = ROOT / "runs" / "benchmarks" / "multiclass" / "models" / "student-minilm-l6" / "best"


def student_model(labels: list[str]) -> tuple[Path, str]:
    """The trained 3-layer student where the headline benchmark left it, else the same architecture with a
    random head, saved once."""
    if (TRAINED_STUDENT / "config.json").exists():
        return TRAINED_STUDENT, "3-layer student of the headline benchmark (trained)"
    path = WORK / "student-minilm-l6-random-head"
    if not (path / "config.json").exists():
        from distilbench.models.registry import load_classifier

        model, tokenizer = load_classifier("student:minilm-l6", "multiclass", labels)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path, "student:minilm-l6 (3 layers of MiniLM-L6), random head"


def run_command(command: list[str], output: Path, rows: int, engine: str) -> dict:
    """One `distilbench predict` in a fresh process: wall time, its own summary, peak memory of its processes."""
    import psutil

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks: dict[int, tuple[str, float]] = {}
    main = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            processes = [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for child in processes:
            peak = bulk_predict.peak_rss_mb(child.pid)
            if peak is not None:
                try:
                    name = child.name()
                except psutil.Error:
                    name = "?"
                peaks[child.pid] = (name, max(peak, peaks.get(child.pid, ("", 0.0))[1]))
        time.sleep(0.2)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{stderr[-3000:]}")
    written = output_rows(output)
    if written != rows:
        raise SystemExit(f"{output} holds {written} rows, not {rows}")
    remove(output)
    summary = [line for line in stdout.strip().splitlines() if " predictions (" in line][-1]
    rate = re.search(r"(\d+) rows/s", summary)
    ray_start = re.search(r"after ([\d.]+) s to start Ray", summary)
    by_name: dict[str, float] = {}
    for name, mb in peaks.values():
        by_name[name] = by_name.get(name, 0.0) + mb
    return {
        "engine": engine,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "reported_rows_per_s": float(rate.group(1)) if rate else None,
        "ray_start_s": float(ray_start.group(1)) if ray_start else None,
        "peak_rss_mb": {
            "sum": sum(mb for _, mb in peaks.values()),
            "processes": len(peaks),
            "largest": max((mb for _, mb in peaks.values()), default=0.0),
            "by_name": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
        },
        "load_average_before": load,
        "summary": summary,
        "command": command,
    }


def output_rows(path: Path) -> int:
    import pyarrow.dataset

    return pyarrow.dataset.dataset(path, format="parquet").count_rows()


def remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def predict_command(engine: str, model: Path, source: Path, output: Path, parallel: int, args) -> list[str]:
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
        "--no-progress",
    ]
    if engine == "local":
        return command + ["--workers", str(parallel)]
    return command + ["--engine", "ray", "--actors", str(parallel), "--cpus-per-actor", "1"]


def reader_rate(source: Path, chunk_rows: int) -> dict:
    """The one reader alone over the input (a Ray read task runs exactly this per file), and the bytes per row
    of the texts a cluster ships to the actors."""
    from distilbench.data.readers import iter_texts

    start = time.perf_counter()
    rows = text_bytes = 0
    for texts in iter_texts(str(source), "text", chunk_rows):
        rows += len(texts)
        text_bytes += sum(len(t.encode("utf-8")) for t in texts)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "text_bytes_per_row": text_bytes / rows}


def record_bytes_per_row(model: Path, source: Path, args) -> float:
    """Bytes per row of the records the actors send to the writers (Arrow, in memory), from 4,096 rows."""
    import tempfile

    from distilbench.data.readers import iter_texts
    from distilbench.runtime.predict import ChunkPredictor

    texts = next(iter_texts(str(source), "text", 4096))
    with tempfile.TemporaryDirectory() as work:
        predictor = ChunkPredictor(str(model), "torch-fp32", "cpu", args.batch_size, None, work)
        import pyarrow as pa

        table = pa.Table.from_pylist(predictor.records(0, texts), schema=predictor.schema)
    return table.nbytes / len(texts)


def markdown(report: dict) -> str:
    lines = [
        "# Bulk prediction: local processes and Ray",
        "",
        f"`distilbench predict` over {report['rows']:,} headlines (Parquet), model {report['model']}, backend "
        f"{report['backend']}, batch {report['batch_size']}, chunks of {report['chunk_rows']} rows, on "
        f"{report['machine']['cpu']} ({report['machine']['cpu_count']} CPUs), Ray {report['ray_version']}. "
        "One fresh process per run; rows/s (wall) includes start-up; peak memory is the sum of VmHWM over "
        "all processes of the command (an upper bound); start-up is the wall time of the same command on "
        f"{report['startup_rows']:,} rows.",
        "",
        "| engine | parallel | rows | wall s | rows/s (wall) | rows/s (after start-up) | peak MB (all processes) "
        "| processes | start-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        start = report["startup"][f"{run['engine']}-{run['parallel']}"]
        lines.append(
            f"| {run['engine']} | {run['parallel']} | {run['rows']:,} | {run['seconds']:.1f} | "
            f"{run['rows_per_s']:,.0f} | {run['reported_rows_per_s'] or 0:,.0f} | "
            f"{run['peak_rss_mb']['sum']:,.0f} | {run['peak_rss_mb']['processes']} | "
            f"{start['seconds']:.1f} |"
        )
    reader = report["reader"]
    ray_run = next((run for run in report["runs"] if run["engine"] == "ray"), {"peak_rss_mb": {"by_name": {}}})
    lines += [
        "",
        f"- The reader alone (one process, the work of one Ray read task per file): "
        f"{reader['rows_per_s']:,.0f} rows/s; texts {reader['text_bytes_per_row']:.0f} bytes per row, "
        f"records {report['record_bytes_per_row']:.0f} bytes per row (Arrow).",
        "- Peak memory by process name, Ray run: "
        + ", ".join(f"{name} {mb:,.0f} MB" for name, mb in list(ray_run["peak_rss_mb"]["by_name"].items())[:6]),
        "",
    ]
    return "\n".join(lines)


def use_smoke_settings(args) -> None:
    """The smoke checkpoint on 64 smoke headlines (16 for the start-up run), the local engine with one worker:
    starting Ray takes longer than a smoke run should (tests/test_ray_predict.py runs the Ray engine)."""
    bulk_predict._SMOKE.append(True)
    args.rows, args.startup_rows, args.workers, args.engines = 64, 16, 1, "local"
    args.model, args.backend, args.results = str(smoke_checkpoint()), "torch-fp32", str(results_dir(True))


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="local predict's --workers")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (1 CPU each)")
    parser.add_argument("--engines", default="local,ray", help="which engines to run, comma-separated (local,ray)")
    parser.add_argument("--startup-rows", type=int, default=1000, help="rows of the start-up runs")
    parser.add_argument("--backend", default="torch-bf16", help="both engines' --backend")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-rows", type=int, default=4096)
    parser.add_argument("--model", help="a checkpoint (default: the 3-layer student, see above)")
    parser.add_argument("--results", default=str(RESULTS), help="directory for ray_predict.json/.md")
    args = parser.parse_args(argv)
    if args.smoke:
        use_smoke_settings(args)
    import pandas as pd
    import ray

    from distilbench.runtime.machine import machine_info

    headlines = pd.read_csv(bulk_predict.HEADLINES if not args.smoke else smoke_data("multiclass"))
    work = WORK if not args.smoke else smoke_dir() / "ray"
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model, model_name = Path(args.model), args.model
    else:
        model, model_name = student_model(sorted(headlines["category"].unique()))
    texts = headlines["text"].astype(str).tolist()
    source = bulk_predict.synthetic_input(args.rows, "parquet", texts)
    small = bulk_predict.synthetic_input(args.startup_rows, "parquet", texts)
    plan = [(engine, args.workers if engine == "local" else args.actors) for engine in args.engines.split(",")]
    startup, runs = {}, []
    for engine, parallel in plan:
        output = work / f"startup-{engine}{'.parquet' if engine == 'local' else ''}"
        print(f"start-up: {engine} x{parallel} on {args.startup_rows:,} rows ...", flush=True)
        startup[f"{engine}-{parallel}"] = run_command(
            predict_command(engine, model, small, output, parallel, args), output, args.startup_rows, engine
        )
        print(f"  {startup[f'{engine}-{parallel}']['seconds']:.1f} s", flush=True)
    for engine, parallel in plan:
        output = work / f"predictions-{engine}{'.parquet' if engine == 'local' else ''}"
        print(f"predict {args.rows:,} rows: {engine} x{parallel} ...", flush=True)
        run = run_command(predict_command(engine, model, source, output, parallel, args), output, args.rows, engine)
        run["parallel"] = parallel
        print(
            f"  {run['seconds']:.1f} s, {run['rows_per_s']:.0f} rows/s, peak MB {run['peak_rss_mb']['sum']:.0f}",
            flush=True,
        )
        runs.append(run)
    print("the reader alone ...", flush=True)
    reader = reader_rate(source, args.chunk_rows)
    report = {
        "rows": args.rows,
        "startup_rows": args.startup_rows,
        "model": model_name,
        "backend": args.backend,
        "batch_size": args.batch_size,
        "chunk_rows": args.chunk_rows,
        "runs": runs,
        "startup": startup,
        "reader": reader,
        "record_bytes_per_row": record_bytes_per_row(model, source, args),
        "ray_version": ray.__version__,
        "machine": machine_info(),
    }
    write_result(Path(args.results) / "ray_predict.json", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
