"""The one machine probe: flags, native precisions, the DISTILBENCH_CPU_FLAGS limit, the adaptive peak product."""

from __future__ import annotations

import os

import pytest
import torch

from distilbench.runtime import machine
from distilbench.runtime.predict import available_cpus


def _fake_cpu(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("Fake CPU", frozenset(flags)))


def _fake_speedup(monkeypatch, speedup: float) -> list:
    """bf16's peak over fp32's as the probe will measure it; returns the list of the probe's calls."""
    calls = []
    machine._measured_fast_bf16.cache_clear()
    monkeypatch.setattr(machine, "_bf16_speedup", lambda: calls.append(speedup) or speedup)
    return calls


def test_native_bf16_follows_the_flags(monkeypatch, tmp_path):
    monkeypatch.delenv(machine.FLAGS_ENV, raising=False)
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path))
    _fake_speedup(monkeypatch, 8.0)
    _fake_cpu(monkeypatch, {"fpu", "avx2", "avx512f", "avx512_bf16"})
    assert machine.cpu_flags() == ["avx2", "avx512f", "avx512_bf16"]
    assert machine.cpu_native_bf16() and machine.native_precisions("cpu") == ["fp32", "bf16"]
    _fake_cpu(monkeypatch, {"fpu", "avx2", "fma"})  # the AVX2-only EPYC: bf16 is emulated there
    assert not machine.cpu_native_bf16() and machine.native_precisions("cpu") == ["fp32"]
    _fake_cpu(monkeypatch, {"asimd", "bf16", "i8mm"})  # an Arm server with BF16 (Features line)
    assert machine.cpu_native_bf16()


def test_flags_env_reports_fewer_capabilities(monkeypatch):
    _fake_cpu(monkeypatch, {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    monkeypatch.setenv(machine.FLAGS_ENV, "avx2")
    assert machine.cpu_flags() == ["avx2"]
    assert not machine.cpu_native_bf16()
    info = machine.machine_info()
    assert info["cpu_flags"] == ["avx2"] and info["cpu_native_bf16"] is False
    assert info["cpu_flags_limited_by"] == "DISTILBENCH_CPU_FLAGS=avx2"
    limited = machine.machine_fingerprint()
    monkeypatch.setenv(machine.FLAGS_ENV, "avx2,avx512f,avx512_bf16,amx_bf16")
    assert machine.cpu_native_bf16()
    assert machine.machine_fingerprint() != limited  # cached choices are per capability set
    monkeypatch.setenv(machine.FLAGS_ENV, "avx2,sse4_2")  # never more than the CPU has
    assert machine.cpu_flags() == ["avx2"]


def test_bf16_is_chosen_only_where_it_is_measured_faster(monkeypatch, tmp_path):
    """The flags allow bf16, the measurement decides: a CPU with AVX512-BF16 whose bf16 products are slower than
    fp32's trains and infers in fp32; the probe runs once per machine, its answer read from the cache after."""
    from distilbench.runtime.inference import pick_precision

    monkeypatch.delenv(machine.FLAGS_ENV, raising=False)
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path))
    _fake_cpu(monkeypatch, {"avx2", "avx512f", "avx512_bf16"})
    calls = _fake_speedup(monkeypatch, 0.7)  # slower bf16, as on the 2-core Xeon (0.57x, training_precision.md)
    assert machine.cpu_native_bf16()
    assert not machine.cpu_fast_bf16()
    assert machine.native_precisions("cpu") == ["fp32"]
    assert pick_precision("auto", torch.device("cpu")) == "fp32"
    assert pick_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: still given
    assert machine.machine_info()["cpu_fast_bf16"] is False
    assert len(calls) == 1
    machine._measured_fast_bf16.cache_clear()  # a new process on the same machine: the cached answer
    assert not machine.cpu_fast_bf16() and len(calls) == 1
    saved = list((tmp_path / "machine").glob("bf16-*.json"))
    assert len(saved) == 1 and '"speedup": 0.7' in saved[0].read_text()

    _fake_cpu(monkeypatch, {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})  # another machine: measured anew
    calls = _fake_speedup(monkeypatch, 12.0)
    assert machine.cpu_fast_bf16() and pick_precision("auto", torch.device("cpu")) == "bf16"
    assert len(calls) == 1

    _fake_cpu(monkeypatch, {"avx2", "fma"})  # no bf16 instructions: nothing to measure
    calls = _fake_speedup(monkeypatch, 12.0)
    assert not machine.cpu_fast_bf16() and calls == []


def test_the_bf16_probe_measures_this_cpu():
    """The real probe: a positive ratio of two measured peaks, in about a second."""
    import time

    start = time.perf_counter()
    speedup = machine._bf16_speedup()
    assert speedup > 0 and time.perf_counter() - start < 30


def test_cpuinfo_is_parsed():
    model, flags = machine._cpuinfo()
    assert model and isinstance(flags, frozenset)


def test_peak_product_stays_short_where_products_are_slow():
    """One product longer than the step limit stops the size from growing: 256 when even that is 'slow'."""
    rate, size = machine.matmul_peak_flops(torch.float32, seconds=0.05, step_limit_s=1e-9)
    assert size == 256 and rate > 0
    rate, size = machine.matmul_peak_flops(torch.float32, max_size=512, seconds=0.05, step_limit_s=10.0)
    assert size == 512 and rate > 0


def test_parallel_test_workers_share_the_cores_instead_of_each_taking_all():
    """Under pytest-xdist (the suite's default) each worker's torch runs on its share of the CPUs: two workers each
    on every core of a 2-core machine spin against each other, and the suite took longer than the work needs."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers == 1:
        pytest.skip("the suite runs in one process here (-n 0): no workers to share the cores")
    assert torch.get_num_threads() == max(1, available_cpus() // workers)
