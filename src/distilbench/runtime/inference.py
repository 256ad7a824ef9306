"""The one inference loop's torch parts: precision choice, autocast and the training losses. The loop itself
(tokenize once, sort by length, pad per batch, run a backend; logits to probabilities) lives in batching.py,
which imports no torch, and is imported from here too."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from distilbench.runtime.batching import (  # noqa: F401 (the loop's callers import it from here too)
    PADDING_OFFSET_TYPES,
    _count_truncated,
    _warned_cap,
    _warned_truncation,
    backend_logits,
    logits_to_probs,
    loss_from_logits,
    max_positions,
    padded_batches,
    token_limit,
    tokenize_texts,
)
from distilbench.runtime.machine import cpu_fast_bf16


def pick_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 where the hardware runs it fast (CUDA with bf16; a CPU whose bf16 products are measured
    faster than fp32's, machine.cpu_fast_bf16), fp16 on other GPUs, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_fast_bf16() else "fp32"


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()
