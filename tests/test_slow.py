"""Real-model checks (minutes each): `make test-slow` or `pytest -m slow`."""

import pandas as pd
import pytest

from conftest import shared_file
from distilbench.config import ExperimentConfig
from distilbench.experiments.compare import compare

pytestmark = pytest.mark.slow


def test_minilm_learns_headlines(tmp_path):
    """minilm-l6 fine-tuned on 3,000 headlines reaches >= 0.85 accuracy on 1,000 others."""
    headlines = pd.read_csv(shared_file("news-headlines.csv"))
    shuffled = headlines.sample(frac=1.0, random_state=0)
    shuffled.iloc[:3000].to_csv(tmp_path / "train.csv", index=False)
    shuffled.iloc[3000:4000].to_csv(tmp_path / "test.csv", index=False)
    config = ExperimentConfig(
        task="multiclass",
        data=str(tmp_path / "train.csv"),
        test_data=str(tmp_path / "test.csv"),
        label_column="category",
        models=["minilm-l6"],
        epochs=3,
        train_batch_size=16,
        out=str(tmp_path / "run"),
        measure_speed=False,
    )
    rows = compare(config.validate(), progress=False)
    assert rows[0]["test"]["samples"] == 1000
    assert rows[0]["test"]["accuracy"] >= 0.85


def test_mpnet_base_assembles_offline_and_its_student_takes_the_distilbert_layers(tmp_path, monkeypatch):
    """The real mpnet-base (`make base`): assembled from its five packages into the cache with the checksum
    verified, loaded offline; student:mpnet-base:distilbert is a 6-layer MPNet of layers 0, 2, 4, 7, 9, 11 and a
    student with every layer computes the teacher's function; a short compare of both runs to the end."""
    import time

    import torch
    from transformers import AutoModel, AutoTokenizer

    from conftest import missing
    from distilbench.core.console import DistilbenchError
    from distilbench.models.packaged import MPNET_BASE, assembled_path, file_sha256, piece_paths
    from distilbench.models.registry import build_student

    try:
        piece_paths(MPNET_BASE)
    except DistilbenchError as exc:
        missing(f"mpnet-base's packages are not installed (make base): {exc}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    path = assembled_path(MPNET_BASE)
    assert file_sha256(path / "model.safetensors") == MPNET_BASE.sha256
    start = time.perf_counter()
    assert assembled_path(MPNET_BASE) == path and time.perf_counter() - start < 0.5

    teacher = AutoModel.from_pretrained(path).eval()
    assert teacher.config.model_type == "mpnet" and teacher.config.num_hidden_layers == 12
    assert sum(p.numel() for p in teacher.parameters()) > 100e6
    student = build_student("mpnet-base", "multiclass", ["a", "b"], "distilbert").eval()
    assert student.config.num_hidden_layers == 6 and student.config.distilbench["teacher_layers"] == [0, 2, 4, 7, 9, 11]
    for i, t in enumerate([0, 2, 4, 7, 9, 11]):
        torch.testing.assert_close(
            student.mpnet.encoder.layer[i].attention.attn.q.weight,
            teacher.encoder.layer[t].attention.attn.q.weight,
            rtol=0,
            atol=0,
        )
    torch.testing.assert_close(
        student.mpnet.encoder.relative_attention_bias.weight,
        teacher.encoder.relative_attention_bias.weight,
        rtol=0,
        atol=0,
    )
    whole = build_student("mpnet-base", "multiclass", ["a", "b"], ",".join(map(str, range(12)))).eval()
    batch = AutoTokenizer.from_pretrained(path)(
        ["Stocks rally as inflation cools", "ok"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            whole.mpnet(**batch).last_hidden_state, teacher(**batch).last_hidden_state, rtol=0, atol=0
        )

    headlines = pd.read_csv(shared_file("news-headlines.csv")).sample(n=300, random_state=0)
    headlines.to_csv(tmp_path / "headlines.csv", index=False)
    config = ExperimentConfig(
        task="multiclass",
        data=str(tmp_path / "headlines.csv"),
        label_column="category",
        models=["mpnet-base", "student:mpnet-base"],
        epochs=1,
        max_length=32,
        out=str(tmp_path / "run"),
        measure_speed=False,
    )
    rows = compare(config.validate(), progress=False)
    assert rows[1]["architecture"] == {"model_type": "mpnet", "layers": 6, "hidden_size": 768}
    assert "distilled from the fine-tuned" in rows[1]["method"] and rows[1]["params"] < 0.8 * rows[0]["params"]
