"""The transformers Trainer as distilbench trains with it: label-loss weights and smoothing, layer-wise learning
rates, length-grouped batches seeded per epoch, and a running mean of the training loss. training.py runs it;
distillation.py subclasses it."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from distilbench.config import ExperimentConfig
from distilbench.core.console import DistilbenchError
from distilbench.training import distributed


def loss_weights(task: str, labels: np.ndarray, n_labels: int, config: ExperimentConfig) -> torch.Tensor | None:
    """Weights for the label loss from the training split: multiclass --class-weight balanced gives each class
    n / (K * n_class) (sklearn's "balanced"); multilabel --pos-weight auto gives each label's positives
    negatives / positives, capped at --pos-weight-cap, and --pos-weight rare does so only for the labels with
    fewer than --rare-positives positives (on the toxic comments, weighing the labels with hundreds of positives
    too cost hamming score: measured in the README). A class or label without examples keeps weight 1."""
    if task == "multiclass" and config.class_weight == "balanced":
        counts = np.bincount(labels.astype(int), minlength=n_labels).astype(float)
        present = counts > 0
        weights = np.ones_like(counts)
        weights[present] = len(labels) / (present.sum() * counts[present])
        return torch.tensor(weights, dtype=torch.float32)
    if task == "multilabel" and config.pos_weight in ("auto", "rare"):
        positives = labels.sum(axis=0).astype(float)
        negatives = len(labels) - positives
        weighed = positives > 0
        if config.pos_weight == "rare":
            weighed &= positives < config.rare_positives
        weights = np.where(weighed, negatives / np.maximum(positives, 1), 1.0)
        return torch.tensor(np.clip(weights, None, config.pos_weight_cap), dtype=torch.float32)
    return None


def label_loss(
    logits: torch.Tensor, labels: torch.Tensor, task: str, weights: torch.Tensor | None = None, smoothing: float = 0.0
):
    """The loss against the labels: cross-entropy (multiclass, optionally class-weighted, optionally against
    label-smoothed targets, Szegedy et al., 2016) or BCE with logits (multilabel, optionally with positive weights
    per label).

    Positive weights w are applied to the logits shifted by log w: BCE with pos_weight w is minimised where
    sigmoid(z) = w p / (w p + 1 - p) (p the label's true probability), so a plain weighted loss teaches every
    label to fire too often and its probabilities, the 0.5 threshold and the validation loss stop meaning what
    they say. With the shift the weighted loss's optimum is at z + log w, i.e. the model's own logit z at
    logit(p): the weights still push rare labels' positives up the ranking, and the saved model's probabilities
    stay calibrated (the prior correction of King and Zeng, 2001)."""
    logits = logits.float()
    if weights is not None:
        weights = weights.to(logits.device)
    if task == "multiclass":
        return F.cross_entropy(logits, labels.long(), weight=weights, label_smoothing=smoothing)
    if weights is None:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.binary_cross_entropy_with_logits(logits + torch.log(weights), labels.float(), pos_weight=weights)


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped batches of the global batch size, shuffled from (seed, epoch) alone: every process
    of a distributed run sees the same order (each then takes its share of each batch), a resumed run
    the order it would have had, whatever the dropout masks drew from the global random state."""

    def __init__(self, batch_size: int, dataset, seed: int):
        super().__init__(batch_size, dataset=dataset, model_input_name="input_ids")
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


_LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_rate_scales(model: torch.nn.Module, decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay (Sun et al., 2019, "How to fine-tune BERT for text classification"): the
    factor on the learning rate of each trainable parameter by name. The head and the top layer keep the full
    rate, each layer below it gets `decay` times the rate of the layer above, the embeddings `decay` times the
    lowest layer's. Layers are found by the `layer.<i>.` in their names, which every encoder family distilbench
    trains uses (BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA, MPNet, DeBERTa); parameters outside the layers and
    the embeddings (heads, pooler, MPNet's shared relative-position table) keep the full rate."""
    names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    depths = {name: int(found.group(1)) for name in names if (found := _LAYER_INDEX.search(name))}
    if not depths:
        raise DistilbenchError(
            f"--layer-lr-decay needs an encoder with numbered layers ('layer.<i>.'); {type(model).__name__} has none"
        )
    top = max(depths.values())
    scales = {}
    for name in names:
        if name in depths:
            scales[name] = decay ** (top - depths[name])
        elif "embeddings." in name:
            scales[name] = decay ** (top + 1)
        else:
            scales[name] = 1.0
    return scales


class DistilbenchTrainer(Trainer):
    """The standard Trainer, keeping a running mean of the training loss for progress and statistics; with
    `layer_lr_decay` below 1, AdamW gets one parameter group per rate (layer_rate_scales)."""

    task: str = "multiclass"
    class_weights: torch.Tensor | None = None  # label-loss weights (loss_weights); None: the model's own loss
    layer_lr_decay: float = 1.0
    label_smoothing: float = 0.0  # multiclass, training batches only: validation losses stay comparable

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_sum, self.loss_count = 0.0, 0

    def _get_train_sampler(self, train_dataset=None):
        global_batch = self.args.per_device_train_batch_size * distributed.world_size()
        return SeededLengthGroupedSampler(global_batch, train_dataset or self.train_dataset, self.args.seed)

    def create_optimizer(self, model=None):
        if self.layer_lr_decay == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decayed = set(self.get_decay_parameter_names(opt_model))
        parameters = dict(opt_model.named_parameters())
        groups: dict[tuple[float, float], list] = {}
        for name, scale in layer_rate_scales(opt_model, self.layer_lr_decay).items():
            weight_decay = self.args.weight_decay if name in decayed else 0.0
            groups.setdefault((scale, weight_decay), []).append(parameters[name])
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(
            [
                {"params": params, "lr": self.args.learning_rate * scale, "weight_decay": weight_decay}
                for (scale, weight_decay), params in sorted(groups.items(), key=lambda item: -item[0][0])
            ],
            **optimizer_kwargs,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        smoothing = self.label_smoothing if model.training else 0.0
        if (self.class_weights is not None or smoothing > 0) and "labels" in inputs:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = label_loss(outputs.logits, labels, self.task, self.class_weights, smoothing)
        else:
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        if model.training:
            self.loss_sum += float(loss.detach())
            self.loss_count += 1
        return (loss, outputs) if return_outputs else loss

    def epoch_loss(self) -> float:
        """The mean training loss so far this epoch, on this process's share of the batches."""
        return self.loss_sum / max(self.loss_count, 1)
