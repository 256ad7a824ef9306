"""Whole-process `distilbench evaluate --backend auto` against `transformers.pipeline`, per kind of CPU.

    .venv/bin/python benchmarks/evaluate_speed.py [--repeats 3] [--machines native,avx2]

1. Fine-tunes minilm-l6 once on the shared headlines (the thesis's split of all 25,000: 18,000 train,
   2,000 validation, 5,000 test; 1 epoch, kept in runs/benchmarks/evaluate-speed; reused when there).
2. For each machine kind, in fresh processes (start-up, loading, reading, tokenization, prediction and
   metrics all counted: the wall time of the process):
   - `native`: this CPU as it is; `avx2`: this CPU as an AVX2-only one (DISTILBENCH_CPU_FLAGS=avx2, and
     oneDNN, ATen and MKL on their AVX2 kernels, so bf16 is emulated as there);
   - the first `evaluate --backend auto` on the machine (calibration and ONNX export included) once;
   - then `--repeats` alternating rounds of: transformers.pipeline (fp32, batch 32, the usual way) and
     `distilbench evaluate --backend auto` (the cached choice);
   - and once each, `evaluate` with every candidate backend named explicitly, so auto's choice can be
     checked against the fastest backend whose accuracy stays within 0.5 points of torch-fp32's.
Writes benchmarks/results/evaluate_speed.{json,md}.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HEADLINES, ROOT, parser, results_dir, smoke_data, smoke_dir, smoke_model, write_result  # noqa: E402

SMOKE = []  # set by --smoke: only torch-fp32 and auto's choice run explicitly
AVX2_ONLY = {
    "DISTILBENCH_CPU_FLAGS": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
PIPELINE = """
import json, sys
import pandas as pd
from transformers import pipeline
model, data = sys.argv[1], sys.argv[2]
frame = pd.read_csv(data)
classifier = pipeline("text-classification", model=model, device="cpu")
predicted = [p["label"] for p in classifier(frame["text"].astype(str).tolist(), batch_size=32, truncation=True)]
print(json.dumps({"accuracy": float((pd.Series(predicted) == frame["label"].astype(str)).mean())}))
"""


def environment(kind: str, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY}
    env.update({"HF_HUB_OFFLINE": "1", "DISTILBENCH_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"})
    if kind == "avx2":
        env.update(AVX2_ONLY)
    return env


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def evaluate(best: Path, test: Path, backend: str, env: dict) -> tuple[float, dict]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    seconds, _ = timed(
        [
            sys.executable,
            "-m",
            "distilbench",
            "evaluate",
            "--model",
            str(best),
            "--data",
            str(test),
            "--label-column",
            "label",
            "--backend",
            backend,
            "--no-progress",
            "--out",
            str(out),
        ],
        env,
    )
    stats = json.loads(out.read_text())
    out.unlink()
    return seconds, stats


def pipeline_run(best: Path, test: Path, env: dict) -> tuple[float, dict]:
    seconds, stdout = timed([sys.executable, "-c", PIPELINE, str(best), str(test)], env)
    return seconds, json.loads(stdout.strip().splitlines()[-1])


AGREEMENT = """
import json, sys
import pandas as pd
from distilbench.runtime.backends import load_backend
from distilbench.core.cache import checkpoint_key
from distilbench.runtime.inference import backend_logits
from distilbench.models.registry import load_trained
best, data, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
texts = pd.read_csv(data)["text"].astype(str).tolist()
model, tokenizer, _, _ = load_trained(best)
predicted = {n: backend_logits(load_backend(model, n, cache_key=checkpoint_key(best)), tokenizer, texts)[0].argmax(1)
             for n in names}
print(json.dumps({n: float((p == predicted["torch-fp32"]).mean()) for n, p in predicted.items()}))
"""


def agreements(best: Path, test: Path, names: list[str], env: dict) -> dict:
    """Each backend's share of test predictions equal to torch-fp32's (untimed; the guard's first criterion)."""
    _, stdout = timed([sys.executable, "-c", AGREEMENT, str(best), str(test), ",".join(names)], env)
    return json.loads(stdout.strip().splitlines()[-1])


def machine_facts(env: dict) -> dict:
    _, stdout = timed(
        [
            sys.executable,
            "-c",
            "import json; from distilbench.runtime.machine import machine_info; print(json.dumps(machine_info()))",
        ],
        env,
    )
    return json.loads(stdout)


def measure(kind: str, best: Path, test: Path, repeats: int, cache: Path) -> dict:
    env = environment(kind, cache)
    shutil.rmtree(cache, ignore_errors=True)
    first_s, first = evaluate(best, test, "auto", env)  # calibrates, exports, caches
    choice = first["backend_choice"]
    print(f"[{kind}] first auto run {first_s:.1f} s: {choice['chosen']} ({choice['reason']})", flush=True)
    pipeline_s, auto_s, accuracy = [], [], {}
    for _ in range(repeats):
        seconds, result = pipeline_run(best, test, env)
        pipeline_s.append(seconds)
        accuracy["pipeline"] = result["accuracy"]
        seconds, stats = evaluate(best, test, "auto", env)
        auto_s.append(seconds)
        accuracy["auto"] = stats["accuracy"]
        print(f"[{kind}] pipeline {pipeline_s[-1]:.1f} s, auto {auto_s[-1]:.1f} s", flush=True)
    explicit = {}
    for name in choice["candidates"] if not SMOKE else dict.fromkeys(["torch-fp32", choice["chosen"]]):
        seconds, stats = evaluate(best, test, name, env)
        explicit[name] = {"seconds": seconds, "accuracy": stats["accuracy"]}
        print(f"[{kind}] {name}: {seconds:.1f} s, accuracy {stats['accuracy']:.4f}", flush=True)
    for name, share in agreements(best, test, list(explicit), env).items():
        explicit[name]["agreement_with_fp32"] = share
    fp32 = explicit["torch-fp32"]["accuracy"]
    # valid as the guard defines it, here on the test split: >= 99 % equal predictions, metric within 0.5 points
    valid = {
        n: e for n, e in explicit.items() if 100 * (fp32 - e["accuracy"]) <= 0.5 and e["agreement_with_fp32"] >= 0.99
    }
    fastest = min(valid, key=lambda n: valid[n]["seconds"])
    return {
        "machine": machine_facts(env),
        "env": {k: env[k] for k in AVX2_ONLY if k in env},
        "texts": first["samples"],
        "first_auto_s": first_s,
        "choice": choice,
        "pipeline_s": pipeline_s,
        "auto_s": auto_s,
        "accuracy": accuracy,
        "explicit": explicit,
        "fastest_valid": fastest,
        "speedup": statistics.median(pipeline_s) / statistics.median(auto_s),
        "auto_vs_fastest": explicit[fastest]["seconds"] / explicit[choice["chosen"]]["seconds"],
    }


def markdown(report: dict) -> str:
    lines = []
    for kind, r in report["kinds"].items():
        m = r["machine"]
        flags = ", ".join(m["cpu_flags"])
        limited = f" restricted to AVX2 ({' '.join(f'{k}={v}' for k, v in r['env'].items())})" if r["env"] else ""
        p, a = r["pipeline_s"], r["auto_s"]
        lines += [
            f"**{kind}**: {m['cpu']} ({flags}){limited}, {m['cpu_count']} cores, torch {m['torch']}, "
            f"onnxruntime {m.get('onnxruntime')}; {r['texts']} test headlines, fine-tuned minilm-l6, whole "
            f"processes, median of {len(p)} alternating runs (min-max).",
            "",
            "| way | seconds | vs pipeline | accuracy | agreement with fp32 |",
            "| --- | --- | --- | --- | --- |",
            f"| transformers.pipeline fp32, batch 32 | {statistics.median(p):.1f} ({min(p):.1f}-{max(p):.1f}) "
            f"| 1.00x | {r['accuracy']['pipeline']:.4f} | |",
            f"| distilbench evaluate --backend auto ({r['choice']['chosen']}) | {statistics.median(a):.1f} "
            f"({min(a):.1f}-{max(a):.1f}) | {r['speedup']:.2f}x | {r['accuracy']['auto']:.4f} | |",
            f"| first auto run on this machine (calibration, ONNX export) | {r['first_auto_s']:.1f} | | | |",
        ]
        for name, e in r["explicit"].items():
            lines.append(
                f"| evaluate --backend {name} (one run) | {e['seconds']:.1f} | "
                f"{statistics.median(p) / e['seconds']:.2f}x | {e['accuracy']:.4f} | "
                f"{e['agreement_with_fp32']:.2%} |"
            )
        refused = {n: c["refused"] for n, c in r["choice"]["candidates"].items() if c.get("refused")}
        lines += [
            "",
            f"auto chose {r['choice']['chosen']}: {r['choice']['reason']}"
            + "".join(f"; {n} refused: {why}" for n, why in refused.items())
            + f". Fastest valid backend in the explicit runs (>= 99 % of test predictions equal to "
            f"fp32's, accuracy within 0.5 points): {r['fastest_valid']}; auto's speed is "
            f"{r['auto_vs_fastest']:.2f}x its speed. Whole-process time includes about 5 s of Python "
            f"imports (torch, transformers, scikit-learn) in every distilbench and pipeline process.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__)
    args_parser.add_argument("--repeats", type=int, default=3)
    args_parser.add_argument("--machines", default="native,avx2")
    args_parser.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks" / "evaluate-speed"))
    args = args_parser.parse_args(argv)
    model, data = "minilm-l6", HEADLINES
    if args.smoke:  # the smoke model trained for one epoch on the smoke headlines; one round, this CPU as it is
        SMOKE.append(True)
        model, data, args.repeats, args.machines = str(smoke_model()), smoke_data("multiclass"), 1, "native"
        args.runs = str(smoke_dir() / "evaluate-speed")
    from distilbench.runs import model_slug

    run = Path(args.runs)
    best = run / "models" / model_slug(model) / "best"
    started = time.perf_counter()
    if not best.exists():
        timed(
            [
                sys.executable,
                "-m",
                "distilbench",
                "train",
                "--model",
                model,
                "--data",
                str(data),
                "--label-column",
                "category",
                "--epochs",
                "1",
                "--no-speed",
                "--backend",
                "torch-fp32",
                "--no-progress",
                "--out",
                str(run),
                "--overwrite",
            ],
            environment("native", run / "cache"),
        )
    test = run / "data" / "test.csv"
    report = {"settings": {k: v for k, v in vars(args).items() if k != "smoke"}, "kinds": {}}
    for kind in args.machines.split(","):
        report["kinds"][kind] = measure(kind, best, test, args.repeats, run / f"cache-{kind}")
    report["wall_s"] = time.perf_counter() - started
    write_result(results_dir(args.smoke) / "evaluate_speed.json", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
