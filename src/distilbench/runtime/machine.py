"""The one probe of this machine: CPU model and flags, the precisions it computes fast, its matrix-product peak,
threads, GPU, library versions.

Precision choice, backend candidates, `bench` and the machine facts stored with every result all ask
here, so a CPU is read the same way everywhere. `DISTILBENCH_CPU_FLAGS` (a comma-separated list, e.g.
`avx2`) makes the probe report only those of the real flags: on an AVX-512 or AMX machine it exercises
the choices made for an AVX2-only CPU. To also run the slower kernels, not only choose as if, add
`ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2` (`make test-avx2`).

torch is imported by the functions that measure or name a torch device, not here: an exported bundle reads
the CPU's flags without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from typing import TYPE_CHECKING

import numpy as np

from distilbench.core.cache import cache_dir, exclusive_lock
from distilbench.core.console import DistilbenchError

if TYPE_CHECKING:
    import torch

FLAGS_ENV = "DISTILBENCH_CPU_FLAGS"
# The CPU features that decide fast paths: vector width, native bf16 and int8 dot products, AMX; and on
# 64-bit Arm (Features line) the bf16 and int8 matrix extensions.
DECISIVE_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "bf16",
    "i8mm",
    "sve",
)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# bf16 autocast pays for its casts only where bf16 products are clearly faster than fp32's (cpu_fast_bf16)
BF16_MIN_SPEEDUP = 1.5


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and every flag /proc/cpuinfo lists (x86 'flags', Arm 'Features')."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown", frozenset(flags)


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> list[str]:
    """The decisive CPU flags this machine has, limited to those in DISTILBENCH_CPU_FLAGS where it is set."""
    flags = _cpuinfo()[1]
    limit = os.environ.get(FLAGS_ENV)
    if limit is not None:
        flags = flags & {flag.strip().lower() for flag in limit.split(",") if flag.strip()}
    return [flag for flag in DECISIVE_FLAGS if flag in flags]


def cpu_native_bf16() -> bool:
    """True where the CPU has bf16 instructions (AVX512-BF16, AMX, Arm BF16): the bf16 kernels run. Elsewhere a
    bf16 product is emulated: on an AVX2-only EPYC, 1.3 GFLOP/s against fp32's 30."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def cpu_fast_bf16() -> bool:
    """True where this CPU's bf16 matrix products run at least BF16_MIN_SPEEDUP times as fast as its fp32 ones.

    The flags are needed but not enough: a Xeon with AMX reached 1,851 GFLOP/s in bf16 (bf16_profile.md), but a
    2-core Xeon with AVX512-BF16 and no AMX ran bf16 products at 0.57x fp32's speed and bf16 autocast made its
    training steps 1.30x slower (benchmarks/training_precision.py). So where the flags allow it, the two peaks
    are measured once (about a second) and the answer kept in the cache directory per machine fingerprint: every
    later process, and every process of a distributed run, reads the same answer."""
    if not cpu_native_bf16():
        return False
    return _measured_fast_bf16(machine_fingerprint())


@functools.lru_cache(maxsize=None)
def _measured_fast_bf16(fingerprint: str) -> bool:
    try:
        path = cache_dir() / "machine" / f"bf16-{fingerprint}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
    except (DistilbenchError, OSError):  # no writable cache: measure, keep the answer for this process
        return _bf16_speedup() >= BF16_MIN_SPEEDUP
    with exclusive_lock(path.with_suffix(".lock")):
        try:
            return json.loads(path.read_text())["speedup"] >= BF16_MIN_SPEEDUP
        except (OSError, ValueError, KeyError, TypeError):
            pass
        speedup = _bf16_speedup()
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"speedup": speedup, "cpu": cpu_model(), "flags": cpu_flags()}))
        partial.replace(path)
    return speedup >= BF16_MIN_SPEEDUP


def _bf16_speedup() -> float:
    """bf16's measured matrix-product peak over fp32's on this CPU."""
    import torch

    fp32 = matmul_peak_flops(torch.float32, max_size=1024, seconds=0.3)[0]
    return matmul_peak_flops(torch.bfloat16, max_size=1024, seconds=0.3)[0] / fp32


def matmul_peak_flops(
    dtype: torch.dtype, max_size: int = 2048, seconds: float = 1.0, device: str = "cpu", step_limit_s: float = 0.5
) -> tuple[float, int]:
    """The machine's measured square matrix-product throughput (FLOP/s) in `dtype` with torch, the MFU
    denominator, and the size it was measured at (_product_peak's protocol)."""
    import torch

    def random_pair(size: int):
        return (torch.randn(size, size, device=device).to(dtype) for _ in range(2))

    def product(a, b) -> None:
        torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()

    return _product_peak(random_pair, product, max_size, seconds, step_limit_s)


def numpy_matmul_peak_flops(max_size: int = 2048, seconds: float = 1.0, step_limit_s: float = 0.5) -> tuple[float, int]:
    """The CPU's fp32 square matrix-product throughput (FLOP/s) with numpy's BLAS, and its size: the MFU
    denominator of a bench that loads no torch (exported bundles, light models). The same protocol as
    matmul_peak_flops, another library's kernels: bench.json's `peak_library` says which."""
    rng = np.random.default_rng(0)

    def random_pair(size: int):
        return (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))

    return _product_peak(random_pair, np.matmul, max_size, seconds, step_limit_s)


def _product_peak(random_pair, product, max_size: int, seconds: float, step_limit_s: float) -> tuple[float, int]:
    """The 90th percentile of `seconds` of square products (FLOP/s), and their size.

    The size doubles from 256 up to `max_size` only while one product stays under `step_limit_s`: where a
    precision is emulated (bf16 on an AVX2-only CPU: about 1 GFLOP/s, a minute for one 2048-cube product)
    the measurement stays short, and Ctrl-C or SIGTERM, handled between products, ends it within a second.
    """

    def one_product(a, b) -> float:
        start = time.perf_counter()
        product(a, b)
        return time.perf_counter() - start

    size = 256
    while True:
        a, b = random_pair(size)
        took = min(one_product(a, b) for _ in range(2))  # the first call also pays for kernel choice
        if size * 2 > max_size or took * 8 > step_limit_s:  # the next size costs about 8x
            break
        size *= 2
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        rates.append(2 * size**3 / one_product(a, b))
    return float(np.percentile(rates, 90)), size  # near the best sustained rate, not a lucky outlier


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_precisions(device: torch.device | str = "cpu") -> list[str]:
    """The precisions this device computes at full speed: fp32 always; on CUDA fp16, and bf16 where the GPU has
    it; on a CPU bf16 where it is measured faster than fp32 (cpu_fast_bf16)."""
    import torch

    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"] + (["bf16"] if cpu_fast_bf16() else [])


def machine_info(with_torch: bool = True) -> dict:
    """Where a number was measured: CPU, cores, threads, GPU, library versions. `with_torch` False (numbers that
    ran no torch: a bench of exported bundles) imports neither torch nor transformers, and leaves out what only
    they tell: torch's threads, the GPU, the measured bf16 speed and their versions."""
    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_native_bf16": cpu_native_bf16(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    if with_torch:
        import torch
        import transformers

        info.update(
            cpu_fast_bf16=cpu_fast_bf16(),
            torch_threads=torch.get_num_threads(),
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            torch=torch.__version__,
            transformers=transformers.__version__,
        )
    if os.environ.get(FLAGS_ENV) is not None:
        info["cpu_flags_limited_by"] = f"{FLAGS_ENV}={os.environ[FLAGS_ENV]}"
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def machine_fingerprint() -> str:
    """A short hash of what makes one backend or precision faster than another here: CPU, flags, threads, GPU,
    versions."""
    import torch

    try:
        import onnxruntime

        onnx_version = onnxruntime.__version__
    except ImportError:
        onnx_version = None
    facts = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": onnx_version,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
