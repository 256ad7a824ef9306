"""The one probe of this machine: CPU model and flags, native precisions, threads, GPU, library versions.

Precision choice, backend candidates, `bench` and the machine facts stored with every result all ask
here, so a CPU is read the same way everywhere. `DISTILBENCH_CPU_FLAGS` (a comma-separated list, e.g.
`avx2`) makes the probe report only those of the real flags: on an AVX-512 or AMX machine it exercises
the choices made for an AVX2-only CPU. To also run the slower kernels, not only choose as if, add
`ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2` (`make test-avx2`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform

import torch

FLAGS_ENV = "DISTILBENCH_CPU_FLAGS"
# The CPU features that decide fast paths: vector width, native bf16 and int8 dot products, AMX; and on
# 64-bit Arm (Features line) the bf16 and int8 matrix extensions.
DECISIVE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8",
                  "asimd", "bf16", "i8mm", "sve")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


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
    """True where the CPU multiplies bf16 matrices natively (AVX512-BF16, AMX, Arm BF16). Elsewhere a bf16
    product is emulated: on an AVX2-only EPYC, 1.3 GFLOP/s against fp32's 30."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_precisions(device: torch.device | str = "cpu") -> list[str]:
    """The precisions this device computes at full speed: fp32 always; bf16 (and fp16 on CUDA) where native."""
    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"] + (["bf16"] if cpu_native_bf16() else [])


def machine_info() -> dict:
    """Where a number was measured: CPU, cores, threads, GPU, library versions."""
    import transformers

    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_native_bf16": cpu_native_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if os.environ.get(FLAGS_ENV) is not None:
        info["cpu_flags_limited_by"] = f"{FLAGS_ENV}={os.environ[FLAGS_ENV]}"
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def machine_fingerprint() -> str:
    """A short hash of what makes one backend faster than another here: CPU, flags, threads, GPU, versions."""
    info = machine_info()
    keys = ("cpu", "cpu_flags", "cpu_count", "torch_threads", "gpu", "torch", "onnxruntime")
    text = json.dumps({k: info.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
