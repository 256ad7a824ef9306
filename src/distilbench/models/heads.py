"""The thesis's classification head, and a mean-pooling head, as a transformers model loadable with the Auto classes.

thesis: first-token state -> Linear(H, 50) -> ReLU -> Dropout(0.2) -> Linear(50, K), on any encoder.
mean:   mean of the token states over the attention mask -> Dropout(0.1) -> Linear(H, K): the pooling
        sentence-transformers checkpoints (all-MiniLM-L6-v2, all-mpnet-base-v2) were trained with.
This file only imports torch and transformers: `save_pretrained` copies it next to the weights, so
`transformers.pipeline(..., trust_remote_code=True)` opens such a checkpoint without distilbench.
"""

from __future__ import annotations

import inspect

from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class ThesisClassifierConfig(PretrainedConfig):
    model_type = "distilbench_thesis"

    def __init__(
        self,
        encoder: dict | None = None,
        head_hidden: int = 50,
        head_dropout: float = 0.2,
        pooling: str = "first",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder or {}
        self.head_hidden = head_hidden  # 0: one linear layer after the dropout
        self.head_dropout = head_dropout
        self.pooling = pooling  # "first" (the first token's state) or "mean" (over the attention mask)


class ThesisClassifier(PreTrainedModel):
    config_class = ThesisClassifierConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(self, config: ThesisClassifierConfig):
        super().__init__(config)
        encoder_config = AutoConfig.for_model(**config.encoder)
        try:  # the first-token state is used directly: no pooler
            self.encoder = AutoModel.from_config(encoder_config, add_pooling_layer=False)
        except TypeError:
            self.encoder = AutoModel.from_config(encoder_config)
        hidden = getattr(encoder_config, "hidden_size", None) or encoder_config.dim
        if config.head_hidden:
            self.head = nn.Sequential(
                nn.Linear(hidden, config.head_hidden),
                nn.ReLU(),
                nn.Dropout(config.head_dropout),
                nn.Linear(config.head_hidden, config.num_labels),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(hidden, config.num_labels))
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_hidden_states=None,
        output_attentions=None,
        **kwargs,
    ):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in inspect.signature(self.encoder.forward).parameters:
            inputs["token_type_ids"] = token_type_ids
        for name, value in (("output_hidden_states", output_hidden_states), ("output_attentions", output_attentions)):
            if value:  # what distillation's intermediate losses read, as from the Auto classes' heads
                inputs[name] = value
        encoded = self.encoder(**inputs)
        states = encoded.last_hidden_state
        if getattr(self.config, "pooling", "first") == "mean":
            mask = attention_mask if attention_mask is not None else input_ids.new_ones(input_ids.shape)
            mask = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = states[:, 0]
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(encoded, "hidden_states", None),
            attentions=getattr(encoded, "attentions", None),
        )
