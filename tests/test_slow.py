"""Real-model checks (minutes each): `make test-slow` or `pytest -m slow`."""

import pandas as pd
import pytest

from conftest import shared_file
from distilbench.compare import compare
from distilbench.config import ExperimentConfig

pytestmark = pytest.mark.slow


def test_minilm_learns_headlines(tmp_path):
    """minilm-l6 fine-tuned on 3,000 headlines reaches >= 0.85 accuracy on 1,000 others."""
    headlines = pd.read_csv(shared_file("news-headlines.csv"))
    shuffled = headlines.sample(frac=1.0, random_state=0)
    shuffled.iloc[:3000].to_csv(tmp_path / "train.csv", index=False)
    shuffled.iloc[3000:4000].to_csv(tmp_path / "test.csv", index=False)
    config = ExperimentConfig(task="multiclass", data=str(tmp_path / "train.csv"),
                              test_data=str(tmp_path / "test.csv"), label_column="category",
                              models=["minilm-l6"], epochs=3, train_batch_size=16, out=str(tmp_path / "run"),
                              measure_speed=False)
    rows = compare(config.validate(), progress=False)
    assert rows[0]["test"]["samples"] == 1000
    assert rows[0]["test"]["accuracy"] >= 0.85
