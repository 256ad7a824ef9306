"""speed.flops_per_sample against counts made without it: torch's FLOP counter on real BERT, DistilBERT,
RoBERTa, XLM-RoBERTa, MPNet and ELECTRA forward passes, a model small enough to count by hand, and the
first-token-only last layer rebuilt from a layer's own modules."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

from distilbench.benchmarking.speed import flops_per_sample


def counted_flops(run) -> int:
    """FLOPs of the matrix products (mm, bmm, addmm, attention) that `run()` performs, as torch counts them."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def bert(hidden=48, layers=3, heads=4, intermediate=80) -> BertModel:
    config = BertConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return BertModel(config, add_pooling_layer=False).eval()  # the encoder alone: the formula leaves heads out


def distilbert(dim=48, layers=3, heads=4, hidden_dim=80) -> DistilBertModel:
    config = DistilBertConfig(
        vocab_size=100,
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=hidden_dim,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return DistilBertModel(config).eval()


@pytest.mark.parametrize("build", [bert, distilbert])
@pytest.mark.parametrize("tokens", [1, 7, 33])
def test_flops_match_torchs_count_of_a_real_forward_pass(build, tokens):
    torch.manual_seed(0)
    model = build()
    ids = torch.randint(1, 100, (1, tokens))
    assert flops_per_sample(model.config, tokens) == counted_flops(lambda: model(input_ids=ids))


@pytest.mark.parametrize("build", [bert, distilbert])
def test_flops_per_sample_is_per_text_of_a_batch(build):
    torch.manual_seed(0)
    model = build(32, 2, 2, 64)  # hidden, layers, heads, feed-forward
    ids = torch.randint(1, 100, (5, 11))  # 5 texts of 11 tokens, no padding
    assert 5 * flops_per_sample(model.config, 11) == counted_flops(lambda: model(input_ids=ids))


def test_flops_of_a_model_counted_by_hand():
    """1 layer, hidden 2, feed-forward 3, 2 tokens; a product of (m x k) by (k x n) is 2mkn FLOPs:
    Q, K, V, output: 4 x (2x2 by 2x2) = 4 x 16 = 64; feed-forward: (2x2 by 2x3) + (2x3 by 3x2) = 24 + 24 = 48;
    attention, one head of size 2: scores (2x2 by 2x2) = 16, weighted sum (2x2 by 2x2) = 16. Total 144."""
    config = BertConfig(hidden_size=2, num_hidden_layers=1, num_attention_heads=1, intermediate_size=3)
    assert flops_per_sample(config, 2) == 144
    assert (
        flops_per_sample(BertConfig(hidden_size=2, num_hidden_layers=3, num_attention_heads=1, intermediate_size=3), 2)
        == 3 * 144
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: BertModel(BertConfig(attn_implementation="eager"), add_pooling_layer=False),
        lambda: DistilBertModel(DistilBertConfig(attn_implementation="eager")),
    ],
    ids=["bert-base", "distilbert-base"],
)
def test_flops_of_the_full_size_architectures_at_128_tokens(build):
    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(1, 1000, (1, 128))
    assert flops_per_sample(model.config, 128) == counted_flops(lambda: model(input_ids=ids))


def first_token_only_forward(model: DistilBertModel, ids: torch.Tensor) -> torch.Tensor:
    """DistilBERT whose last layer computes what the first token's output needs, written out from that
    layer's own modules: K and V for every token; Q, attention, output projection and feed-forward for
    the first token alone (what the fused backend's last layer is for, for heads that read only [CLS])."""
    x = model.embeddings(ids)
    *first, last = model.transformer.layer
    for layer in first:
        out = layer(x)
        x = out[0] if isinstance(out, tuple) else out
    attention = last.attention
    batch, length, dim = x.shape
    heads, size = attention.n_heads, dim // attention.n_heads
    q = attention.q_lin(x[:, :1]).view(batch, 1, heads, size).transpose(1, 2)
    k = attention.k_lin(x).view(batch, length, heads, size).transpose(1, 2)
    v = attention.v_lin(x).view(batch, length, heads, size).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / size**0.5, dim=-1)
    context = (weights @ v).transpose(1, 2).reshape(batch, 1, dim)
    hidden = last.sa_layer_norm(attention.out_lin(context) + x[:, :1])
    return last.output_layer_norm(last.ffn(hidden) + hidden)


def test_first_token_only_flops_match_a_last_layer_that_computes_only_the_first_token():
    torch.manual_seed(0)
    model = distilbert()
    for tokens in (1, 9, 40):
        ids = torch.randint(1, 100, (1, tokens))
        with torch.no_grad():  # the rebuilt forward gives the full model's first-token output
            torch.testing.assert_close(
                first_token_only_forward(model, ids), model(input_ids=ids)[0][:, :1], atol=1e-5, rtol=1e-4
            )
        assert flops_per_sample(model.config, tokens, first_token_only=True) == counted_flops(
            lambda: first_token_only_forward(model, ids)
        )
    # one token: nothing to leave out
    assert flops_per_sample(model.config, 1, first_token_only=True) == flops_per_sample(model.config, 1)


def tiny_encoder(family: str):
    """A random encoder of `family` without its pooler (the formula leaves heads out), eager attention."""
    from transformers import AutoModel, ElectraConfig, MPNetConfig, RobertaConfig, XLMRobertaConfig

    common = dict(
        vocab_size=100,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=80,
        max_position_embeddings=80,
        attn_implementation="eager",
    )
    config = {
        "roberta": RobertaConfig,
        "xlm-roberta": XLMRobertaConfig,
        "mpnet": MPNetConfig,
        "electra": lambda **c: ElectraConfig(**c, embedding_size=24),
    }[family](**common)
    try:
        return AutoModel.from_config(config, add_pooling_layer=False).eval()
    except TypeError:  # ELECTRA has no pooler
        return AutoModel.from_config(config).eval()


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "mpnet", "electra"])
@pytest.mark.parametrize("tokens", [1, 7, 33])
def test_flops_of_other_encoder_families_match_torchs_count(family, tokens):
    """MPNet's relative-position bias is a look-up; ELECTRA's narrower embeddings add their projection."""
    torch.manual_seed(0)
    model = tiny_encoder(family)
    ids = torch.randint(3, 100, (1, tokens))
    assert flops_per_sample(model.config, tokens) == counted_flops(lambda: model(input_ids=ids))


def test_encoders_the_formula_does_not_cover_have_no_flops_and_say_why():
    """DeBERTa's disentangled attention does products over relative positions the formula does not count: no
    number rather than a wrong one."""
    from transformers import DebertaV2Config

    from distilbench.benchmarking.speed import flops_note
    from distilbench.models.heads import ThesisClassifierConfig

    config = DebertaV2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=80)
    assert flops_per_sample(config, 10) is None and "deberta-v2" in flops_note(config)
    thesis = ThesisClassifierConfig(encoder=config.to_dict(), num_labels=2)
    assert flops_per_sample(thesis, 10) is None
    assert flops_note(BertConfig()) is None and flops_per_sample(BertConfig(), 10) > 0
