"""`distilbench cascade` end to end with stand-in models (a table from text to probabilities, so the answers are
known): the saved directory, the run's splits as defaults, the checks of its inputs, and the loaded cascade that
predict, serve and evaluate use (each stage loaded once, only deferred rows sent on, rows counted per stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distilbench.cli.commands import main
from distilbench.core.console import DistilbenchError
from distilbench.evaluation.cascade import combine_stages
from distilbench.experiments import cascade as experiment
from distilbench.runtime.cascade import CascadeModel, load_cascade

LABELS = ["business", "sport", "tech"]


class TableModel:
    """A stand-in for a loaded model: fixed probabilities per text; it records the texts it was asked about."""

    def __init__(self, table: dict[str, np.ndarray], task: str = "multiclass", label_names=LABELS, thresholds=None):
        self.table, self.task, self.label_names = table, task, list(label_names)
        self.thresholds = np.full(len(label_names), 0.5) if thresholds is None else np.asarray(thresholds)
        self.asked: list[str] = []

    def probabilities(self, texts: list[str]) -> np.ndarray:
        self.asked.extend(texts)
        return np.stack([self.table[text] for text in texts]) if texts else np.zeros((0, len(self.label_names)))


def rows(rng: np.random.Generator, n: int, prefix: str):
    """n texts with labels; the small model is right where its confidence is >= 0.7 and right 30% of the time
    below; the big model is right 90% of the time."""
    labels = rng.integers(0, 3, n)
    confidence = rng.uniform(0.34, 1.0, n)
    small_right = np.where(confidence >= 0.7, True, rng.random(n) < 0.3)
    big_right = rng.random(n) < 0.9

    def probs(right, top):
        chosen = np.where(right, labels, (labels + 1) % 3)
        out = np.repeat(((1 - top) / 2)[:, None], 3, axis=1)
        out[np.arange(n), chosen] = top
        return out

    texts = [f"{prefix} {i}" for i in range(n)]
    small, big = probs(small_right, confidence), probs(big_right, np.full(n, 0.9))
    frame = pd.DataFrame({"text": texts, "label": [LABELS[k] for k in labels]})
    return frame, dict(zip(texts, small)), dict(zip(texts, big))


@pytest.fixture
def news_run(tmp_path, monkeypatch):
    """A run directory with saved splits and two model directories, whose models are TableModels."""
    rng = np.random.default_rng(0)
    run = tmp_path / "runs" / "news"
    (run / "data").mkdir(parents=True)
    tables: dict[str, dict] = {"small": {}, "big": {}}
    for split, n in (("train", 10), ("val", 3000), ("test", 3000)):
        frame, small, big = rows(rng, n, split)
        frame.to_csv(run / "data" / f"{split}.csv", index=False)
        tables["small"].update(small)
        tables["big"].update(big)
    (run / "data" / "summary.json").write_text(json.dumps({"label_names": LABELS}))
    loaded: dict[str, TableModel] = {}
    for name in ("small", "big"):
        (run / "models" / name / "best").mkdir(parents=True)
    loads: list[str] = []

    def load_stage(model_dir: str) -> TableModel:
        loads.append(model_dir)
        name = Path(model_dir).parent.name
        loaded[name] = TableModel(tables[name])
        return loaded[name]

    monkeypatch.setattr(experiment, "predictor_loader", lambda *args: load_stage)
    return {"run": run, "tables": tables, "loaded": loaded, "loads": loads, "load_stage": load_stage}


def test_the_cli_chooses_tests_and_saves_a_cascade_from_a_run_s_splits(news_run, tmp_path, capsys):
    run, out = news_run["run"], tmp_path / "cascade"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "cascade",
                "--small",
                str(run / "models" / "small"),
                "--big",
                str(run / "models" / "big" / "best"),
                "--max-loss",
                "0.5",
                "--confidence",
                "0.95",
                "--resamples",
                "200",
                "--out",
                str(out),
            ]
        )
    assert exit_.value.code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "calibration: 3000 rows of" in said and "val.csv" in said and "guarantee" in said and "speed:" in said
    manifest = json.loads((out / "distilbench_model.json").read_text())
    assert manifest["kind"] == "cascade" and manifest["task"] == "multiclass" and manifest["label_names"] == LABELS
    assert [Path(s["model"]).parent.name for s in manifest["stages"]] == ["small", "big"]
    threshold = manifest["stages"][0]["threshold"]
    assert threshold is not None and threshold <= 0.7 and "threshold" not in manifest["stages"][1]
    report = json.loads((out / "cascade.json").read_text())
    test = report["test"]
    assert report["choice"]["guaranteed"] and test["rows"] == 3000
    assert test["guarantee_held"] == (test["difference_points"] >= -0.5)  # on test rows, as measured
    assert test["shares"][0] >= 0.4 and sum(test["shares"]) == pytest.approx(1.0)
    assert test["interval_points"][0] <= test["difference_points"] <= test["interval_points"][1]
    assert report["speed"]["cascade_rows_per_s"] > 0 and report["speed"]["big_rows_per_s"] > 0
    curve = report["choice"]["stages"][0]["curve"]
    assert {"threshold", "share", "cascade_metric", "p_value", "certified"} <= set(curve[0])
    assert len(news_run["loads"]) == 2  # each model loaded once


def test_the_saved_cascade_predicts_what_was_tested_and_counts_rows_per_stage(news_run, tmp_path):
    from distilbench.api import cascade

    run, out = news_run["run"], tmp_path / "cascade"
    cascade(run / "models" / "small", run / "models" / "big", out=out, measure_speed=False, resamples=100)
    manifest = json.loads((out / "distilbench_model.json").read_text())
    model = load_cascade(out, manifest, load_stage=news_run["load_stage"])
    small, big = news_run["loaded"]["small"], news_run["loaded"]["big"]
    texts = pd.read_csv(run / "data" / "test.csv")["text"].tolist()
    probs = model.probabilities(texts)
    expected, stage = combine_stages(
        "multiclass",
        [small.probabilities(texts), big.probabilities(texts)],
        [None, None],
        [manifest["stages"][0]["threshold"]],
    )
    np.testing.assert_allclose(probs, expected)
    assert model.stage_counts == np.bincount(stage, minlength=2).tolist() and sum(model.stage_counts) == len(texts)
    assert model.task == "multiclass" and model.label_names == LABELS and model.thresholds.shape == (3,)
    assert model.kind == "cascade" and model.path == out
    big.asked.clear()
    model.probabilities(texts[:100])
    assert len(big.asked) == int((stage[:100] == 1).sum())  # the big model sees only the deferred rows


def test_a_stage_that_never_answers_is_not_loaded(tmp_path):
    table = {"a": np.array([0.9, 0.05, 0.05]), "b": np.array([0.2, 0.7, 0.1])}
    manifest = {
        "kind": "cascade",
        "task": "multiclass",
        "label_names": LABELS,
        "thresholds": [0.5] * 3,
        "stages": [{"model": "small", "threshold": None}, {"model": "big"}],
    }
    (tmp_path / "big").mkdir()
    loaded = []
    model = load_cascade(tmp_path, manifest, load_stage=lambda path: loaded.append(path) or TableModel(table))
    assert loaded == [str(tmp_path / "big")]
    np.testing.assert_allclose(model.probabilities(["a", "b"]), np.stack([table["a"], table["b"]]))
    assert model.stage_counts == [0, 2]


def test_a_multilabel_cascade_keeps_each_stage_s_decisions_under_the_big_model_s_thresholds():
    names = ["toxic", "insult"]
    small = TableModel(
        {"x": np.array([0.95, 0.02]), "y": np.array([0.5, 0.5])}, "multilabel", names, thresholds=[0.3, 0.4]
    )
    big = TableModel({"x": np.array([0.1, 0.1]), "y": np.array([0.9, 0.9])}, "multilabel", names, [0.6, 0.6])
    model = CascadeModel("multilabel", names, [small, big], [0.5])
    probs = model.probabilities(["x", "y"])
    assert (probs[0] >= model.thresholds).tolist() == [True, False]  # small's own decision on x
    np.testing.assert_allclose(probs[1], [0.9, 0.9])  # y is unsure for small: the big model's answer
    assert model.stage_counts == [1, 1]


def test_models_of_different_labels_are_refused(news_run, tmp_path):
    other = TableModel({}, label_names=["a", "b", "c"])
    run = news_run["run"]

    def load_stage(path):
        return other if "small" in path else TableModel({})

    with pytest.raises(DistilbenchError, match="share task and labels"):
        experiment.build_cascade(
            [run / "models" / "small", run / "models" / "big"], tmp_path / "c", _config(), load_stage=load_stage
        )


def test_models_from_no_common_run_need_data(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with pytest.raises(DistilbenchError, match="pass --data"):
        experiment.build_cascade(
            [tmp_path / "a", tmp_path / "b"], tmp_path / "c", _config(), load_stage=lambda p: TableModel({})
        )


def test_out_is_never_a_directory_of_someone_else_s_and_replaced_only_with_overwrite(news_run, tmp_path):
    from distilbench.api import cascade

    run = news_run["run"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    models = (run / "models" / "small", run / "models" / "big")
    with pytest.raises(DistilbenchError, match="not a cascade directory"):
        cascade(*models, out=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"
    out = tmp_path / "c"
    cascade(*models, out=out, measure_speed=False, resamples=100)
    with pytest.raises(DistilbenchError, match="--overwrite"):
        cascade(*models, out=out, measure_speed=False, resamples=100)
    cascade(*models, out=out, overwrite=True, objective="accuracy", measure_speed=False, resamples=100)
    assert json.loads((out / "distilbench_model.json").read_text())["objective"] == "accuracy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "mine", "runs"]  # no temporary folder left


def _config(**settings):
    from distilbench.config import load_config

    return load_config(None, {"resamples": 100, **settings})


def test_a_multilabel_cascade_from_data_files(tmp_path):
    """--data and --test-data files, 0/1 label columns, the models' tuned thresholds."""
    rng = np.random.default_rng(1)
    names = ["toxic", "insult"]
    tables: dict[str, dict] = {"small": {}, "big": {}}
    for split in ("calib", "test"):
        truth = (rng.random((2000, 2)) < 0.2).astype(int)
        sure = rng.random(2000)
        small = np.where(truth == 1, 0.5 + sure[:, None] / 2, 0.5 - sure[:, None] / 2)  # right, unsure or not
        unsure = sure < 0.3
        small[unsure] = 1 - small[unsure]  # wrong where it is least sure
        big = np.where(rng.random((2000, 2)) < 0.95, truth, 1 - truth) * 0.8 + 0.1
        texts = [f"{split} {i}" for i in range(2000)]
        pd.DataFrame({"text": texts, "toxic": truth[:, 0], "insult": truth[:, 1]}).to_csv(tmp_path / f"{split}.csv")
        tables["small"].update(zip(texts, small))
        tables["big"].update(zip(texts, big))
    for name in tables:
        (tmp_path / name).mkdir()

    def load_stage(path):
        return TableModel(tables[Path(path).name], "multilabel", names, thresholds=[0.5, 0.5])

    report = experiment.build_cascade(
        [tmp_path / "small", tmp_path / "big"],
        tmp_path / "cascade",
        _config(label_columns=names),
        rows=experiment.CascadeRun(data=str(tmp_path / "calib.csv"), test_data=str(tmp_path / "test.csv")),
        load_stage=load_stage,
    )
    assert report["metric"] == "hamming_score" and report["choice"]["guaranteed"]
    assert report["test"]["shares"][0] > 0.3 and report["test"]["rows"] == 2000
    manifest = json.loads((tmp_path / "cascade" / "distilbench_model.json").read_text())
    assert manifest["task"] == "multilabel" and manifest["thresholds"] == [0.5, 0.5]


def test_real_checkpoints_load_once_through_the_default_loader(tmp_path, minilm_tokenizer):
    """Two tiny random BERT classifiers as saved by fine-tuning, loaded by ChunkPredictor (no stand-ins)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    for seed, name in ((0, "small"), (1, "big")):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=minilm_tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
            problem_type="single_label_classification",
        )
        BertForSequenceClassification(config).save_pretrained(tmp_path / name)
        minilm_tokenizer.save_pretrained(tmp_path / name)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"text": [f"headline number {i}" for i in range(80)], "label": rng.choice(LABELS, 80)})
    frame.to_csv(tmp_path / "calib.csv", index=False)
    report = experiment.build_cascade(
        [tmp_path / "small", tmp_path / "big"],
        tmp_path / "cascade",
        _config(),
        rows=experiment.CascadeRun(
            data=str(tmp_path / "calib.csv"), test_data=str(tmp_path / "calib.csv"), device="cpu", rounds=1
        ),
    )
    assert report["test"]["rows"] == 80 and report["speed"]["rounds"] == 1
    manifest = json.loads((tmp_path / "cascade" / "distilbench_model.json").read_text())
    model = load_cascade(tmp_path / "cascade", manifest, device="cpu")
    probs = model.probabilities(frame["text"].tolist()[:10])
    assert probs.shape == (10, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert sum(model.stage_counts) == 10


def test_three_stages_from_the_api_and_a_clear_error_for_mixed_arguments(news_run, tmp_path):
    from distilbench.api import cascade

    run = news_run["run"]
    small, big = run / "models" / "small", run / "models" / "big"
    with pytest.raises(DistilbenchError, match="either small and big"):
        cascade(small, big, stages=[small, big], out=tmp_path / "c")
    report = cascade(stages=[small, small, big], out=tmp_path / "c", max_loss=1.0, measure_speed=False)
    manifest = json.loads((tmp_path / "c" / "distilbench_model.json").read_text())
    assert len(manifest["stages"]) == 3 and "threshold" not in manifest["stages"][2]
    assert [stage["rows"] for stage in report["choice"]["stages"]] == [1500, 1500]  # the rows split in two
    assert sum(report["test"]["shares"]) == pytest.approx(1.0)
