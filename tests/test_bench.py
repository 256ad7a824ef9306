"""`bench` on every kind of machine: backends and peaks from the machine probe, every step short."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from distilbench.benchmarking.bench import BenchOptions, BenchTexts, bench_settings, run_bench
from distilbench.core.console import DistilbenchError
from distilbench.runtime import machine
from distilbench.runtime.auto import candidate_backends

# An AVX2-only CPU, simulated on any x86 CPU (as `make test-avx2` does): the probe reports AVX2 alone, and
# oneDNN and MKL use their AVX2 kernels, so a bf16 product is emulated as there (about 1 GFLOP/s).
AVX2_ONLY = {machine.FLAGS_ENV: "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_default_backends_and_peaks_come_from_the_machine(tiny_bert_dir, monkeypatch):
    monkeypatch.setenv(machine.FLAGS_ENV, "avx2")
    report = run_bench(
        [str(tiny_bert_dir)],
        None,
        source=BenchTexts(texts=["a short text", "another text, longer than that"]),
        options=BenchOptions(samples=8, repeats=1, warmup=1, latency_samples=1, batch_size=4, memory=False),
        show=False,
        progress=False,
    )
    measured = [row["backend"] for row in report["results"]]
    assert measured == candidate_backends("cpu") and "torch-bf16" not in measured
    assert list(report["peaks_flops"]) == ["fp32"]  # no bf16 product where bf16 is emulated
    assert report["machine"]["cpu_native_bf16"] is False


def test_flat_settings_become_the_protocol_the_texts_and_the_rest():
    """The API's and CLI's flat names land in the dataclass that owns them; the rest is left for run_bench."""
    options, source, rest = bench_settings(
        {"samples": 8, "device": "cpu", "data": "d.csv", "label_column": "y", "x": 1}
    )
    assert options == BenchOptions(samples=8, device="cpu")
    assert source == BenchTexts(data="d.csv", label_column="y") and rest == {"x": 1}


def test_a_protocol_out_of_range_stops_before_any_model_loads():
    with pytest.raises(DistilbenchError, match="--samples and --repeats must be at least 1"):
        run_bench(["no/such/model"], ["torch-fp32"], options=BenchOptions(samples=0), show=False, progress=False)


def test_bench_ends_within_seconds_of_sigterm_where_bf16_is_emulated(tiny_bert_dir, tmp_path):
    """An explicitly asked bf16 backend on an AVX2-only CPU: its peak product stays short (a 2048-cube bf16
    product there takes about a minute), so `kill` ends the command within seconds."""
    if not os.path.isdir("/proc/self"):
        pytest.fail("this test reads /proc (Linux)")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distilbench",
            "bench",
            "--models",
            str(tiny_bert_dir),
            "--backends",
            "torch-bf16",
            "--repeats",
            "1000",
            "--samples",
            "8",
            "--batch-size",
            "4",
            "--no-memory",
            "--no-progress",
            "--latency-samples",
            "0",
        ],
        env={**os.environ, **AVX2_ONLY, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "preparing" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
        assert "preparing" in line, process.stderr.read()
        time.sleep(3)  # into the rounds: peak products and forward passes
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM and "terminated (SIGTERM)" in err
    # seconds, interpreter shut-down included (about 2 s on an idle 2-core machine); one 2048-cube bf16
    # product, as measured before, took 17 s and more here
    assert took < 15, f"SIGTERM took {took:.1f} s to end bench"
    assert "no native bf16" in err  # and the user was told why bf16 is slow here


def test_peak_product_is_short_where_bf16_is_emulated():
    """The bf16 peak on a simulated AVX2-only CPU: a product small enough for well under a second."""
    code = (
        "import time, torch; from distilbench.runtime.machine import matmul_peak_flops; t = time.perf_counter(); "
        "rate, size = matmul_peak_flops(torch.bfloat16, seconds=0.1); print(size, rate, time.perf_counter() - t)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **AVX2_ONLY}, capture_output=True, text=True, timeout=300
    )
    size, rate, seconds = result.stdout.split()
    assert int(size) <= 1024 and float(rate) > 0
    assert float(seconds) < 3, f"the emulated bf16 peak took {float(seconds):.1f} s"
