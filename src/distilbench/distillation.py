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
from .training import DistilbenchTrainer, label_loss

log = logging.getLogger(__name__)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      task: str, alpha: float = 0.5, temperature: float = 2.0,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """α · hard loss + (1 − α) · T²-scaled soft loss against the teacher (see the module docstring); the hard
    loss takes the run's label-loss weights (training.loss_weights), the soft loss none."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise DistilbenchError(f"distillation needs 0 <= alpha <= 1 and temperature > 0 "
                               f"(got alpha {alpha}, temperature {temperature})")
    student_logits = student_logits.float()
    teacher_logits = teacher_logits.float()
    t = temperature
    if task not in ("multiclass", "multilabel"):
        raise DistilbenchError(f"unknown task {task!r}")
    hard = label_loss(student_logits, labels, task, class_weights)
    if task == "multiclass":
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t
    else:
        soft = F.binary_cross_entropy_with_logits(student_logits / t, torch.sigmoid(teacher_logits / t)) * t * t
    return alpha * hard + (1.0 - alpha) * soft


class DistillationTrainer(DistilbenchTrainer):
    """The Trainer with the distillation loss where a batch carries the teacher's cached logits."""

    alpha: float = 0.5
    temperature: float = 2.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits", None)
        if teacher_logits is None:  # validation batches: the plain loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = distillation_loss(outputs.logits, teacher_logits, labels, self.task, self.alpha, self.temperature,
                                 self.class_weights)
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
    from .backends import load_backend
    from .inference import backend_logits
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


# ---------------------------------------------------------------------------------------------------
# General distillation (DistilBERT's own objective) on unlabelled text


def _teacher_for_general(teacher: str):
    """(the teacher, a copy of its MLM head) when it has a trained one that maps hidden states to its
    logits, else (its encoder alone, None)."""
    from transformers import AutoModelForMaskedLM

    from .models import _from_pretrained

    mlm, info = _from_pretrained(AutoModelForMaskedLM, teacher, output_loading_info=True)
    prefix = mlm.base_model_prefix
    untrained_head = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    head = None if untrained_head else mlm_head(mlm)
    if head is None:  # the encoder inside is the teacher; no second load from disk
        return getattr(mlm, prefix), None
    return mlm, head


def mlm_head(mlm) -> torch.nn.Module | None:
    """A copy of a masked-LM model's head (its modules after the encoder, in order: BERT's `cls`, RoBERTa's
    and MPNet's `lm_head`, ELECTRA's generator head), checked to turn the encoder's last hidden states into
    the model's own logits; None for a head that works otherwise (then the hidden-state terms alone are used)."""
    import copy

    prefix = mlm.base_model_prefix
    head = torch.nn.Sequential(*[copy.deepcopy(m) for name, m in mlm.named_children() if name != prefix]).eval()
    ids = torch.arange(2 * 7).reshape(2, 7) * 37 % 90 + 5
    was_training = mlm.training
    mlm.eval()
    try:
        with torch.no_grad():
            out = mlm(input_ids=ids, output_hidden_states=True)
            same = torch.allclose(head(out.hidden_states[-1]), out.logits, atol=1e-4, rtol=1e-4)
    except Exception as exc:  # noqa: BLE001 - a head with another call signature
        log.info("the MLM head of %s is not a plain function of hidden states: %s", type(mlm).__name__, exc)
        same = False
    finally:
        mlm.train(was_training)
    return head if same else None


def distill_general(teacher: str, student_spec: str, texts: list[str], out: str | Path, *, epochs: int = 1,
                    batch_size: int = 32, learning_rate: float = 5e-4, max_length: int = 128,
                    temperature: float = 2.0, alpha_ce: float = 5.0, alpha_mlm: float = 2.0, alpha_cos: float = 1.0,
                    alpha_mse: float = 0.0, mlm_probability: float = 0.15, seed: int = 42,
                    precision: str = "auto", device: str = "auto", progress: bool = True) -> dict:
    """Train a student against a pretrained teacher on unlabelled texts with DistilBERT's triple loss.

    α_ce · T² · KL(teacher MLM distribution ‖ student) on masked tokens + α_mlm · MLM loss + α_cos ·
    (1 − cosine) between last hidden states (+ optional α_mse · MSE per mapped layer), with dynamic
    masking (15 %, 80/10/10). A teacher without a trained MLM head (the packaged MiniLM is a sentence
    encoder) uses the hidden-state terms only. Saves OUT/epoch-<n>/ and the final encoder in OUT/.
    """
    import time

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import (
        DataCollatorForLanguageModeling,
        get_linear_schedule_with_warmup,
        set_seed,
    )

    from .inference import autocast_for, pick_precision
    from .machine import pick_device
    from .models import (
        DISTILBENCH_KEY,
        build_student,
        drop_unused_token_types,
        load_tokenizer,
        parse_student_spec,
    )
    from .runs import write_json_atomic
    from .training import save_checkpoint

    spec = parse_student_spec(student_spec)
    if spec is None:
        raise DistilbenchError(f"--student must be a student spec such as student:{teacher}, not '{student_spec}'")
    if not texts:
        raise DistilbenchError("no texts to distil on")
    set_seed(seed)
    device_ = pick_device(device)
    precision = pick_precision(precision, device_)
    teacher_model, head = _teacher_for_general(teacher)  # the student's MLM head starts as the teacher's
    has_mlm = head is not None
    teacher_model.to(device_).eval()
    student_full = build_student(teacher, layers=spec.strategy, kind=spec.kind)
    encoder = getattr(student_full, student_full.base_model_prefix)
    layers = student_full.config.to_dict()[DISTILBENCH_KEY]["teacher_layers"]
    terms = {"ce": alpha_ce if has_mlm else 0.0, "mlm": alpha_mlm if has_mlm else 0.0, "cos": alpha_cos,
             "mse": alpha_mse}
    if not has_mlm:
        say(f"the teacher {teacher} has no trained MLM head: general distillation uses the hidden-state terms "
            f"only (cosine on the last layer{', MSE per mapped layer' if alpha_mse else ''})")
    tokenizer = load_tokenizer(teacher)
    drop_unused_token_types(tokenizer, student_full)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    features = [{"input_ids": ids, "attention_mask": mask}
                for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)  # 80/10/10
    loader = DataLoader(features, batch_size=batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(seed))
    parameters = list(encoder.parameters()) + (list(head.parameters()) if head is not None else [])
    encoder.to(device_).train()
    if head is not None:
        head.to(device_).train()
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, eps=1e-8)
    total = epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.05 * total), total)
    out = Path(out)
    log_rows = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        sums = {name: 0.0 for name in (*terms, "loss")}
        bar = tqdm(loader, desc=f"distill-general epoch {epoch}/{epochs}", disable=not progress, leave=False)
        epoch_start = time.perf_counter()
        for batch in bar:
            batch = {k: v.to(device_) for k, v in batch.items()}
            labels = batch.pop("labels")
            with torch.no_grad(), autocast_for(device_, precision):
                t_out = teacher_model(**batch, output_hidden_states=True)
            with autocast_for(device_, precision):
                s_out = encoder(**batch, output_hidden_states=True)
            values = general_distillation_terms(s_out.hidden_states, t_out.hidden_states, batch["attention_mask"],
                                                layers, labels, temperature,
                                                head(s_out.last_hidden_state).float() if head is not None else None,
                                                t_out.logits.float() if has_mlm else None, alpha_mse > 0)
            loss = sum(terms[k] * values[k] for k in terms if terms[k])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            for k in terms:
                sums[k] += float(values[k].detach())
            sums["loss"] += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        row = {"epoch": epoch, **{k: v / len(loader) for k, v in sums.items()},
               "time_s": time.perf_counter() - epoch_start}
        log_rows.append(row)
        encoder.config.update({DISTILBENCH_KEY: {
            "teacher": teacher, "teacher_layers": layers, "student_kind": spec.kind,
            "general_distillation": {"epochs": epoch, "texts": len(texts), "weights": terms,
                                     "temperature": temperature, "teacher_mlm_head": has_mlm}}})
        save_checkpoint(encoder, tokenizer, out / f"epoch-{epoch}")
        write_json_atomic(out / "distill_log.json", {"teacher": teacher, "student": student_spec,
                                                     "weights": terms, "epochs": log_rows})
        say(f"  distill-general epoch {epoch}: loss {row['loss']:.4f} ("
            + ", ".join(f"{k} {row[k]:.4f}" for k in terms if terms[k]) + f"; {row['time_s']:.1f} s)")
    encoder.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"epochs": log_rows, "weights": terms, "teacher_mlm_head": has_mlm, "out": str(out),
            "time_s": time.perf_counter() - start}


def general_distillation_terms(student_hidden: tuple, teacher_hidden: tuple, attention_mask: torch.Tensor,
                               layers: list[int], labels: torch.Tensor, temperature: float,
                               student_logits: torch.Tensor | None, teacher_logits: torch.Tensor | None,
                               with_mse: bool) -> dict[str, torch.Tensor]:
    """The terms of DistilBERT's loss; hidden states are (embeddings, layer 1, ..., layer N) tuples."""
    zero = student_hidden[-1].new_zeros(()).float()
    keep = attention_mask.bool()
    s_last, t_last = student_hidden[-1].float()[keep], teacher_hidden[-1].float()[keep]
    values = {"cos": 1.0 - F.cosine_similarity(s_last, t_last, dim=-1).mean(), "ce": zero, "mlm": zero, "mse": zero}
    if with_mse:
        values["mse"] = sum(F.mse_loss(student_hidden[i + 1].float()[keep], teacher_hidden[t + 1].float()[keep])
                            for i, t in enumerate(layers)) / len(layers)
    if student_logits is not None and teacher_logits is not None:
        masked = labels != -100
        if masked.any():
            s, t = student_logits[masked], teacher_logits[masked]
            values["ce"] = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                                    reduction="batchmean", log_target=True) * temperature ** 2
            values["mlm"] = F.cross_entropy(s, labels[masked])
    return values
