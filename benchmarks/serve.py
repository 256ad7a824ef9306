"""The README's serving numbers: `distilbench serve` under load, micro-batching on and off.

    .venv/bin/python benchmarks/serve.py [--model CHECKPOINT] [--clients 32] [--duration 20] [--repeats 3]

The service runs in its own process (`distilbench serve --port 0`, restarted for every measurement);
this process runs --clients concurrent HTTP clients on loopback (one keep-alive connection each; a
minimal HTTP/1.1 client on asyncio streams by default, as httpx costs ~1 ms of CPU per request on the
same 2 cores as the server; `--client httpx` uses httpx),
each sending one headline of ../shared/data/news-headlines.csv per request, the next as soon as the
answer arrives, for --warmup seconds (not counted) and then --duration seconds. Modes alternate
within a repeat (on/off, then off/on), so drift hits both alike. Per mode: requests/s (median,
min-max over repeats), latency p50/p95/p99 over all measured requests, errors (non-200 answers or
failed connections; must be 0) and the mean texts per forward pass from the server's /metadata.

The default model is the 3-layer student of benchmarks/thesis_tasks.py
(runs/benchmarks/multiclass/models/student-minilm-l6/best); any checkpoint works, since its weights
do not change the speed. Both processes share this machine's cores, as a sidecar client would.
Results: benchmarks/results/serve.{json,md}.
"""

import asyncio
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, ROOT, results_dir, smoke_checkpoint, smoke_data, write_result  # noqa: E402
from common import parser as common_parser

DEFAULT_MODEL = ROOT / "runs" / "benchmarks" / "multiclass" / "models" / "student-minilm-l6" / "best"
MODES = {"batching on": [], "batching off": ["--no-batching"]}


class Service:
    """`distilbench serve` in a subprocess on a free loopback port."""

    def __init__(self, model: str, backend: str, extra: list[str]):
        command = [
            sys.executable,
            "-m",
            "distilbench",
            "serve",
            "--model",
            model,
            "--backend",
            backend,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()  # "serving ... at http://127.0.0.1:PORT ..."
        match = re.search(r"at (http://\S+:\d+)", line)
        if not match:
            self.stop()
            raise SystemExit(f"the service did not start (exit {self.process.returncode}): {line.strip()}")
        self.url = match.group(1)
        self.banner = line.strip()
        httpx.get(f"{self.url}/health", timeout=60).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # uvicorn's graceful shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def client_loop(
    url: str, texts: list[str], offset: int, start: float, end: float, latencies: list[float], errors: list[str]
) -> None:
    """One client: one text per request, the next as soon as the answer is in; counts what falls in [start, end)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        i = offset
        while (sent := time.perf_counter()) < end:
            text = texts[i % len(texts)]
            i += 1
            try:
                response = await client.post("/predict", json={"texts": [text]})
                ok = response.status_code == 200 and len(response.json()["predictions"]) == 1
                problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            if sent >= start and done <= end:
                latencies.append(done - sent)
                if problem:
                    errors.append(problem)


async def raw_client_loop(
    url: str, texts: list[str], offset: int, start: float, end: float, latencies: list[float], errors: list[str]
) -> None:
    """client_loop over a bare keep-alive HTTP/1.1 connection: a tenth of httpx's CPU per request, which
    matters when client and server share two cores (httpx spends about 1 ms per request here)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    i = offset
    try:
        while (sent := time.perf_counter()) < end:
            body = json.dumps({"texts": [texts[i % len(texts)]]}).encode()
            i += 1
            try:
                writer.write(
                    b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
                payload = await reader.readexactly(length)
                ok = head.startswith(b"HTTP/1.1 200") and len(json.loads(payload)["predictions"]) == 1
                problem = None if ok else f"{head.splitlines()[0].decode()}: {payload[:200].decode()}"
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                AttributeError,
                ValueError,
                KeyError,
            ) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
            done = time.perf_counter()
            if sent >= start and done <= end:
                latencies.append(done - sent)
                if problem:
                    errors.append(problem)
    finally:
        writer.close()


async def load(url: str, texts: list[str], clients: int, warmup: float, duration: float, kind: str) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + warmup
    end = start + duration
    offsets = [k * len(texts) // clients for k in range(clients)]
    loop_of = raw_client_loop if kind == "raw" else client_loop
    await asyncio.gather(*(loop_of(url, texts, o, start, end, latencies, errors) for o in offsets))
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / duration,
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "latencies_ms": ms.tolist(),
    }


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(model: str, backend: str, extra: list[str], texts: list[str], args) -> dict:
    """One run against a fresh server; CPU seconds of both processes cover warm-up and measurement."""
    server_cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    options = [*extra, "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    service = Service(model, backend, options + (["--threads", str(args.threads)] if args.threads else []))
    try:
        client_cpu = cpu_seconds(resource.RUSAGE_SELF)
        result = asyncio.run(load(service.url, texts, args.clients, args.warmup, args.duration, args.client))
        result["client_cpu_s"] = cpu_seconds(resource.RUSAGE_SELF) - client_cpu
        stats = httpx.get(f"{service.url}/metadata").json()["stats"]
        result["texts_per_forward"] = stats["texts"] / max(stats["forward_passes"], 1)
        result["server"] = service.banner
    finally:
        service.stop()
    result["server_cpu_s"] = cpu_seconds(resource.RUSAGE_CHILDREN) - server_cpu  # includes loading the model
    return result


def summarise(runs: list[dict]) -> dict:
    rates = [r["requests_per_s"] for r in runs]
    ms = np.concatenate([r["latencies_ms"] for r in runs]) if any(r["latencies_ms"] for r in runs) else np.zeros(1)
    return {
        "requests_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
        "latency_ms": {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)},
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "error_examples": sorted({e for r in runs for e in r["error_examples"]})[:5],
        "texts_per_forward": statistics.median(r["texts_per_forward"] for r in runs),
        "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in runs],
    }


def markdown(report: dict) -> str:
    s = report["settings"]
    out = [
        f"`distilbench serve` on loopback: {s['clients']} concurrent {s['client']} clients, one headline per "
        f"request, "
        f"{s['duration_s']:g} s measured after {s['warmup_s']:g} s warm-up, {s['repeats']} repeat(s) per mode; "
        f"model `{s['model']}`, backend {s['backend']}; batching on = up to {s['max_batch_size']} texts / "
        f"{s['max_wait_ms']:g} ms wait. CPU: {report['machine']['cpu']} ({report['machine']['cpu_count']} "
        f"cores, shared by server and clients).",
        "",
        "| mode | requests/s (median, min-max) | p50 ms | p95 ms | p99 ms | errors | texts per forward |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, row in report["modes"].items():
        rate, lat = row["requests_per_s"], row["latency_ms"]
        out.append(
            f"| {mode} | {rate['median']:.1f} ({rate['min']:.1f}-{rate['max']:.1f}) | {lat['p50']:.1f} | "
            f"{lat['p95']:.1f} | {lat['p99']:.1f} | {row['errors']} | {row['texts_per_forward']:.1f} |"
        )
    out += ["", f"Micro-batching serves **{report['speedup']:.2f}x** the requests/s of one request per forward pass."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--backend", default="auto", help="the server's --backend (auto)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: bare keep-alive HTTP/1.1 over asyncio streams (light); httpx: httpx.AsyncClient",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode, alternating (3)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="the server's --threads (default: its own default)")
    parser.add_argument("--out", default="serve", help="results name in benchmarks/results/ (serve)")
    args = parser.parse_args(argv)
    headlines = HEADLINES
    if args.smoke:  # the smoke checkpoint, 2 clients, 1 s per mode
        headlines, args.model, args.backend = smoke_data("multiclass"), str(smoke_checkpoint()), "torch-fp32"
        args.clients, args.duration, args.warmup, args.repeats = 2, 1.0, 0.5, 1
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"no checkpoint at {args.model}: run benchmarks/thesis_tasks.py or pass --model DIR")
    if not Path(headlines).is_file():
        raise SystemExit(f"headlines not found at {headlines}")

    from distilbench.runtime.machine import machine_info

    texts = pd.read_csv(headlines)["text"].astype(str).sample(frac=1.0, random_state=0).tolist()
    runs = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        order = list(MODES) if repeat % 2 == 0 else list(reversed(MODES))
        for mode in order:
            result = measure(args.model, args.backend, MODES[mode], texts, args)
            runs[mode].append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} {mode}: {result['requests_per_s']:.1f} requests/s, "
                f"p50 {np.percentile(result['latencies_ms'] or [0], 50):.1f} ms, {result['errors']} errors, "
                f"{result['texts_per_forward']:.1f} texts per forward, CPU s: client {result['client_cpu_s']:.1f} "
                f"server {result['server_cpu_s']:.1f}",
                flush=True,
            )
    modes = {mode: summarise(results) for mode, results in runs.items()}
    report = {
        "settings": {
            "model": args.model,
            "backend": args.backend,
            "clients": args.clients,
            "client": args.client,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "threads": args.threads,
        },
        "machine": machine_info(),
        "modes": modes,
        "speedup": modes["batching on"]["requests_per_s"]["median"]
        / max(modes["batching off"]["requests_per_s"]["median"], 1e-9),
    }
    write_result(results_dir(args.smoke) / f"{args.out}.json", report, markdown(report))
    print(markdown(report))
    return 1 if any(row["errors"] for row in modes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
