"""Task-specific distillation: the student learns from the labels and from the fine-tuned teacher's outputs.

loss = α · hard-label loss + (1 − α) · soft loss, where the soft loss is
  multiclass: T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))        (Hinton et al., 2015)
  multilabel: T² · BCE(sigmoid(z_s / T), sigmoid(z_t / T))         (per label, tempered)
The teacher's logits are computed once per training text, cached in the run directory, and fed to
the student with its batches: the teacher never runs during the student's epochs, unless
intermediate-layer losses are on (TinyBERT, Jiao et al., 2020):
  + w_hidden · mean over mapped layers (and the embeddings) of MSE(student state, teacher state)
  + w_attention · mean over mapped layers of the squared distance between attention distributions,
with student layer i mapped to teacher layer teacher_layers[i] (the layers it was cut from). More text
than is labelled helps most: texts without labels (--unlabeled) and masked copies of the training texts
(--augment mask) get the soft and intermediate losses only, with the teacher's logits on them cached too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distilbench.config import ExperimentConfig
from distilbench.core.console import DistilbenchError, say
from distilbench.training.trainer import DistilbenchTrainer, label_loss

log = logging.getLogger(__name__)


MASK_PROBABILITY = 0.15  # --augment mask: share of the words replaced by the mask token (BERT's masking rate)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    alpha: float = 0.5,
    temperature: float = 2.0,
    class_weights: torch.Tensor | None = None,
    labelled: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """α · hard loss + (1 − α) · T²-scaled soft loss against the teacher (see the module docstring); the hard
    loss takes the run's label-loss weights (trainer.loss_weights) and label smoothing, the soft loss neither.
    `labelled`: which rows have labels (unlabelled texts and augmented copies do not); the hard loss is the mean
    over those alone."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise DistilbenchError(
            f"distillation needs 0 <= alpha <= 1 and temperature > 0 (got alpha {alpha}, temperature {temperature})"
        )
    student_logits = student_logits.float()
    teacher_logits = teacher_logits.float()
    t = temperature
    if task not in ("multiclass", "multilabel"):
        raise DistilbenchError(f"unknown task {task!r}")
    if labelled is None:
        hard = label_loss(student_logits, labels, task, class_weights, smoothing)
    else:
        keep = labelled.bool()
        hard = (
            label_loss(student_logits[keep], labels[keep], task, class_weights, smoothing)
            if keep.any()
            else student_logits.new_zeros(())
        )
    if task == "multiclass":
        soft = (
            F.kl_div(
                F.log_softmax(student_logits / t, dim=-1),
                F.log_softmax(teacher_logits / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            )
            * t
            * t
        )
    else:
        soft = F.binary_cross_entropy_with_logits(student_logits / t, torch.sigmoid(teacher_logits / t)) * t * t
    return alpha * hard + (1.0 - alpha) * soft


class DistillationTrainer(DistilbenchTrainer):
    """The Trainer with the distillation loss where a batch carries the teacher's cached logits; with
    `teacher` set and a hidden/attention weight above 0, the teacher also runs on each training batch for
    the intermediate-layer losses on `layers` (student layer i -> teacher layer layers[i])."""

    alpha: float = 0.5
    temperature: float = 2.0
    teacher: torch.nn.Module | None = None
    layers: list[int] | None = None
    hidden_weight: float = 0.0
    attention_weight: float = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits", None)
        labelled = inputs.pop("labelled", None)
        if teacher_logits is None:  # validation batches: the plain loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        hidden, attention = (
            self.teacher is not None and self.hidden_weight > 0,
            self.teacher is not None and self.attention_weight > 0,
        )
        extra = {"output_hidden_states": True} if hidden else {}
        if attention:
            extra["output_attentions"] = True
        outputs = model(**inputs, **extra)
        loss = distillation_loss(
            outputs.logits,
            teacher_logits,
            labels,
            self.task,
            self.alpha,
            self.temperature,
            self.class_weights,
            labelled,
            self.label_smoothing if model.training else 0.0,
        )
        if hidden or attention:
            with torch.no_grad():
                t_out = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **extra)
            mask = inputs["attention_mask"]
            if hidden:
                loss = loss + self.hidden_weight * hidden_state_loss(
                    _required(outputs, "hidden_states"), t_out.hidden_states, mask, self.layers
                )
            if attention:
                loss = loss + self.attention_weight * attention_loss(
                    _required(outputs, "attentions"), t_out.attentions, mask, self.layers
                )
        if model.training:
            self.loss_sum += float(loss.detach())
            self.loss_count += 1
        return (loss, outputs) if return_outputs else loss


def _required(outputs, name: str):
    value = getattr(outputs, name, None)
    if value is None:
        raise DistilbenchError(
            f"the student's model returns no {name.replace('_', ' ')}, which the intermediate-"
            f"layer losses need; its head does not pass them through"
        )
    return value


def hidden_state_loss(
    student_hidden: tuple,
    teacher_hidden: tuple,
    attention_mask: torch.Tensor,
    layers: list[int],
    embeddings: bool = True,
) -> torch.Tensor:
    """Mean over mapped layers of MSE(student layer i's output, teacher layer layers[i]'s) on real tokens
    (TinyBERT's hidden-state loss); with `embeddings`, the embedding outputs are one more pair. Hidden states
    are (embeddings, layer 1, ..., layer N) tuples, as transformers returns them."""
    keep = attention_mask.bool()
    pairs = [(i + 1, t + 1) for i, t in enumerate(layers)]
    if embeddings:
        pairs.insert(0, (0, 0))
    total = student_hidden[-1].new_zeros(()).float()
    for s, t in pairs:
        student, teacher = student_hidden[s].float()[keep], teacher_hidden[t].float()[keep]
        if student.shape[-1] != teacher.shape[-1]:
            raise DistilbenchError(
                f"the student's hidden states are {student.shape[-1]} wide and the teacher's "
                f"{teacher.shape[-1]}: hidden-state distillation needs a student of the "
                f"teacher's width (one cut from its layers)"
            )
        total = total + F.mse_loss(student, teacher)
    return total / len(pairs)


def attention_loss(
    student_attentions: tuple, teacher_attentions: tuple, attention_mask: torch.Tensor, layers: list[int]
) -> torch.Tensor:
    """Mean over mapped layers of the squared L2 distance between the student's and the teacher's attention
    distributions, per head and real query token (TinyBERT's attention MSE, on probabilities: transformers
    returns those; summed over keys, so the value does not shrink with the text's length)."""
    keep = attention_mask.bool()
    total = student_attentions[0].new_zeros(()).float()
    for i, t in enumerate(layers):
        student, teacher = student_attentions[i].float(), teacher_attentions[t].float()  # (batch, heads, q, k)
        if student.shape != teacher.shape:
            raise DistilbenchError(
                f"the student's attention maps {tuple(student.shape[1:2])} heads do not match "
                f"the teacher's {tuple(teacher.shape[1:2])}: attention distillation needs the "
                f"teacher's number of heads"
            )
        distance = ((student - teacher) ** 2).sum(-1)  # (batch, heads, q); padded keys are 0 in both
        total = total + distance.permute(0, 2, 1)[keep].mean()
    return total / len(layers)


def mapped_teacher_layers(student, teacher) -> list[int]:
    """The teacher layer each student layer was cut from (its config's distilbench origin), checked against
    the teacher: the mapping of the intermediate-layer losses."""
    from distilbench.models.registry import DISTILBENCH_KEY, describe

    origin = student.config.to_dict().get(DISTILBENCH_KEY) or {}
    if not origin and hasattr(student.config, "encoder"):  # the thesis head keeps it on its encoder's config
        origin = (student.config.encoder or {}).get(DISTILBENCH_KEY) or {}
    layers = origin.get("teacher_layers")
    if not layers:
        raise DistilbenchError(
            "--distill-hidden/--distill-attention need a student cut from its teacher's layers "
            "(student:<teacher>[:layers] or a distill-general output), whose config names them"
        )
    s, t = describe(student.config), describe(teacher.config)
    if max(layers) >= t["layers"] or len(layers) != s["layers"]:
        raise DistilbenchError(
            f"the student was cut from teacher layers {layers}, which do not fit this teacher "
            f"({t['layers']} layers) and student ({s['layers']} layers)"
        )
    if s["hidden_size"] != t["hidden_size"]:
        raise DistilbenchError(
            f"the student is {s['hidden_size']} wide and the teacher {t['hidden_size']}: "
            f"intermediate-layer distillation needs a student of the teacher's width"
        )
    return list(layers)


def use_eager_attention(model) -> None:
    """Attention maps are returned by the eager implementation only (SDPA fuses them away)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        model.config._attn_implementation = "eager"


def unlabeled_texts(source: str, column: str, splits: dict, seed: int) -> list[str]:
    """--unlabeled: the texts of any data source (the one reader), without the texts of the validation and
    test splits (they would leak the held-out examples' teacher outputs into training) and of the training
    split (labelled already); each removal is counted aloud. Compared after collapsing whitespace, ignoring case."""
    from distilbench.data.readers import read_texts

    texts = read_texts(source, column, None, seed)
    key = lambda text: " ".join(str(text).split()).casefold()  # noqa: E731
    held = {key(t) for name in ("val", "test") for t in splits[name]["text"]}
    train = {key(t) for t in splits["train"]["text"]}
    kept, leaked, labelled, seen = [], 0, 0, set()
    for text in texts:
        k = key(text)
        if k in held:
            leaked += 1
        elif k in train:
            labelled += 1
        elif k not in seen:
            seen.add(k)
            kept.append(text)
    repeated = len(texts) - len(kept) - leaked - labelled
    if leaked:
        say(f"  --unlabeled: removed {leaked} texts that are in the validation or test split (they would leak)")
    if labelled or repeated:
        say(f"  --unlabeled: removed {labelled} texts of the training split and {repeated} repeats")
    if not kept:
        raise DistilbenchError(
            f"--unlabeled {source}: no texts are left once those of the training, validation and "
            f"test splits are removed"
        )
    return kept


def masked_copies(
    texts: list[str], mask_token: str | None, copies: int, seed: int, probability: float = MASK_PROBABILITY
) -> list[str]:
    """--augment mask: `copies` versions of each text (all first copies, then all second ...) with each word
    replaced by the tokenizer's mask token with `probability` (at least one word per text of two or more),
    drawn from `seed` alone; the number of words and the order of the texts are kept."""
    if not mask_token:
        raise DistilbenchError("--augment mask needs a tokenizer with a mask token; this one has none")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            hit = rng.random(len(words)) < probability
            if len(words) > 1 and not hit.any():
                hit[rng.integers(len(words))] = True
            out.append(" ".join(mask_token if h else w for w, h in zip(words, hit)))
    return out


def teacher_logits_for(
    teacher_dir: Path,
    texts: list[str],
    cache: Path,
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    progress: bool = True,
    what: str = "training texts",
) -> np.ndarray:
    """The fine-tuned teacher's logits for `texts`, computed once and cached in `cache` (.npy).

    The cache is reused only when it holds one row per text and was made from the same texts.
    fp32 on purpose: soft targets should not carry reduced-precision rounding.
    """
    from distilbench.models.registry import load_trained
    from distilbench.runs import write_bytes_atomic
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.inference import backend_logits

    fingerprint = _fingerprint(texts, max_length)
    meta = cache.with_suffix(".txt")
    if cache.is_file() and meta.is_file() and meta.read_text().strip() == fingerprint:
        logits = np.load(cache)
        if len(logits) == len(texts):
            log.info("teacher logits from cache %s", cache)
            return logits
    model, tokenizer, _, _ = load_trained(teacher_dir)
    say(f"  computing the teacher's outputs once for {len(texts)} {what} ({teacher_dir})")
    logits, _ = backend_logits(
        load_backend(model, "torch-fp32"),
        tokenizer,
        texts,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
        desc="teacher outputs",
    )
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


def soft_target_texts(config: ExperimentConfig, splits: dict, tokenizer) -> dict[str, list[str]]:
    """The texts a distilled student learns from the teacher's outputs alone, by kind: --unlabeled's (without
    the held-out splits' texts) and --augment's masked copies of the training texts (seeded by --seed)."""
    texts = {}
    if config.unlabeled:
        texts["unlabeled texts"] = unlabeled_texts(config.unlabeled, config.unlabeled_column, splits, config.seed)
    if config.augment == "mask":
        texts[f"augment texts (masked copies, seed {config.seed})"] = masked_copies(
            splits["train"]["text"].tolist(), tokenizer.mask_token, config.augment_copies, config.seed
        )
    return texts


def distillation_settings(config: ExperimentConfig, train_data) -> dict:
    """What a distilled row was made with, for comparison.json (`distillation`)."""
    soft_only = 0 if train_data.labelled is None else int((~train_data.labelled).sum())
    return {
        "alpha": config.alpha,
        "temperature": config.temperature,
        "hidden_weight": config.distill_hidden,
        "attention_weight": config.distill_attention,
        "unlabeled": config.unlabeled,
        "augment": config.augment,
        "augment_copies": config.augment_copies if config.augment != "none" else 0,
        "labelled_texts": len(train_data) - soft_only,
        "soft_only_texts": soft_only,
    }


def distillation_variant(config: ExperimentConfig, train_data) -> str:
    """The method line's words for the distillation variants beyond logits KD ('' for plain KD)."""
    parts = []
    if config.distill_hidden > 0:
        parts.append(f"hidden-state MSE {config.distill_hidden:g}")
    if config.distill_attention > 0:
        parts.append(f"attention-map loss {config.distill_attention:g}")
    if parts:
        parts[-1] += " on mapped layers (the teacher runs alongside: one teacher forward pass per batch)"
    settings = distillation_settings(config, train_data)
    if config.unlabeled:
        parts.append(f"unlabeled texts from {config.unlabeled}")
    if config.augment != "none":
        copies = "copy" if config.augment_copies == 1 else "copies"
        parts.append(f"{config.augment_copies} masked {copies} of each training text")
    if settings["soft_only_texts"]:
        parts.append(f"{settings['soft_only_texts']} texts with soft targets only")
    return "; " + ", ".join(parts) if parts else ""


# ---------------------------------------------------------------------------------------------------
# General distillation (DistilBERT's own objective) on unlabelled text


def _teacher_for_general(teacher: str):
    """(the teacher, a copy of its MLM head) when it has a trained one that maps hidden states to its
    logits, else (its encoder alone, None)."""
    from transformers import AutoModelForMaskedLM

    from distilbench.models.registry import _from_pretrained

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


@dataclass(frozen=True)
class GeneralDistillationOptions:
    """The settings of general distillation, DistilBERT's by default: passes over the texts, batch size, AdamW
    learning rate, tokens per text, the softmax temperature, the weights of the four loss terms (KL to the
    teacher's MLM distribution, MLM loss, cosine and MSE of hidden states), the masking rate, the seed of masking
    and shuffling, and the precision and device to train in."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 5e-4
    max_length: int = 128
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    mlm_probability: float = 0.15
    seed: int = 42
    precision: str = "auto"
    device: str = "auto"


@dataclass
class _GeneralSetup:
    """What general distillation trains with: the teacher (with its MLM head's logits when `has_mlm`), the
    student's encoder and the copy of the teacher's MLM head it learns with, the teacher layer of each student
    layer, the weight of each loss term, and where and in which precision it runs."""

    teacher_model: torch.nn.Module
    head: torch.nn.Module | None
    encoder: torch.nn.Module
    student_full: torch.nn.Module
    layers: list[int]
    terms: dict[str, float]
    device: torch.device
    precision: str

    @property
    def has_mlm(self) -> bool:
        return self.head is not None

    def parameters(self) -> list:
        """The trained parameters: the student's encoder's and its MLM head's."""
        return list(self.encoder.parameters()) + (list(self.head.parameters()) if self.head is not None else [])


def _general_setup(teacher: str, student_spec: str, texts: list[str], options: GeneralDistillationOptions):
    """(the parsed student spec, the teacher and student ready to train) after checking the spec and the texts;
    seeds every generator first, so the student's new weights depend on the seed alone."""
    from transformers import set_seed

    from distilbench.models.registry import DISTILBENCH_KEY, build_student, parse_student_spec
    from distilbench.runtime.inference import pick_precision
    from distilbench.runtime.machine import pick_device

    spec = parse_student_spec(student_spec)
    if spec is None:
        raise DistilbenchError(f"--student must be a student spec such as student:{teacher}, not '{student_spec}'")
    if not texts:
        raise DistilbenchError("no texts to distil on")
    set_seed(options.seed)
    device = pick_device(options.device)
    precision = pick_precision(options.precision, device)
    teacher_model, head = _teacher_for_general(teacher)  # the student's MLM head starts as the teacher's
    has_mlm = head is not None
    teacher_model.to(device).eval()
    student_full = build_student(teacher, layers=spec.strategy, kind=spec.kind)
    terms = {
        "ce": options.alpha_ce if has_mlm else 0.0,
        "mlm": options.alpha_mlm if has_mlm else 0.0,
        "cos": options.alpha_cos,
        "mse": options.alpha_mse,
    }
    if not has_mlm:
        say(
            f"the teacher {teacher} has no trained MLM head: general distillation uses the hidden-state terms "
            f"only (cosine on the last layer{', MSE per mapped layer' if options.alpha_mse else ''})"
        )
    setup = _GeneralSetup(
        teacher_model=teacher_model,
        head=head,
        encoder=getattr(student_full, student_full.base_model_prefix),
        student_full=student_full,
        layers=student_full.config.to_dict()[DISTILBENCH_KEY]["teacher_layers"],
        terms=terms,
        device=device,
        precision=precision,
    )
    return spec, setup


def _masked_text_batches(tokenizer, texts: list[str], options: GeneralDistillationOptions):
    """The texts tokenized once, served in shuffled batches (seeded) with fresh dynamic masking (80/10/10)."""
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForLanguageModeling

    encoded = tokenizer(texts, truncation=True, max_length=options.max_length)
    features = [
        {"input_ids": ids, "attention_mask": mask} for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])
    ]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=options.mlm_probability)  # 80/10/10
    return DataLoader(
        features,
        batch_size=options.batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(options.seed),
    )


def _general_step(setup: _GeneralSetup, batch: dict, options: GeneralDistillationOptions, optimizer, scheduler):
    """One optimizer step on one masked batch; returns (the loss terms, the weighted loss), both detached."""
    from distilbench.runtime.inference import autocast_for

    batch = {k: v.to(setup.device) for k, v in batch.items()}
    labels = batch.pop("labels")
    with torch.no_grad(), autocast_for(setup.device, setup.precision):
        t_out = setup.teacher_model(**batch, output_hidden_states=True)
    with autocast_for(setup.device, setup.precision):
        s_out = setup.encoder(**batch, output_hidden_states=True)
    values = general_distillation_terms(
        s_out.hidden_states,
        t_out.hidden_states,
        batch["attention_mask"],
        setup.layers,
        labels,
        options.temperature,
        setup.head(s_out.last_hidden_state).float() if setup.head is not None else None,
        t_out.logits.float() if setup.has_mlm else None,
        options.alpha_mse > 0,
    )
    terms = setup.terms
    loss = sum(terms[k] * values[k] for k in terms if terms[k])
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(setup.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return {k: float(values[k].detach()) for k in terms}, float(loss.detach())


def _general_epoch(setup: _GeneralSetup, loader, options: GeneralDistillationOptions, training, epoch: int, progress):
    """One pass over the texts (`training`: the optimizer and its schedule); returns the epoch's row of mean
    loss terms and its time."""
    import time

    from tqdm.auto import tqdm

    optimizer, scheduler = training
    sums = {name: 0.0 for name in (*setup.terms, "loss")}
    bar = tqdm(loader, desc=f"distill-general epoch {epoch}/{options.epochs}", disable=not progress, leave=False)
    epoch_start = time.perf_counter()
    for batch in bar:
        values, loss = _general_step(setup, batch, options, optimizer, scheduler)
        for k in setup.terms:
            sums[k] += values[k]
        sums["loss"] += loss
        bar.set_postfix(loss=f"{loss:.4f}")
    return {
        "epoch": epoch,
        **{k: v / len(loader) for k, v in sums.items()},
        "time_s": time.perf_counter() - epoch_start,
    }


def _save_general_epoch(setup: _GeneralSetup, tokenizer, out: Path, record: dict, log_rows: list[dict]) -> None:
    """Record the student's origin in its config, save OUT/epoch-<n>/, rewrite OUT/distill_log.json and print the
    epoch's losses. `record`: teacher, student spec and kind, number of texts and temperature."""
    from distilbench.models.registry import DISTILBENCH_KEY
    from distilbench.runs import save_checkpoint, write_json_atomic

    row, terms = log_rows[-1], setup.terms
    setup.encoder.config.update(
        {
            DISTILBENCH_KEY: {
                "teacher": record["teacher"],
                "teacher_layers": setup.layers,
                "student_kind": record["student_kind"],
                "general_distillation": {
                    "epochs": row["epoch"],
                    "texts": record["texts"],
                    "weights": terms,
                    "temperature": record["temperature"],
                    "teacher_mlm_head": setup.has_mlm,
                },
            }
        }
    )
    save_checkpoint(setup.encoder, tokenizer, out / f"epoch-{row['epoch']}")
    write_json_atomic(
        out / "distill_log.json",
        {"teacher": record["teacher"], "student": record["student"], "weights": terms, "epochs": log_rows},
    )
    say(
        f"  distill-general epoch {row['epoch']}: loss {row['loss']:.4f} ("
        + ", ".join(f"{k} {row[k]:.4f}" for k in terms if terms[k])
        + f"; {row['time_s']:.1f} s)"
    )


def distill_general(
    teacher: str,
    student_spec: str,
    texts: list[str],
    out: str | Path,
    options: GeneralDistillationOptions = GeneralDistillationOptions(),
    *,
    progress: bool = True,
) -> dict:
    """Train a student against a pretrained teacher on unlabelled texts with DistilBERT's triple loss.

    α_ce · T² · KL(teacher MLM distribution ‖ student) on masked tokens + α_mlm · MLM loss + α_cos ·
    (1 − cosine) between last hidden states (+ optional α_mse · MSE per mapped layer), with dynamic
    masking (15 %, 80/10/10). A teacher without a trained MLM head (the packaged MiniLM is a sentence
    encoder) uses the hidden-state terms only. Saves OUT/epoch-<n>/ and the final encoder in OUT/.
    """
    import time

    from transformers import get_linear_schedule_with_warmup

    from distilbench.models.registry import drop_unused_token_types, load_tokenizer

    spec, setup = _general_setup(teacher, student_spec, texts, options)
    tokenizer = load_tokenizer(teacher)
    drop_unused_token_types(tokenizer, setup.student_full)
    loader = _masked_text_batches(tokenizer, texts, options)
    setup.encoder.to(setup.device).train()
    if setup.head is not None:
        setup.head.to(setup.device).train()
    optimizer = torch.optim.AdamW(setup.parameters(), lr=options.learning_rate, eps=1e-8)
    total = options.epochs * len(loader)
    training = optimizer, get_linear_schedule_with_warmup(optimizer, int(0.05 * total), total)
    out = Path(out)
    record = {
        "teacher": teacher,
        "student": student_spec,
        "student_kind": spec.kind,
        "texts": len(texts),
        "temperature": options.temperature,
    }
    log_rows = []
    start = time.perf_counter()
    for epoch in range(1, options.epochs + 1):
        log_rows.append(_general_epoch(setup, loader, options, training, epoch, progress))
        _save_general_epoch(setup, tokenizer, out, record, log_rows)
    setup.encoder.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "epochs": log_rows,
        "weights": setup.terms,
        "teacher_mlm_head": setup.has_mlm,
        "out": str(out),
        "time_s": time.perf_counter() - start,
    }


def general_distillation_terms(
    student_hidden: tuple,
    teacher_hidden: tuple,
    attention_mask: torch.Tensor,
    layers: list[int],
    labels: torch.Tensor,
    temperature: float,
    student_logits: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    with_mse: bool,
) -> dict[str, torch.Tensor]:
    """The terms of DistilBERT's loss; hidden states are (embeddings, layer 1, ..., layer N) tuples."""
    zero = student_hidden[-1].new_zeros(()).float()
    keep = attention_mask.bool()
    s_last, t_last = student_hidden[-1].float()[keep], teacher_hidden[-1].float()[keep]
    values = {"cos": 1.0 - F.cosine_similarity(s_last, t_last, dim=-1).mean(), "ce": zero, "mlm": zero, "mse": zero}
    if with_mse:
        values["mse"] = hidden_state_loss(student_hidden, teacher_hidden, attention_mask, layers, embeddings=False)
    if student_logits is not None and teacher_logits is not None:
        masked = labels != -100
        if masked.any():
            s, t = student_logits[masked], teacher_logits[masked]
            values["ce"] = (
                F.kl_div(
                    F.log_softmax(s / temperature, -1),
                    F.log_softmax(t / temperature, -1),
                    reduction="batchmean",
                    log_target=True,
                )
                * temperature**2
            )
            values["mlm"] = F.cross_entropy(s, labels[masked])
    return values
