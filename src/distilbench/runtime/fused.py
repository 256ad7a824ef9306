"""The CPU bf16 fast path: BERT-family encoder layers rebuilt on oneDNN's prepacked matrix products.

The torch-bf16 backend runs a bf16 copy of the model. On a CPU, each encoder layer of that copy
(BERT, MiniLM, DistilBERT and other post-LayerNorm encoders with the same module layout) is replaced
by one FusedEncoderLayer computing the same function with fewer, faster kernels:

- the weights are reordered once into oneDNN's blocked layout (`mkldnn._reorder_linear_weight`),
  instead of on every call as `nn.Linear` does;
- the query, key and value projections are one matrix product (768 -> 2304 instead of 3 x 768);
- the activation (GELU, exact or tanh, or ReLU) runs inside the first feed-forward product, and the
  residual additions inside the output products (oneDNN post-ops);
- attention is `scaled_dot_product_attention` on views of that one product, with keys padded to 16
  (and masked) when shorter;
- a batch with at least 10 % padding runs on its real tokens alone (FusedEncoder);
- where the head reads only the first token, the last layer computes that token alone.

Measured on this 2-core AVX512-BF16/AMX CPU, torch 2.13, bf16, per call (median of 30-100):

    rows x in -> out (960 = batch 64 x 15 tokens)   nn.Linear    prepacked
    960 x 768 -> 768                                 860-999      1720-1982 GFLOP/s (size hint 1)
    960 x 768 -> 2304 (fused q, k, v)                1655-1713    2181-2652 (size hint 16)
    960 x 3072 -> 768                                832-915      1528-1810 (size hint 1)

  The row-count hint oneDNN packs for matters, and was chosen per product from 544 to 1453 rows at
  2 threads: for the 768-wide outputs, hint 1 ran at 1389-2199 GFLOP/s where hints 8-512 fell to
  958-1314 below about 1,200 rows (one core left idle); for the fused Q/K/V product hint 16 beat 1.
  Attention over 64 x 12 heads x 15 tokens took 1.9-2.8 ms against 1.5 ms with keys padded to 16
  (the CPU flash-attention kernel is fastest on multiples of 16).

  Whole models: benchmarks/bf16_profile.py (DistilBERT-base, batch 64, 15 tokens: 614 samples/s for
  the plain bf16 copy, 1102 fused; logits equal to bf16 rounding, tests/test_fused.py).

Everything else (embeddings, pooler, heads) stays as it was; an encoder with a layer this module does
not know (cross-attention, another layout) is left alone, and an activation without a oneDNN post-op
runs as its own op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

log = logging.getLogger(__name__)

KEY_ALIGN = 16  # the CPU flash-attention kernel's fast key lengths are multiples of this
UNPAD_SHARE = 0.1  # run a batch unpadded from this share of padding positions on
# classifiers whose head reads nothing but the encoder's first-token state (the pooler, DistilBERT's
# pre-classifier, the thesis head; not the mean-pooling head): their last encoder layer needs to produce only that
# token
FIRST_TOKEN_HEADS = {"BertForSequenceClassification", "DistilBertForSequenceClassification", "ThesisClassifier"}


def can_fuse(model: nn.Module) -> bool:
    """True where the fast path runs: a bf16 model on a CPU whose oneDNN has fast bf16 kernels."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cpu" or parameter.dtype != torch.bfloat16:
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the oneDNN ops
        return False


def fuse_encoder_layers(model: nn.Module) -> int:
    """Replace, in place, every encoder of `model` whose layers FusedEncoderLayer knows; returns the layers.

    Call it only on a model used for inference alone (its weights move into packed tensors that no
    optimizer, `state_dict` or `.to()` sees), after checking `can_fuse`. Where the model's head reads
    the first token alone, the encoder's last layer computes only that token (see FusedEncoder).
    """
    first_token = (
        type(model).__name__ in FIRST_TOKEN_HEADS
        and getattr(getattr(model, "config", None), "pooling", "first") == "first"
    )
    replaced = 0
    for parent in list(model.modules()):
        for name, encoder in list(parent.named_children()):
            layers = getattr(encoder, "layer", None)
            if not isinstance(layers, nn.ModuleList) or not len(layers):
                continue
            fused = [FusedEncoderLayer.from_layer(layer) for layer in layers]
            if all(f is not None for f in fused):
                setattr(parent, name, FusedEncoder(fused, first_token_only=first_token))
                replaced += len(fused)
    log.debug("fused %d encoder layers (last layer on the first token only: %s)", replaced, first_token)
    return replaced


def first_token_only(model: nn.Module) -> bool:
    """True if `model`'s fused encoders compute their last layer for the first token alone."""
    return any(isinstance(m, FusedEncoder) and m.first_token_only for m in model.modules())


class PackedLinear(nn.Module):
    """y = act(x @ W.T + b) [+ residual], with W reordered once into oneDNN's blocked bf16 layout."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, activation: tuple[str, str] = ("none", ""), hint: int = 1
    ):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        # plain attributes, not buffers: the opaque oneDNN tensor must not reach state_dict or .to()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16).contiguous(), hint)
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16).contiguous()
        self.attr, self.algorithm = activation

    @classmethod
    def of(cls, *linears: nn.Linear, activation: tuple[str, str] = ("none", ""), hint: int = 1) -> PackedLinear:
        """One packed product for several linears over the same input (outputs concatenated)."""
        weight = torch.cat([linear.weight for linear in linears])
        biases = [linear.bias for linear in linears]
        bias = None if any(b is None for b in biases) else torch.cat(biases)
        return cls(weight, bias, activation, hint)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.attr, [], self.algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.attr}"


def _activation_post_op(module: nn.Module) -> tuple[str, str] | None:
    """The oneDNN post-op computing `module`, or None if it has none (then it runs as its own op)."""
    name = type(module).__name__
    if isinstance(module, nn.GELU):
        return ("gelu", "tanh" if module.approximate == "tanh" else "none")
    if name == "GELUActivation" and getattr(module, "act", None) is F.gelu:  # transformers' exact GELU
        return ("gelu", "none")
    if name in ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "FastGELUActivation"):
        return ("gelu", "tanh")
    if isinstance(module, nn.ReLU) or name == "ReLUActivation":
        return ("relu", "")
    return None


class FusedEncoderLayer(nn.Module):
    """A post-LayerNorm self-attention encoder layer (BERT, DistilBERT) for bf16 CPU inference.

    Called like the layer it replaces, `layer(hidden_states, attention_mask, ...)`, where the mask
    is None, a boolean (True = attend) or an additive float mask of shape (batch, 1, query, key),
    as transformers builds it for bidirectional encoders; returns the new hidden states.
    """

    def __init__(
        self,
        *,
        q: nn.Linear,
        k: nn.Linear,
        v: nn.Linear,
        out: nn.Linear,
        norm1: nn.LayerNorm,
        up: nn.Linear,
        activation: nn.Module,
        down: nn.Linear,
        norm2: nn.LayerNorm,
        heads: int,
    ):
        super().__init__()
        post_op = _activation_post_op(activation)
        self.qkv = PackedLinear.of(q, k, v, hint=16)
        self.out = PackedLinear.of(out)
        self.up = PackedLinear.of(up, activation=post_op or ("none", ""))
        self.activation = None if post_op else activation
        self.down = PackedLinear.of(down)
        self.norm1, self.norm2 = norm1, norm2
        self.heads = heads
        self.head_size = q.out_features // heads

    @classmethod
    def from_layer(cls, layer: nn.Module) -> FusedEncoderLayer | None:
        """The fused form of a BERT-style or DistilBERT-style layer, or None for any other module."""
        if getattr(layer, "crossattention", None) is not None or getattr(layer, "is_decoder", False):
            return None
        attention = getattr(layer, "attention", None)
        self_attention = getattr(attention, "self", None)
        if self_attention is not None and hasattr(layer, "intermediate") and hasattr(layer, "output"):
            if not all(isinstance(getattr(self_attention, n, None), nn.Linear) for n in ("query", "key", "value")):
                return None
            return cls(
                q=self_attention.query,
                k=self_attention.key,
                v=self_attention.value,
                out=attention.output.dense,
                norm1=attention.output.LayerNorm,
                up=layer.intermediate.dense,
                activation=layer.intermediate.intermediate_act_fn,
                down=layer.output.dense,
                norm2=layer.output.LayerNorm,
                heads=self_attention.num_attention_heads,
            )
        if (
            attention is not None
            and all(hasattr(attention, n) for n in ("q_lin", "k_lin", "v_lin", "out_lin"))
            and hasattr(layer, "ffn")
            and hasattr(layer, "sa_layer_norm")
        ):
            return cls(
                q=attention.q_lin,
                k=attention.k_lin,
                v=attention.v_lin,
                out=attention.out_lin,
                norm1=layer.sa_layer_norm,
                up=layer.ffn.lin1,
                activation=layer.ffn.activation,
                down=layer.ffn.lin2,
                norm2=layer.output_layer_norm,
                heads=attention.n_heads,
            )
        return None

    def forward(self, x: torch.Tensor, layout: TokenLayout, first_only: bool = False) -> torch.Tensor:
        """x: (batch, seq, hidden), or (tokens, hidden) of the real tokens alone when layout.index is set.

        With `first_only`, the output is the first token's alone: (batch, 1, hidden), or (batch, hidden).
        """
        context = self.attend(self.qkv(x), layout, first_only)
        if first_only:
            x = x[:, :1] if layout.index is None else x.index_select(0, layout.firsts)
        hidden = self.norm1(self.out(context, residual=x))
        inner = self.up(hidden)
        if self.activation is not None:
            inner = self.activation(inner)
        return self.norm2(self.down(inner, residual=hidden))

    def attend(self, qkv: torch.Tensor, layout: TokenLayout, first_only: bool = False) -> torch.Tensor:
        """Multi-head attention over the fused projections; returns rows laid out like `qkv`'s
        (or one row per sequence, for its first token, with `first_only`)."""
        batch, keys = layout.batch, layout.keys
        if layout.index is not None:  # scatter the real tokens into a (batch, keys) grid of zeros
            grid = qkv.new_zeros(batch * keys, qkv.shape[-1]).index_copy_(0, layout.index, qkv)
        else:
            grid = F.pad(qkv, (0, 0, 0, keys - layout.length)) if keys > layout.length else qkv
        query, key, value = grid.view(batch, keys, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4)
        queries = 1 if first_only else layout.length
        if first_only or layout.index is None:
            query = query[:, :, :queries]
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=layout.mask).transpose(1, 2)
        if layout.index is None:
            return context.reshape(batch, queries, -1)
        if first_only:
            return context.reshape(batch, -1)
        return context.reshape(batch * keys, -1).index_select(0, layout.index)


@dataclass
class TokenLayout:
    """Where the tokens of one batch are: shared by every layer of one forward pass."""

    batch: int
    length: int  # the padded sequence length of the input
    keys: int  # the key length attention runs at (length, or 16 when shorter)
    mask: torch.Tensor | None  # (batch, 1, 1, keys), True = attend; None = attend to all
    index: torch.Tensor | None  # flat (batch x keys) positions of the real tokens, when run unpadded
    rows: torch.Tensor | None  # the same tokens' flat (batch x length) positions
    firsts: torch.Tensor | None  # the rows, among those tokens, of each sequence's first one


class FusedEncoder(nn.Module):
    """The layer loop of an encoder, over FusedEncoderLayers, called like the encoder it replaces.

    A batch where at least UNPAD_SHARE of the positions are padding runs unpadded: the products and
    layer norms see only the real tokens, and attention scatters them into a zero grid and back.
    With `first_token_only`, the last layer attends from and computes the first token alone, and the
    output's sequence axis has length 1: what a head reading `hidden[:, 0]` needs, for a fraction of
    the last layer's work (its key and value projections still cover every token).
    """

    def __init__(self, layers: list[FusedEncoderLayer], first_token_only: bool = False):
        super().__init__()
        self.layer = nn.ModuleList(layers)
        self.first_token_only = first_token_only

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        batch, length, width = hidden_states.shape
        layout = token_layout(attention_mask, batch, length, hidden_states.device)
        x = hidden_states if layout.rows is None else hidden_states.reshape(-1, width).index_select(0, layout.rows)
        last = len(self.layer) - 1
        for number, layer in enumerate(self.layer):
            x = layer(x, layout, first_only=self.first_token_only and number == last)
        if self.first_token_only:
            x = x.view(batch, 1, width)
        elif layout.rows is not None:  # padding positions come back as zeros; no real token attends to them
            x = x.new_zeros(batch * length, width).index_copy_(0, layout.rows, x).view(batch, length, width)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=x)


def token_layout(attention_mask: torch.Tensor | None, batch: int, length: int, device) -> TokenLayout:
    """The TokenLayout of a batch, from the mask transformers gives its encoder layers.

    That mask is None (no padding), or (batch, 1, query, key), boolean (True = attend) or additive
    (0 = attend); a bidirectional encoder masks the same keys for every query, so row 0 tells them.
    """
    keys = KEY_ALIGN if length < KEY_ALIGN else length
    if attention_mask is None:
        real = None
    elif attention_mask.dim() == 4:
        row = attention_mask[:, 0, 0, :]
        real = row if row.dtype == torch.bool else row == 0
    else:  # a plain (batch, seq) 0/1 mask
        real = attention_mask.bool()
    if real is None and keys == length:
        return TokenLayout(batch, length, keys, None, None, None, None)
    if real is None:
        real = torch.ones((batch, length), dtype=torch.bool, device=device)
    grid = F.pad(real, (0, keys - length), value=False)
    mask = grid.view(batch, 1, 1, keys)
    counts = real.sum(1)
    # unpadded only where every sequence starts with a real token (right padding), so first tokens stay
    if counts.sum() > (1 - UNPAD_SHARE) * real.numel() or not real[:, 0].all():
        return TokenLayout(batch, length, keys, mask, None, None, None)
    index, rows = grid.flatten().nonzero().squeeze(1), real.flatten().nonzero().squeeze(1)
    extra = bucketed(len(rows)) - len(rows)
    if extra:  # repeats of the first token, computed alike, written back to its own place
        index, rows = F.pad(index, (0, extra), value=int(index[0])), F.pad(rows, (0, extra), value=int(rows[0]))
    return TokenLayout(batch, length, keys, mask, index, rows, counts.cumsum(0) - counts)


def bucketed(tokens: int) -> int:
    """`tokens` rounded up to one of 16 steps per power of two (at most 6 % more).

    oneDNN and PyTorch cache a compiled kernel per matrix shape, and keep its memory: an unpadded
    batch's row count (its number of real tokens) takes any value, and a million headlines of random
    lengths grew a process by 370 MB. Rounding bounds the shapes to about 16 per doubling.
    """
    step = max(1, 1 << max(0, tokens.bit_length() - 5))
    return -(-tokens // step) * step
