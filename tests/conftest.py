"""Tiny random BERT / DistilBERT models (with the packaged MiniLM's real tokenizer) and the shared data."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# pytest-xdist (pyproject's addopts: a worker per CPU, at most 4): each worker's torch gets its share of the CPUs
# this process may run on, set before anything imports torch (distilbench.runtime.predict does not). Every worker
# on every core would oversubscribe them (spinning OpenMP threads).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    from distilbench.runtime.predict import available_cpus

    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, available_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )
# the cache (ONNX graphs, backend choices) of the whole session, never the user's own. Processes the tests
# start inherit it (a spawned worker that imports this file again must not make, and leave behind, a cache of
# its own).
if "DISTILBENCH_TEST_CACHE" not in os.environ:
    os.environ["DISTILBENCH_TEST_CACHE"] = tempfile.mkdtemp(prefix="distilbench-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DISTILBENCH_TEST_CACHE"], ignore_errors=True)
os.environ["DISTILBENCH_CACHE"] = os.environ["DISTILBENCH_TEST_CACHE"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def on_ci() -> bool:
    """CI sets CI=true; there a missing prerequisite (data, Chromium) fails a test instead of skipping it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str):
    """Skip the test for `reason` (shown by -rs), or fail it on CI, where nothing may be quietly left out."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def shared_file(name: str) -> Path:
    """The path of a real data set in the shared data folder next to the repository (../shared/data)."""
    path = SHARED_DATA / name
    if not path.is_file():
        missing(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """`shared_data(name)`: the path of a shared real data set; skipped when it is missing, failed under CI."""
    return shared_file


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from distilbench.models.registry import packaged_minilm_path

    return AutoTokenizer.from_pretrained(packaged_minilm_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_tokenizer) -> Path:
    """A 4-layer, 32-wide random BERT with a pooler, saved like a hub checkpoint."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = BertModel(config)
    with torch.no_grad():  # a non-zero token-type embedding, so folding it into positions is tested
        model.embeddings.token_type_embeddings.weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory, minilm_tokenizer) -> Path:
    """A 2-layer, 32-wide random DistilBERT."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("tiny-distilbert")
    DistilBertModel(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def learnable_bert_dir(tmp_path_factory, minilm_tokenizer):
    """conftest's tiny BERT without its large token-type embedding: that one (std 0.5, against 0.02 for the
    words) drowns every word after the first layer norm, and the model learns only the class balance."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("learnable-bert")
    BertModel(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path
