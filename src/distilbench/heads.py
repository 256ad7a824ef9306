"""The thesis's classification head as a transformers model, loadable with the Auto classes.

first-token state -> Linear(H, 50) -> ReLU -> Dropout(0.2) -> Linear(50, K), on any encoder.
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

    def __init__(self, encoder: dict | None = None, head_hidden: int = 50, head_dropout: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder or {}
        self.head_hidden = head_hidden
        self.head_dropout = head_dropout


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
        self.head = nn.Sequential(nn.Linear(hidden, config.head_hidden), nn.ReLU(),
                                  nn.Dropout(config.head_dropout), nn.Linear(config.head_hidden, config.num_labels))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in inspect.signature(self.encoder.forward).parameters:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state[:, 0]
        logits = self.head(hidden)
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)
