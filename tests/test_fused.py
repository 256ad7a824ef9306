"""The fused CPU bf16 encoder (fused.py) computes what the plain bf16 model computes, on every batch layout."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from distilbench.runtime import fused
from distilbench.runtime.fused import FusedEncoder, can_fuse, first_token_only, fuse_encoder_layers

pytestmark = pytest.mark.skipif(
    not can_fuse(torch.nn.Linear(2, 2).to(torch.bfloat16)), reason="no oneDNN bf16 kernels on this CPU"
)


def _bert(act: str = "gelu", layers: int = 3):
    config = BertConfig(
        vocab_size=500,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=3,
        hidden_act=act,
    )
    return BertForSequenceClassification(config)


def _distilbert():
    config = DistilBertConfig(
        vocab_size=500, dim=64, n_layers=3, n_heads=4, hidden_dim=128, max_position_embeddings=128, num_labels=3
    )
    return DistilBertForSequenceClassification(config)


def _roberta():
    config = RobertaConfig(
        vocab_size=500,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
        num_labels=3,
    )
    return RobertaForSequenceClassification(config)


def _sharpened(model):
    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():  # O(1) logits, so that differences are measured against something
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.08)
        [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].weight.mul_(20)
    return model


def _batch(lengths: list[int], width: int, left: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(sum(lengths) + width)
    ids = torch.randint(5, 500, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        if left:
            mask[row, width - length :] = 1
        else:
            mask[row, :length] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def _logits(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch).logits.float()


# (lengths, width): no padding short and long, little padding (padded path), much padding (unpadded path)
LAYOUTS = {
    "full-short": ([9] * 4, 9),
    "full-16": ([16] * 4, 16),
    "full-long": ([21] * 3, 21),
    "little-padding": ([12, 12, 12, 12, 12, 12, 12, 12, 12, 11], 12),
    "much-padding": ([3, 7, 12, 5], 12),
    "much-padding-long": ([30, 4, 17, 22], 30),
    "one-token": ([1, 1], 1),
}


@pytest.mark.parametrize("make", [_bert, _distilbert, _roberta], ids=["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_fused_matches_the_plain_model(make, layout):
    reference = _sharpened(make())
    plain = copy.deepcopy(reference).to(torch.bfloat16)
    model = copy.deepcopy(plain)
    assert can_fuse(model) and not can_fuse(reference)  # fp32 models are left to plain PyTorch
    assert fuse_encoder_layers(model) == reference.config.num_hidden_layers
    assert any(isinstance(m, FusedEncoder) for m in model.modules())
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 128 for m in model.modules())
    batch = _batch(*LAYOUTS[layout])
    exact = _logits(reference, batch)
    assert exact.abs().max() > 0.5
    plain_error = (_logits(plain, batch) - exact).abs().max().item()
    fused_error = (_logits(model, batch) - exact).abs().max().item()
    # bf16 rounding in another order: the same size of error as the plain bf16 model, never a wrong function
    assert fused_error <= 2 * plain_error + 0.02 * exact.abs().max().item()


def test_padding_does_not_change_a_texts_logits():
    model = _sharpened(_bert()).to(torch.bfloat16)
    fuse_encoder_layers(model)
    lengths = [3, 7, 12, 5]
    together = _logits(model, _batch(lengths, 12))  # 44 % padding: the unpadded path
    for row, length in enumerate(lengths):
        alone = _logits(model, {k: v[row : row + 1, :length] for k, v in _batch(lengths, 12).items()})
        torch.testing.assert_close(alone[0], together[row], atol=0.03, rtol=0.02)


def test_left_padding_runs_padded_and_matches():
    reference = _sharpened(_bert())
    model = copy.deepcopy(reference).to(torch.bfloat16)
    fuse_encoder_layers(model)
    batch = _batch([3, 7, 12, 5], 12, left=True)
    mask4 = batch["attention_mask"].bool()[:, None, None, :].expand(4, 1, 12, 12)
    layout = fused.token_layout(mask4, 4, 12, "cpu")
    assert layout.index is None and layout.keys == 16  # first tokens are padding: no unpadding
    error = (_logits(model, batch) - _logits(reference, batch)).abs().max().item()
    assert error < 0.05 * _logits(reference, batch).abs().max().item()


def test_token_layout_choices():
    mask = torch.ones(4, 20, dtype=torch.bool)
    assert fused.token_layout(None, 4, 20, "cpu").mask is None  # no padding, no alignment: nothing to do
    short = fused.token_layout(None, 4, 9, "cpu")
    assert short.keys == 16 and short.mask.shape == (4, 1, 1, 16) and short.mask[:, 0, 0, 9:].sum() == 0
    mask[1, 10:] = False  # 12.5 % padding: unpadded
    layout = fused.token_layout(mask[:, None, None, :], 4, 20, "cpu")
    assert layout.index is not None and layout.firsts.tolist() == [0, 20, 30, 50]
    assert len(layout.rows) == fused.bucketed(70) == 72  # 70 real tokens, and 2 repeats of the first
    assert layout.rows[70:].tolist() == [0, 0] and layout.index[70:].tolist() == [0, 0]
    additive = torch.where(mask, 0.0, torch.finfo(torch.bfloat16).min).to(torch.bfloat16)[:, None, None, :]
    assert torch.equal(fused.token_layout(additive, 4, 20, "cpu").rows, layout.rows)
    mask[1, 10:] = True
    mask[1, 19:] = False  # 1.25 %: padded
    assert fused.token_layout(mask[:, None, None, :], 4, 20, "cpu").index is None


def test_row_counts_are_bucketed():
    """Few distinct matrix shapes (oneDNN keeps a kernel per shape), at most 1/16 more rows."""
    counts = range(1, 100_000)
    buckets = [fused.bucketed(n) for n in counts]
    assert all(n <= b <= n * 17 / 16 for n, b in zip(counts, buckets))
    assert buckets == sorted(buckets) and len(set(buckets)) < 250
    assert [fused.bucketed(n) for n in (1, 31, 32, 33, 900, 5000)] == [1, 31, 32, 34, 928, 5120]


def test_first_token_heads_only():
    for make, expected in ((_bert, True), (_distilbert, True), (_roberta, False)):
        model = make().eval().to(torch.bfloat16)
        fuse_encoder_layers(model)
        assert first_token_only(model) is expected


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu", "silu"])
def test_activations(act):
    reference = _sharpened(_bert(act))
    model = copy.deepcopy(reference).to(torch.bfloat16)
    fuse_encoder_layers(model)
    layer = next(m for m in model.modules() if isinstance(m, fused.FusedEncoderLayer))
    assert (layer.activation is None) == (act != "silu")  # silu has no post-op: it runs on its own
    batch = _batch([3, 7, 12, 5], 12)
    exact = _logits(reference, batch)
    assert (_logits(model, batch) - exact).abs().max() < 0.05 * exact.abs().max()


def test_thesis_head_and_unknown_layers():
    from distilbench.models.heads import ThesisClassifier, ThesisClassifierConfig

    config = ThesisClassifierConfig(
        encoder=BertConfig(
            vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
        ).to_dict(),
        num_labels=3,
    )
    reference = _sharpened(ThesisClassifier(config))
    model = copy.deepcopy(reference).to(torch.bfloat16)
    assert fuse_encoder_layers(model) == 2 and first_token_only(model)
    batch = _batch([3, 7, 12, 5], 12)
    exact = _logits(reference, batch)
    assert (_logits(model, batch) - exact).abs().max() < 0.05 * exact.abs().max()
    # a module list of something else is left alone
    other = torch.nn.Module()
    other.encoder = torch.nn.Module()
    other.encoder.layer = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
    assert fuse_encoder_layers(other) == 0 and isinstance(other.encoder.layer[0], torch.nn.Linear)


def test_mean_pooling_head_keeps_every_token_of_the_last_layer():
    """A head that averages all token states must not get the first-token-only last layer."""
    from distilbench.models.heads import ThesisClassifier, ThesisClassifierConfig

    config = ThesisClassifierConfig(
        encoder=BertConfig(
            vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
        ).to_dict(),
        num_labels=3,
        pooling="mean",
        head_hidden=0,
    )
    reference = _sharpened(ThesisClassifier(config))
    model = copy.deepcopy(reference).to(torch.bfloat16)
    assert fuse_encoder_layers(model) == 2 and not first_token_only(model)
    batch = _batch([3, 7, 12, 5], 12)
    exact = _logits(reference, batch)
    assert (_logits(model, batch) - exact).abs().max() < 0.05 * exact.abs().max()


def _mpnet():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    config = MPNetConfig(
        vocab_size=500,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
        num_labels=3,
    )
    return MPNetForSequenceClassification(config)


def _deberta_v2():
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    config = DebertaV2Config(
        vocab_size=500,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
        num_labels=3,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=16,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        type_vocab_size=0,
    )
    return DebertaV2ForSequenceClassification(config)


@pytest.mark.parametrize("make", [_mpnet, _deberta_v2], ids=["mpnet", "deberta-v2"])
def test_layers_fused_py_does_not_know_run_as_the_plain_bf16_model_with_a_note(make):
    """MPNet's attention adds a relative-position bias, DeBERTa's is disentangled: neither is a BERT-style
    layer, so torch-bf16 runs the plain bf16 copy (same logits as it) and says so."""
    from distilbench.runtime.backends import load_backend

    reference = _sharpened(make())
    model = copy.deepcopy(reference).to(torch.bfloat16)
    assert fuse_encoder_layers(model) == 0 and not any(isinstance(m, FusedEncoder) for m in model.modules())
    backend = load_backend(reference, "torch-bf16")
    assert reference.config.model_type in backend.note and "plain bf16 model ran" in backend.note
    batch = _batch([3, 7, 12, 5], 12)
    numpy_batch = {k: v.numpy() for k, v in batch.items()}
    numpy_batch["token_type_ids"] = 0 * numpy_batch["input_ids"]  # DeBERTa's classifier takes them
    torch.testing.assert_close(torch.from_numpy(backend(numpy_batch)), _logits(model, batch))
    exact = _logits(reference, batch)
    assert (_logits(model, batch) - exact).abs().max() < 0.05 * exact.abs().max()
    assert load_backend(_sharpened(_bert()), "torch-bf16").note is None  # fused: nothing to say
