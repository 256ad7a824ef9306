"""Task-specific distillation: the student learns from the labels and from the fine-tuned teacher's outputs.

loss = α · hard-label loss + (1 − α) · soft loss, where the soft loss is
  multiclass: T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))        (Hinton et al., 2015)
  multilabel: T² · BCE(sigmoid(z_s / T), sigmoid(z_t / T))         (per label, tempered)
The teacher's logits are computed once per training text, cached in the run directory, and fed to
the student with its batches: the teacher never runs during the student's epochs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .console import DistilbenchError, say
from .training import DistilbenchTrainer

log = logging.getLogger(__name__)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      task: str, alpha: float = 0.5, temperature: float = 2.0) -> torch.Tensor:
    """α · hard loss + (1 − α) · T²-scaled soft loss against the teacher (see the module docstring)."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise DistilbenchError(f"distillation needs 0 <= alpha <= 1 and temperature > 0 "
                               f"(got alpha {alpha}, temperature {temperature})")
    student_logits = student_logits.float()
    teacher_logits = teacher_logits.float()
    t = temperature
    if task == "multiclass":
        hard = F.cross_entropy(student_logits, labels.long())
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t
    elif task == "multilabel":
        hard = F.binary_cross_entropy_with_logits(student_logits, labels.float())
        soft = F.binary_cross_entropy_with_logits(student_logits / t, torch.sigmoid(teacher_logits / t)) * t * t
    else:
        raise DistilbenchError(f"unknown task {task!r}")
    return alpha * hard + (1.0 - alpha) * soft


class DistillationTrainer(DistilbenchTrainer):
    """The Trainer with the distillation loss where a batch carries the teacher's cached logits."""

    task: str = "multiclass"
    alpha: float = 0.5
    temperature: float = 2.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits", None)
        if teacher_logits is None:  # validation batches: the plain loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = distillation_loss(outputs.logits, teacher_logits, labels, self.task, self.alpha, self.temperature)
        if model.training:
            self.loss_sum += float(loss.detach())
            self.loss_count += 1
        return (loss, outputs) if return_outputs else loss


def teacher_logits_for(teacher_dir: Path, texts: list[str], cache: Path, *, batch_size: int = 64,
                       max_length: int | None = None, progress: bool = True) -> np.ndarray:
    """The fine-tuned teacher's logits for `texts`, computed once and cached in `cache` (.npy).

    The cache is reused only when it holds one row per text and was made from the same texts.
    fp32 on purpose: soft targets should not carry reduced-precision rounding.
    """
    from .backends import backend_logits, load_backend
    from .models import load_trained
    from .runs import write_bytes_atomic

    fingerprint = _fingerprint(texts, max_length)
    meta = cache.with_suffix(".txt")
    if cache.is_file() and meta.is_file() and meta.read_text().strip() == fingerprint:
        logits = np.load(cache)
        if len(logits) == len(texts):
            log.info("teacher logits from cache %s", cache)
            return logits
    model, tokenizer, _, _ = load_trained(teacher_dir)
    say(f"  computing the teacher's outputs once for {len(texts)} training texts ({teacher_dir})")
    logits, _ = backend_logits(load_backend(model, "torch-fp32"), tokenizer, texts, batch_size=batch_size,
                               max_length=max_length, progress=progress, desc="teacher outputs")
    import io

    buffer = io.BytesIO()
    np.save(buffer, logits.astype(np.float32))
    write_bytes_atomic(cache, buffer.getvalue())
    write_bytes_atomic(meta, fingerprint.encode())
    return logits


def _fingerprint(texts: list[str], max_length: int | None) -> str:
    import hashlib

    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "replace") + b"\0")
    return f"{digest.hexdigest()} max_length={max_length}"
