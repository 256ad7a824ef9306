"""End to end: `compare` on small slices of the shared real data, with tiny random models."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import pipeline

from distilbench.config import ExperimentConfig
from distilbench.evaluation.metrics import tune_thresholds
from distilbench.evaluation.verdicts import interval_text
from distilbench.experiments.compare import compare, evaluate, printed_table
from distilbench.runs import model_slug

ROW_KEYS = {"model", "params", "size_mb", "best_epoch", "test", "train_time_s", "eval_time_s", "eval_speedup"}


def small_config(tmp_path, models, **overrides) -> ExperimentConfig:
    values = dict(
        epochs=2,
        train_batch_size=16,
        eval_batch_size=32,
        learning_rate=5e-4,
        max_length=32,
        precision="fp32",
        backend="torch-fp32",
        out=str(tmp_path / "run"),
        models=models,
    )
    values.update(overrides)
    return ExperimentConfig(**values).validate()


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory, learnable_bert_dir, shared_data):
    tmp = tmp_path_factory.mktemp("mc")
    # enough steps (3 epochs of 864 headlines at a high rate) for a tiny random model to learn words, not only
    # the class balance: with 2 epochs of 288 at 5e-4 both models answered the majority class for every text
    tiny_bert_dir = learnable_bert_dir
    config = small_config(
        tmp,
        [str(tiny_bert_dir), f"student:{tiny_bert_dir}"],
        task="multiclass",
        epochs=3,
        learning_rate=3e-3,
        data=str(shared_data("news-headlines.csv")),
        label_column="category",
        max_samples=1200,
        backend="auto",
    )  # the default: each model's backend chosen by measurement
    rows = compare(config, progress=False)
    return config, rows, tmp / "run"


def test_multiclass_run_directory_holds_every_artefact(multiclass_run):
    config, rows, run = multiclass_run
    assert (run / "config.yaml").is_file()
    for split in ("train", "val", "test"):
        assert (run / "data" / f"{split}.csv").is_file()
    sizes = {s: len(pd.read_csv(run / "data" / f"{s}.csv")) for s in ("train", "val", "test")}
    assert sizes == {"train": 864, "val": 96, "test": 240}
    assert (run / "data" / "label_counts.csv").is_file()
    for row in rows:
        slug = model_slug(row["model"])
        model_dir = run / "models" / slug
        assert sorted(p.name for p in model_dir.glob("epoch-*")) == ["epoch-1", "epoch-2", "epoch-3"]
        assert (model_dir / "epoch-1" / "model.safetensors").is_file()
        assert (model_dir / "best").resolve() == (model_dir / row["kept"]).resolve()
        stats = json.loads((run / "results" / slug / "training_stats.json").read_text())
        assert [e["epoch"] for e in stats["epochs"]] == [1, 2, 3]
        # multiclass default: the averages of the last 2 and 3 epochs compete with the epochs on validation
        assert [(a["checkpoint"], a["epochs"]) for a in stats["averages"]] == [
            ("average-2-3", [2, 3]),
            ("average-1-3", [1, 2, 3]),
        ]
        assert {k for k in stats["averages"][0] if k.startswith("val_")} == {
            k for k in stats["epochs"][0] if k.startswith("val_")
        }
        candidates = stats["epochs"] + stats["averages"]
        best_accuracy = max(c["val_accuracy"] for c in candidates)
        kept = next(c for c in candidates if c.get("checkpoint", f"epoch-{c.get('epoch')}") == row["kept"])
        assert kept["val_accuracy"] == best_accuracy and stats["kept"] == row["kept"]
        assert row["val"]["accuracy"] == kept["val_accuracy"]
        from safetensors.torch import load_file

        epochs = [load_file(model_dir / f"epoch-{e}" / "model.safetensors") for e in (1, 2, 3)]
        average = load_file(model_dir / "average-1-3" / "model.safetensors")
        assert average.keys() == epochs[0].keys()
        for name, value in average.items():  # each weight the mean of the three epochs'
            expected = sum(e[name].double() for e in epochs) / 3 if value.is_floating_point() else epochs[0][name]
            assert torch.allclose(value.double(), expected, atol=1e-6), name
        for key in ("train_loss", "val_loss", "val_accuracy", "train_time_s", "val_time_s", "total_time_s"):
            assert all(isinstance(e[key], float) for e in stats["epochs"]), key
        test_stats = json.loads((run / "results" / slug / "test_stats.json").read_text())
        assert len(test_stats["confusion_matrix"]) == 4
        assert sum(map(sum, test_stats["confusion_matrix"])) == 240
        predictions = pd.read_csv(run / "results" / slug / "test_predictions.csv")
        assert len(predictions) == 240
        assert np.allclose(predictions.filter(like="prob_").sum(axis=1), 1.0, atol=1e-4)
        accuracy = (predictions["true"] == predictions["predicted"]).mean()
        assert accuracy == pytest.approx(test_stats["accuracy"])


def test_comparison_files_have_the_promised_columns(multiclass_run):
    config, rows, run = multiclass_run
    saved = json.loads((run / "comparison.json").read_text())
    assert [r["model"] for r in saved["rows"]] == config.models
    for row in saved["rows"]:
        assert ROW_KEYS <= set(row)
        assert 0.0 <= row["test"]["accuracy"] <= 1.0
        assert row["params"] > 0 and row["size_mb"] > 0
    assert saved["rows"][0]["eval_speedup"] == pytest.approx(1.0)
    for row in saved["rows"]:  # the speed columns come from the bench protocol
        spread = row["throughput"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        assert row["latency_ms"]["p50"] > 0
    assert saved["rows"][1]["eval_speedup"] == pytest.approx(
        saved["rows"][1]["throughput"]["median"] / saved["rows"][0]["throughput"]["median"]
    )
    assert (run / "speed.json").is_file()
    assert (run / "report.html").is_file() and (run / "report.md").is_file()  # compare ends with its report
    table = pd.read_csv(run / "comparison.csv")
    assert list(table["model"]) == config.models
    assert {"accuracy", "train_time_s", "eval_time_s", "size_mb", "params_m"} <= set(table.columns)


def test_tiny_models_learn_something(multiclass_run):
    """The best model beats always answering the test split's most common class, by more than chance allows:
    a one-sided binomial test against the majority share (p < 0.01), which a majority-class predictor (or a
    constant one, or a coin weighted like the labels) cannot pass."""
    from scipy.stats import binomtest

    _, rows, run = multiclass_run
    test = pd.read_csv(run / "data" / "test.csv")
    majority = test["label"].value_counts(normalize=True).iloc[0]
    for row in rows:
        predictions = pd.read_csv(run / "results" / model_slug(row["model"]) / "test_predictions.csv")
        assert list(predictions["true"]) == list(test["label"])  # the same split, in the same order
    best = max(rows, key=lambda r: r["test"]["accuracy"])
    correct = round(best["test"]["accuracy"] * len(test))
    p = binomtest(correct, len(test), majority, alternative="greater").pvalue
    assert p < 0.01, f"best test accuracy {best['test']['accuracy']:.3f} vs majority class {majority:.3f} (p={p:.3f})"


def test_saved_checkpoint_gives_the_same_probabilities_in_transformers_pipeline(multiclass_run):
    """The pipeline's probabilities equal distilbench's torch-fp32 ones; the saved test predictions are those of the
    backend auto chose, equal to fp32's within that backend's rounding."""
    from distilbench.models.registry import load_trained
    from distilbench.runtime.backends import load_backend
    from distilbench.runtime.inference import backend_logits, logits_to_probs

    _, rows, run = multiclass_run
    for row in rows:
        slug = model_slug(row["model"])
        best = run / "models" / slug / "best"
        predictions = pd.read_csv(run / "results" / slug / "test_predictions.csv").head(8)
        model, tokenizer, task, label_names = load_trained(best)
        logits, _ = backend_logits(
            load_backend(model, "torch-fp32"), tokenizer, predictions["text"].tolist(), max_length=32
        )
        fp32 = logits_to_probs(task, logits)
        classifier = pipeline("text-classification", model=str(best), top_k=None, truncation=True, max_length=32)
        rounding = 1e-4 if row["backend"].endswith("fp32") else 0.05
        for i, (text, (_, saved)) in enumerate(zip(predictions["text"], predictions.iterrows())):
            scores = {s["label"]: s["score"] for s in classifier([text])[0]}
            for label, score in scores.items():
                assert score == pytest.approx(fp32[i, label_names.index(label)], abs=1e-5)
                assert score == pytest.approx(saved[f"prob_{label}"], abs=rounding)


def test_saved_probabilities_keep_the_ranking_of_tiny_scores(tmp_path):
    # a confident multilabel model's negatives score 1e-7 and less: rounded to 6 decimals they tied at 0, and the
    # ROC-AUC of the verdicts (computed from this file) fell below the run's own (0.9793 against 0.9834, seed 42)
    from distilbench.evaluation.metrics import compute_metrics
    from distilbench.evaluation.verdicts import saved_probabilities
    from distilbench.experiments.compare import predictions_frame

    rng = np.random.default_rng(0)
    labels = np.zeros((200, 2), dtype=int)
    labels[:20, 0] = labels[20:40, 1] = 1
    logits = np.where(labels == 1, -14.0, -17.0) + rng.normal(0, 1.5, size=labels.shape)
    probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
    names = ["a", "b"]
    frame = predictions_frame(pd.DataFrame({"text": [f"t{i}" for i in range(200)]}), "multilabel", names, labels, probs)
    frame.to_csv(tmp_path / "test_predictions.csv", index=False)
    saved = saved_probabilities(tmp_path, names)
    assert np.array_equal(saved.astype(np.float32), probs)  # float32 written in full, read back exactly
    in_memory, from_file = (compute_metrics("multilabel", labels, p, names)["roc_auc_macro"] for p in (probs, saved))
    assert from_file == in_memory


def test_evaluate_reproduces_the_test_metrics(multiclass_run, tmp_path):
    config, rows, run = multiclass_run
    slug = model_slug(rows[1]["model"])
    out = tmp_path / "eval.json"
    eval_config = ExperimentConfig(backend="torch-fp32", max_length=32)
    stats = evaluate(
        str(run / "models" / slug / "best"), str(run / "data" / "test.csv"), eval_config, str(out), progress=False
    )
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(rows[1]["test"]["accuracy"])
    assert stats["samples"] == 240


def test_multilabel_compare_end_to_end(tmp_path, tiny_bert_dir, shared_data):
    labels = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    # the random head: the tiny BERT's features hardly vary between texts, so a probed head rightly predicts
    # each label's prior for every text, and there would be no thresholds to tell validation from test
    config = small_config(
        tmp_path,
        [f"student:{tiny_bert_dir}"],
        task="multilabel",
        epochs=1,
        data=str(shared_data("toxic-comments.csv")),
        label_columns=labels,
        max_samples=300,
        head_init="random",
    )
    rows = compare(config, progress=False)
    run = tmp_path / "run"
    test = rows[0]["test"]
    for key in ("hamming_score", "hamming_loss", "exact_match", "f1_micro", "f1_macro"):
        assert 0.0 <= test[key] <= 1.0
    slug = model_slug(rows[0]["model"])
    test_stats = json.loads((run / "results" / slug / "test_stats.json").read_text())
    assert set(test_stats["per_label"]) == set(labels)
    predictions = pd.read_csv(run / "results" / slug / "test_predictions.csv")
    assert [c for c in predictions.columns if c.startswith("prob_")] == [f"prob_{n}" for n in labels]
    saved = json.loads((run / "models" / slug / "best" / "config.json").read_text())["distilbench"]
    assert list(saved["thresholds"]) == labels and saved["threshold_metric"] == "calibrated"
    assert saved["thresholds_tuned_on"] == "validation split"
    stored = np.array([saved["thresholds"][name] for name in labels])
    # the printed table shows the hamming score at these thresholds, with its interval
    at_thresholds = rows[0]["test_tuned_ci"]["hamming_score"]
    assert at_thresholds["value"] == pytest.approx(rows[0]["test_tuned"]["hamming_score"])
    shown = printed_table(rows, "multilabel")["hamming_score at its thresholds [95% CI]"]
    assert list(shown) == [interval_text(at_thresholds)]

    # The stored thresholds are the ones tuned on the saved validation predictions, not on test (the thesis's
    # leak); on this split the two differ, so a run that tuned on test would fail here.
    def tuned_on(split: str) -> np.ndarray:
        frame = pd.read_csv(run / "results" / slug / f"{split}_predictions.csv", keep_default_na=False)
        truth = np.array([[name in str(row).split("|") for name in labels] for row in frame["true"]], dtype=int)
        return tune_thresholds(truth, frame[[f"prob_{name}" for name in labels]].to_numpy(), "calibrated")

    on_val, on_test = tuned_on("val"), tuned_on("test")
    np.testing.assert_allclose(stored, on_val, atol=2e-6)  # stored rounded to 6 decimals, like the probabilities
    assert not np.allclose(on_val, on_test, atol=1e-4), "tuning on test gives the same thresholds here"
    assert not np.allclose(stored, on_test, atol=1e-4)
    assert not np.allclose(stored, 0.5)  # tuned, not the default
    # the tuned thresholds are used for the test predictions and reported beside 0.5
    assert test_stats["thresholds"] == pytest.approx(saved["thresholds"])
    assert rows[0]["test_tuned"]["hamming_score"] == test_stats["at_tuned_thresholds"]["hamming_score"]
    probs = predictions[[f"prob_{name}" for name in labels]].to_numpy()
    predicted = np.array([[name in str(row).split("|") for name in labels] for row in predictions["predicted"]])
    clear = np.abs(probs - stored) > 2e-6  # the CSV's probabilities and the thresholds are rounded to 6 decimals
    assert clear.any() and np.array_equal(predicted[clear], (probs >= stored)[clear])
    classifier = pipeline(
        "text-classification", model=str(run / "models" / slug / "best"), top_k=None, truncation=True, max_length=32
    )
    scores = {s["label"]: s["score"] for s in classifier([predictions["text"][0]])[0]}
    for label in labels:  # the pipeline applies a sigmoid per label for multi_label_classification
        assert scores[label] == pytest.approx(predictions[f"prob_{label}"][0], abs=1e-4)


@pytest.mark.parametrize("backend", ["torch-bf16", "onnx-int8"])
def test_other_backends_are_checked_against_fp32(multiclass_run, tmp_path, backend):
    _, rows, run = multiclass_run
    best = run / "models" / model_slug(rows[0]["model"]) / "best"
    config = ExperimentConfig(backend=backend, max_length=32)
    stats = evaluate(str(best), str(run / "data" / "test.csv"), config, None, progress=False, check_fp32=True)
    assert stats["backend"] == backend
    check = stats["fp32_check"]
    assert check["accuracy_fp32"] == pytest.approx(rows[0]["test"]["accuracy"])
    assert check["agreement"] >= 0.9  # tiny random models have near-tied logits; real ones agree more
    assert check["accuracy_delta"] == pytest.approx(stats["accuracy"] - check["accuracy_fp32"])


def test_auto_backend_is_chosen_and_recorded(multiclass_run):
    """compare's default backend is auto: the choice, every candidate's speed and agreement and the reason are in
    test_stats.json and comparison.json, and evaluate reuses the cached choice without a second fp32 pass."""
    _, rows, run = multiclass_run
    slug = model_slug(rows[0]["model"])
    saved = json.loads((run / "results" / slug / "test_stats.json").read_text())
    choice = saved["backend_choice"]
    assert saved["backend"] == choice["chosen"] == rows[0]["backend"] == rows[0]["backend_choice"]["chosen"]
    assert choice["candidates"]["torch-fp32"]["valid"] and choice["candidates"][choice["chosen"]]["valid"]
    assert choice["guard"]["source"] == "validation split" and choice["guard"]["labels"]
    assert set(choice["candidates"]) >= {"torch-fp32", "onnx-fp32"}
    assert not set(choice["candidates"]) & {"torch-int8", "onnx-int8"}  # batch-dependent: never auto's
    stats = evaluate(
        str(run / "models" / slug / "best"),
        str(run / "data" / "test.csv"),
        ExperimentConfig(max_length=32),
        None,
        progress=False,
    )
    assert stats["backend_choice"]["cached"] and stats["backend"] == choice["chosen"]
    assert "fp32_check" not in stats


def test_student_after_its_teacher_is_distilled_from_it(tmp_path, tiny_bert_dir, monkeypatch, shared_data):
    """compare fine-tunes the teacher, caches its outputs on the training texts once, distils the student."""
    import distilbench.training.distillation as distillation

    calls = []
    original = distillation.distillation_loss
    monkeypatch.setattr(distillation, "distillation_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    config = small_config(
        tmp_path,
        [str(tiny_bert_dir), f"student:{tiny_bert_dir}"],
        task="multiclass",
        data=str(shared_data("news-headlines.csv")),
        label_column="category",
        max_samples=200,
    )
    rows = compare(config, progress=False)
    assert "fine-tuned on labels" == rows[0]["method"]
    assert "distilled from the fine-tuned" in rows[1]["method"]
    caches = list((tmp_path / "run" / "cache").glob("*.train-logits.npy"))
    assert len(caches) == 1 and np.load(caches[0]).shape == (144, 4)
    steps_per_epoch = -(-144 // 16)
    assert len(calls) == 2 * steps_per_epoch  # the distillation loss on every training step, teacher not re-run


def test_no_distill_trains_the_student_on_labels(tmp_path, tiny_bert_dir, shared_data):
    config = small_config(
        tmp_path,
        [str(tiny_bert_dir), f"student:{tiny_bert_dir}"],
        task="multiclass",
        epochs=1,
        data=str(shared_data("news-headlines.csv")),
        label_column="category",
        max_samples=200,
        distill=False,
    )
    rows = compare(config, progress=False)
    assert rows[1]["method"].endswith("fine-tuned on labels")
    assert not (tmp_path / "run" / "cache").exists()


def test_missing_shared_data_is_a_listed_skip_locally_and_a_failure_on_ci(monkeypatch, tmp_path, pytestconfig):
    """The one place that finds the shared data sets: a missing one skips its tests with the reason (-rs lists
    every skip), and under CI=true fails them, so a CI run cannot pass with the end-to-end tests left out."""
    import conftest

    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "nowhere")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared data not found at .*nowhere/news-headlines.csv"):
        conftest.shared_file("news-headlines.csv")
    monkeypatch.setenv("CI", "true")
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:  # a skip must not escape
        conftest.shared_file("news-headlines.csv")
    assert outcome.type is pytest.fail.Exception, f"skipped on CI: {outcome.value}"
    assert re.match(r"shared data not found at .*news-headlines.csv \(CI=true: ", str(outcome.value))
    assert "s" in pytestconfig.option.reportchars  # pyproject's addopts: skipped tests are listed, with reasons


def test_a_misspelt_label_column_leaves_nothing_behind_and_the_corrected_command_runs(
    tmp_path, tiny_bert_dir, shared_data
):
    """The data is checked before the run directory is created: the user's retry needs no --overwrite."""
    from distilbench.core.console import DistilbenchError

    data = str(shared_data("news-headlines.csv"))
    settings = dict(task="multiclass", data=data, epochs=1, max_samples=100, measure_speed=False)
    typo = "label column 'categroy' not found in news-headlines.csv.* Did you mean 'category'"
    with pytest.raises(DistilbenchError, match=typo):
        compare(small_config(tmp_path, [str(tiny_bert_dir)], label_column="categroy", **settings), progress=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # an empty directory the user made is kept, and stays empty
    with pytest.raises(DistilbenchError, match="label column 'categroy' not found"):
        compare(small_config(tmp_path, [str(tiny_bert_dir)], label_column="categroy", **settings), progress=False)
    assert list((tmp_path / "run").iterdir()) == []
    rows = compare(small_config(tmp_path, [str(tiny_bert_dir)], label_column="category", **settings), progress=False)
    assert len(rows) == 1 and (tmp_path / "run" / "comparison.json").is_file()
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*"))
    # --overwrite with a typo: refused before the finished run is deleted
    config = small_config(tmp_path, [str(tiny_bert_dir)], label_column="categroy", **settings)
    with pytest.raises(DistilbenchError, match="label column 'categroy' not found"):
        compare(config, overwrite=True, progress=False)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*")) == before


def test_a_misspelt_model_fails_before_any_training_or_writing(tmp_path, tiny_bert_dir, shared_data, monkeypatch):
    from distilbench.core.console import DistilbenchError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = small_config(
        tmp_path,
        [str(tiny_bert_dir), "student:minlm-l6"],
        data=str(shared_data("news-headlines.csv")),
        label_column="category",
        max_samples=100,
    )
    with pytest.raises(DistilbenchError, match="did you mean minilm-l6"):
        compare(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_start_that_fails_on_its_data_removes_what_it_wrote(tmp_path, shared_data):
    """The net under every verb that opens a run and then reads its data (tune does): the run directory it
    created is removed again; a resumed run's is never touched."""
    from distilbench.config import ExperimentConfig
    from distilbench.core.console import DistilbenchError
    from distilbench.experiments.compare import open_run, start_run

    config = ExperimentConfig(data=str(shared_data("news-headlines.csv")), label_column="nope", out=str(tmp_path / "r"))
    with pytest.raises(DistilbenchError, match="label column 'nope' not found"):
        with open_run(config, overwrite=False, resume=False) as run:
            assert (tmp_path / "r" / ".distilbench-run").is_file()
            start_run(config, run, resume=False)
    assert not (tmp_path / "r").exists()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("task: multiclass\n")  # a run from before the marker, resumed
    with pytest.raises(DistilbenchError, match="label column 'nope' not found"):
        with open_run(config, overwrite=False, resume=True) as run:
            start_run(config, run, resume=True)
    assert (tmp_path / "r" / "config.yaml").is_file()
