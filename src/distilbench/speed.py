"""Size and machine facts recorded with every measurement."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def dir_size_mb(directory: str | Path, pattern: str = "*.safetensors") -> float:
    """Size of the weight files in a checkpoint directory, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in Path(directory).glob(pattern)) / 1e6


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="ignore"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Where a number was measured: CPU, cores, threads, GPU, library versions."""
    import transformers

    from .inference import cpu_has_fast_bf16

    info = {
        "cpu": cpu_model(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return info
