"""The one machine probe: flags, native precisions, the DISTILBENCH_CPU_FLAGS limit, the adaptive peak product."""

from __future__ import annotations

import torch

from distilbench import machine
from distilbench.speed import matmul_peak_flops


def _fake_cpu(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("Fake CPU", frozenset(flags)))


def test_native_bf16_follows_the_flags(monkeypatch):
    monkeypatch.delenv(machine.FLAGS_ENV, raising=False)
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


def test_cpuinfo_is_parsed():
    model, flags = machine._cpuinfo()
    assert model and isinstance(flags, frozenset)


def test_peak_product_stays_short_where_products_are_slow():
    """One product longer than the step limit stops the size from growing: 256 when even that is 'slow'."""
    rate, size = matmul_peak_flops(torch.float32, seconds=0.05, step_limit_s=1e-9)
    assert size == 256 and rate > 0
    rate, size = matmul_peak_flops(torch.float32, max_size=512, seconds=0.05, step_limit_s=10.0)
    assert size == 512 and rate > 0
