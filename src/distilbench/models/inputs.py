"""The tokenizer outputs a model takes: every stage that feeds a model (training, export, the runtime) asks here."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model: torch.nn.Module) -> list[str]:
    """The tokenizer outputs the model uses: token_type_ids only where its encoder takes them."""
    import torch  # here, not above: the runtime reads MODEL_INPUTS without torch (an exported bundle)

    accepted = inspect.signature(model.forward).parameters
    prefix = getattr(model, "base_model_prefix", "")
    encoder = getattr(model, prefix, None) if prefix else None
    if isinstance(encoder, torch.nn.Module) and encoder is not model:  # e.g. the thesis head drops token types
        encoder_params = inspect.signature(encoder.forward).parameters
        accepted = {k: v for k, v in accepted.items() if k in encoder_params}
    return [k for k in MODEL_INPUTS if k in accepted]
