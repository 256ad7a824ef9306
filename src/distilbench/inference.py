"""Batched inference: length-sorted batches with dynamic padding, optional bf16 autocast."""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from .console import warn


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 where the hardware runs it fast (CUDA with bf16, AVX512-BF16/AMX CPUs), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


_warned_truncation: set[int] = set()  # token limits already warned about in this process


def tokenize_texts(tokenizer, texts: list[str], max_length: int | None) -> dict:
    """Tokenize once, without padding (batches are padded to their own longest text).

    Texts longer than the limit are truncated, with one warning per limit and process: training, testing,
    speed rounds and streamed predictions tokenize again and again, and the user needs to hear it once."""
    limit = max_length or min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    texts = list(texts)
    encoded = tokenizer(texts, truncation=True, max_length=limit, padding=False,
                        return_token_type_ids="token_type_ids" in tokenizer.model_input_names)
    if limit not in _warned_truncation:
        truncated = _count_truncated(tokenizer, texts, encoded, limit)
        if truncated:
            _warned_truncation.add(limit)
            cause = f"to {limit} (--max-length)" if max_length else "(the model's limit; see --max-length)"
            warn(f"{truncated} of {len(texts)} texts are longer than {limit} tokens and were truncated {cause}.")
    return encoded


def _count_truncated(tokenizer, texts: list[str], encoded, limit: int) -> int:
    """How many texts tokenization cut at `limit` tokens. Only texts that reached the limit can have been cut;
    a fast tokenizer keeps what it cut off (Encoding.overflowing), a slow one tokenizes those texts again."""
    at_limit = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) >= limit]
    if not at_limit:
        return 0
    encodings = getattr(encoded, "encodings", None)
    if encodings:
        return sum(1 for i in at_limit if encodings[i].overflowing)
    full = tokenizer([texts[i] for i in at_limit], truncation=False, padding=False, verbose=False)
    return sum(1 for ids in full["input_ids"] if len(ids) > limit)


@torch.inference_mode()
def predict_logits(model, tokenizer, texts: list[str], *, batch_size: int = 32, max_length: int | None = None,
                   device: str | torch.device = "auto", precision: str = "fp32",
                   progress: bool = True, desc: str = "predict") -> tuple[np.ndarray, float]:
    """Logits for `texts` in their original order, and the seconds the forward passes took."""
    device = pick_device(device) if isinstance(device, str) else device
    model.to(device).eval()
    encoded = tokenize_texts(tokenizer, texts, max_length)
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    keys = [k for k in encoded.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    start = time.perf_counter()
    for begin in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        index = order[begin:begin + batch_size]
        batch = tokenizer.pad({k: [encoded[k][i] for i in index] for k in keys}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_for(device, precision):
            logits = model(**batch).logits
        outputs[index] = logits.float().cpu().numpy()
    return outputs, time.perf_counter() - start


def logits_to_probs(task: str, logits: np.ndarray) -> np.ndarray:
    """Softmax for multiclass, sigmoid per label for multilabel."""
    if task == "multiclass":
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def loss_from_logits(task: str, logits: np.ndarray, labels: np.ndarray) -> float:
    """Cross-entropy (multiclass) or BCE-with-logits (multilabel), the training losses."""
    logits_t = torch.tensor(logits, dtype=torch.float32)
    if task == "multiclass":
        return float(torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels).long()))
    targets = torch.tensor(labels, dtype=torch.float32)
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits_t, targets))


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model: torch.nn.Module) -> list[str]:
    """The tokenizer outputs the model uses: token_type_ids only where its encoder takes them."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    prefix = getattr(model, "base_model_prefix", "")
    encoder = getattr(model, prefix, None) if prefix else None
    if isinstance(encoder, torch.nn.Module) and encoder is not model:  # e.g. the thesis head drops token types
        encoder_params = inspect.signature(encoder.forward).parameters
        accepted = {k: v for k, v in accepted.items() if k in encoder_params}
    return [k for k in MODEL_INPUTS if k in accepted]
