"""Issue 15 end to end: seeds, intervals, paired verdicts, baselines, 'learned nothing', loss weights, early
stopping and the thesis preset, on tiny random models and slices of the shared headlines."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from distilbench.cli.commands import main
from distilbench.config import PRESETS, ExperimentConfig, load_config
from distilbench.core.console import DistilbenchError
from distilbench.experiments import compare as compare_module
from distilbench.experiments.compare import compare
from distilbench.runs import model_slug
from distilbench.training import finetune as training
from distilbench.training import trainer
from distilbench.training.trainer import label_loss, loss_weights


def config_for(tmp_path, models, data, **overrides) -> ExperimentConfig:
    values = dict(
        task="multiclass",
        data=str(data),
        label_column="category",
        max_samples=600,
        epochs=2,
        train_batch_size=16,
        eval_batch_size=64,
        learning_rate=3e-3,
        max_length=24,
        precision="fp32",
        backend="torch-fp32",
        measure_speed=False,
        out=str(tmp_path / "run"),
        models=models,
        resamples=300,
    )
    values.update(overrides)
    return ExperimentConfig(**values).validate()


# --------------------------------------------------------------------------- settings


def test_seeds_parse_as_a_count_or_a_list_and_the_splits_keep_their_seed():
    assert load_config(None, {"seeds": "3", "seed": 7}).seeds == [7, 8, 9]
    assert load_config(None, {"seeds": "1,5,2"}).seeds == [1, 5, 2]
    config = load_config(None, {"seeds": "2"})
    assert config.training_seeds() == [42, 43] and config.data_seed() == 42
    assert load_config(None, {"seeds": "2", "split_seed": 3}).data_seed() == 3
    assert load_config(None, {}).training_seeds() == [42]
    for bad in ("0", "x", "1,1"):
        with pytest.raises(DistilbenchError, match="--seeds"):
            load_config(None, {"seeds": bad})


def test_a_count_of_seeds_that_looks_like_a_seed_is_told_apart(capsys):
    assert load_config(None, {"seeds": "42"}).seeds == list(range(42, 84))
    err = capsys.readouterr().err
    assert "--seeds 42 is a count: every model is trained 42 times (seeds 42-83)" in err and "--seed 42" in err
    assert load_config(None, {"seeds": "42,"}).seeds == [42]
    assert load_config(None, {"seeds": "10"}).seeds == list(range(42, 52))
    assert capsys.readouterr().err == ""


def test_flags_are_checked_with_messages_that_name_them():
    cases = {
        "--warmup-ratio": dict(warmup_ratio=1.0),
        "--class-weight": dict(class_weight="balanced", task="multilabel"),
        "--pos-weight": dict(pos_weight="auto"),
        "--patience": dict(patience=0),
        "--margin": dict(margin=-1.0),
        "--reference": dict(reference="bert-base-uncased"),
    }
    for flag, values in cases.items():
        with pytest.raises(DistilbenchError, match=flag):
            load_config(None, values)


def test_preset_thesis_restores_the_thesis_settings_and_flags_still_win():
    config = load_config(None, {"preset": "thesis", "task": "multilabel", "learning_rate": 1e-4})
    for key, value in PRESETS["thesis"].items():
        if key != "learning_rate":
            assert getattr(config, key) == value, key
    assert config.learning_rate == 1e-4
    assert config.best_epoch_metric() == "hamming_score"  # the thesis's choice
    assert load_config(None, {"task": "multilabel"}).best_epoch_metric() == "hamming_score"  # from a probed head
    assert load_config(None, {"task": "multilabel", "head_init": "random"}).best_epoch_metric() == "loss"
    assert load_config(None, {"task": "multiclass"}).best_epoch_metric() == "accuracy"


# --------------------------------------------------------------------------- loss weights


def test_balanced_class_weights_and_capped_positive_weights():
    config = ExperimentConfig(task="multiclass", class_weight="balanced")
    weights = loss_weights("multiclass", np.array([0, 0, 0, 1]), 3, config)
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1), 1.0])  # class 2 has no example: 1
    assert loss_weights("multiclass", np.array([0, 1]), 2, ExperimentConfig()) is None
    labels = np.array([[1, 0, 0]] * 1 + [[0, 1, 0]] * 2 + [[0, 0, 0]] * 97, dtype=float)
    config = ExperimentConfig(task="multilabel", pos_weight="auto", pos_weight_cap=10)
    assert loss_weights("multilabel", labels, 3, config).tolist() == pytest.approx([10.0, 10.0, 1.0])
    config.pos_weight_cap = 60
    assert loss_weights("multilabel", labels, 3, config).tolist() == pytest.approx([60.0, 49.0, 1.0])


def test_rare_positive_weights_weigh_only_the_labels_with_few_positives():
    """--pos-weight rare: a label with fewer than --rare-positives training positives gets auto's weight,
    a label with that many or more keeps 1."""
    labels = np.zeros((1000, 4))
    labels[:5, 0] = 1  # 5 positives: rare, auto's 199 capped at 10
    labels[:150, 1] = 1  # 150 positives: rare below 200, 850 / 150
    labels[:300, 2] = 1  # 300 positives: frequent
    config = ExperimentConfig(task="multilabel", pos_weight="rare")
    assert config.rare_positives == 200
    assert loss_weights("multilabel", labels, 4, config).tolist() == pytest.approx([10.0, 850 / 150, 1.0, 1.0])
    config.rare_positives = 100
    assert loss_weights("multilabel", labels, 4, config).tolist() == pytest.approx([10.0, 1.0, 1.0, 1.0])
    auto = ExperimentConfig(task="multilabel", pos_weight="auto")
    assert loss_weights("multilabel", labels, 4, auto).tolist() == pytest.approx([10.0, 850 / 150, 700 / 300, 1.0])
    with pytest.raises(DistilbenchError, match="--rare-positives"):
        load_config(None, {"task": "multilabel", "pos_weight": "rare", "rare_positives": 0})


def test_weighted_label_losses_weigh_what_they_claim():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    weights = torch.tensor([1.0, 3.0])
    per_example = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (per_example * weights[labels]).sum() / weights[labels].sum()
    assert label_loss(logits, labels, "multiclass", weights).item() == pytest.approx(expected.item())
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    pos = torch.tensor([5.0, 1.0])
    shifted = logits + torch.log(pos)  # the prior correction: see the next test
    manual = -(
        pos * targets * torch.nn.functional.logsigmoid(shifted)
        + (1 - targets) * torch.nn.functional.logsigmoid(-shifted)
    ).mean()
    assert label_loss(logits, targets, "multilabel", pos).item() == pytest.approx(manual.item(), rel=1e-6)
    unweighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert label_loss(logits, targets, "multilabel").item() == pytest.approx(unweighted.item())
    assert label_loss(logits, targets, "multilabel", pos).item() != pytest.approx(unweighted.item())


def test_positive_weights_keep_the_models_probabilities_calibrated():
    """A label with 10 % positives and weight 9: the logit that minimises the weighted loss is still the one
    whose probability is 10 % (a plain pos_weight would put it at 50 %), so the 0.5 threshold, the validation
    loss and the saved model's probabilities keep their meaning."""
    labels = torch.tensor([[1.0]] * 10 + [[0.0]] * 90)
    weight = torch.tensor([9.0])
    logit = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([logit], lr=0.5, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = label_loss(logit.expand(100, 1), labels, "multilabel", weight)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert torch.sigmoid(logit).item() == pytest.approx(0.10, abs=1e-3)


def test_class_weights_reach_the_training_loss(tmp_path, learnable_bert_dir, shared_data, monkeypatch):
    """With --class-weight balanced the Trainer's loss is the weighted cross-entropy of the training split."""
    seen = []
    real = trainer.label_loss

    def spy(logits, labels, task, weights=None, smoothing=0.0):
        seen.append(None if weights is None else weights.tolist())
        return real(logits, labels, task, weights, smoothing)

    monkeypatch.setattr(trainer, "label_loss", spy)
    config = config_for(
        tmp_path, [str(learnable_bert_dir)], shared_data("news-headlines.csv"), epochs=1, class_weight="balanced"
    )
    compare(config, progress=False)
    train = pd.read_csv(tmp_path / "run" / "data" / "train.csv")
    names = sorted(train["label"].unique())
    counts = train["label"].value_counts()
    expected = [len(train) / (len(names) * counts[n]) for n in names]
    assert seen and all(w == pytest.approx(expected, rel=1e-5) for w in seen)


def test_patience_stops_when_the_select_metric_stops_improving(tmp_path, learnable_bert_dir, shared_data):
    """A learning rate too small to move any fp32 weight: every epoch scores the same, so epoch 1 stays best and
    --patience 1 stops after epoch 2 of 5, keeping the best epoch's checkpoint."""
    config = config_for(
        tmp_path,
        [str(learnable_bert_dir)],
        shared_data("news-headlines.csv"),
        epochs=5,
        learning_rate=1e-30,
        patience=1,
        max_samples=300,
    )
    row = compare(config, progress=False)[0]
    stats = json.loads((tmp_path / "run" / "results" / model_slug(row["model"]) / "training_stats.json").read_text())
    assert [e["epoch"] for e in stats["epochs"]] == [1, 2]
    assert row["best_epoch"] == 1


# --------------------------------------------------------------------------- seeds, intervals, verdicts


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory, learnable_bert_dir, shared_data):
    tmp = tmp_path_factory.mktemp("seeds")
    models = [str(learnable_bert_dir), f"student:{learnable_bert_dir}"]
    config = config_for(
        tmp,
        models,
        shared_data("news-headlines.csv"),
        seeds=[5, 6],
        epochs=3,
        max_samples=1200,
        max_length=32,
        margin=50.0,
    )
    rows = compare(config, progress=False)
    return config, rows, tmp / "run"


def test_every_seed_is_kept_and_rows_report_mean_spread_and_intervals(seeded_run):
    config, rows, run = seeded_run
    saved = json.loads((run / "comparison.json").read_text())
    assert saved["seeds"] == [5, 6] and saved["reference"] == config.models[0]
    for row in saved["rows"]:
        slug = model_slug(row["model"])
        assert [s["seed"] for s in row["seeds"]] == [5, 6]
        for seed in (5, 6):
            assert (run / "models" / slug / f"seed-{seed}" / "best" / "model.safetensors").is_file()
            stats = json.loads((run / "results" / slug / f"seed-{seed}" / "test_stats.json").read_text())
            assert {"accuracy", "f1_macro"} <= set(stats["intervals"])
        per_seed = [s["test"]["accuracy"] for s in row["seeds"]]
        assert row["test"]["accuracy"] == pytest.approx(np.mean(per_seed))
        spread = row["test_spread"]["accuracy"]
        assert spread["min"] == min(per_seed) and spread["max"] == max(per_seed)
        assert spread["std"] == pytest.approx(np.std(per_seed, ddof=1))
        assert row["train_time_spread"]["max"] >= row["train_time_s"] >= row["train_time_spread"]["min"] > 0
        ci = row["test_ci"]["accuracy"]
        assert ci["low"] <= ci["value"] <= ci["high"] and ci["n_seeds"] == 2
        assert ci["value"] == pytest.approx(row["test"]["accuracy"])
        # the best validation seed is the model's checkpoint, and its files are the ones the report shows
        chosen = row["chosen_seed"]
        assert (run / "models" / slug / "best").resolve() == (
            run / "models" / slug / f"seed-{chosen}" / row["kept"]
        ).resolve()
        assert (run / "results" / slug / "test_predictions.csv").read_bytes() == (
            run / "results" / slug / f"seed-{chosen}" / "test_predictions.csv"
        ).read_bytes()


def test_each_student_seed_learns_from_the_same_seed_of_its_teacher(seeded_run):
    _, rows, run = seeded_run
    student = rows[1]
    teacher_slug = model_slug(rows[0]["model"])
    for entry in student["seeds"]:
        assert f"{teacher_slug}/seed-{entry['seed']}/best" in entry["method"]
    assert "the same seed's fine-tuned teacher" in student["method"]


def test_the_student_gets_a_paired_difference_mcnemar_and_a_verdict(seeded_run):
    config, rows, run = seeded_run
    teacher, student = rows
    assert teacher["vs_reference"] is None
    diff = student["vs_reference"]
    assert diff["reference"] == teacher["model"]
    assert diff["difference_points"] == pytest.approx(100 * (student["test"]["accuracy"] - teacher["test"]["accuracy"]))
    assert diff["low"] <= diff["difference_points"] <= diff["high"]
    assert diff["n_seeds"] == [2, 2] and len(diff["mcnemar_p_per_seed"]) == 2
    # a 50-point margin holds any tiny model whose interval is not absurd: the verdict must say "within"
    assert diff["verdict"] == "within" and diff["low"] > -50
    # per class and per length, over both seeds of each model, each against the same slice of the reference
    assert {e["kind"] for e in student["slices"]} == {"class", "length"} and teacher["slices"]
    assert all(e["vs_reference"]["verdict"] in ("within", "worse", "inconclusive") for e in student["slices"])
    assert all(e["vs_reference"] is None for e in teacher["slices"])
    table = pd.read_csv(run / "comparison.csv")
    assert list(table["verdict"]) == ["reference", "within"]
    assert {"accuracy_low", "accuracy_high", "accuracy_std_seeds", "diff_low", "diff_high"} <= set(table.columns)


def test_verdict_lines_name_the_reference_only_when_there_is_a_verdict(seeded_run):
    from distilbench.evaluation.verdicts import verdict_lines

    _, rows, run = seeded_run
    assessment = json.loads((run / "comparison.json").read_text())
    lines, _ = verdict_lines(rows, assessment)
    assert lines[0].startswith(f"verdicts against {rows[0]['model']}") and len(lines) == 2
    assert verdict_lines(rows[:1], assessment)[0] == []  # the reference alone: no header over nothing


def test_baselines_come_from_the_training_split_and_learning_models_are_not_flagged(seeded_run):
    _, rows, run = seeded_run
    saved = json.loads((run / "comparison.json").read_text())
    train = pd.read_csv(run / "data" / "train.csv")
    test = pd.read_csv(run / "data" / "test.csv")
    majority = train["label"].value_counts().idxmax()
    baseline = saved["baselines"]["baselines"]["majority_class"]
    assert majority in baseline["description"]
    assert baseline["metrics"]["accuracy"]["value"] == pytest.approx((test["label"] == majority).mean())
    for row in saved["rows"]:  # these tiny models learn words (test_compare checks it): not flagged
        assert row["learned_nothing"]["flag"] is False, row["learned_nothing"]


def test_the_report_shows_verdicts_baselines_and_the_forest_plot(seeded_run):
    _, rows, run = seeded_run
    report = (run / "report.md").read_text()
    assert "## Verdicts" in report and "Trivial baselines" in report and "plots/forest.png" in report
    assert (run / "plots" / "forest.png").stat().st_size > 1000
    assert "Warning" not in report


def test_a_model_that_learned_nothing_is_flagged_loudly(tmp_path, learnable_bert_dir, shared_data, capsys):
    config = config_for(
        tmp_path,
        [str(learnable_bert_dir)],
        shared_data("news-headlines.csv"),
        epochs=1,
        learning_rate=1e-30,
        max_samples=300,
    )
    row = compare(config, progress=False)[0]
    assert row["learned_nothing"]["flag"] is True
    assert "LEARNED NOTHING" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "run" / "comparison.csv")
    assert bool(table["learned_nothing"].iloc[0]) is True
    assert "Learned nothing" in (tmp_path / "run" / "report.md").read_text()


def test_resume_never_retrains_a_finished_seed(tmp_path, learnable_bert_dir, shared_data, monkeypatch):
    models = [str(learnable_bert_dir), f"student:{learnable_bert_dir}"]
    config = config_for(tmp_path, models, shared_data("news-headlines.csv"), seeds=[1, 2], epochs=1, max_samples=300)
    real = compare_module.run_model
    calls = []

    def crash_on_fourth(*args, **kwargs):
        calls.append(kwargs.get("slug"))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_module, "run_model", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        compare(config, progress=False)
    trained = []
    real_train = training.train_model

    def counting(*args, **kwargs):
        trained.append(args[8])  # the model's name as shown (with its seed)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(compare_module, "run_model", real)
    monkeypatch.setattr(training, "train_model", counting)
    rows = compare(config, progress=False, resume=True)
    assert trained == [f"student:{learnable_bert_dir} (seed 2, 2 of 2)"]
    assert [s["seed"] for s in rows[1]["seeds"]] == [1, 2]


def test_the_cli_takes_seeds_margin_and_reference(tmp_path, learnable_bert_dir, shared_data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "compare",
                "--data",
                str(shared_data("news-headlines.csv")),
                "--label-column",
                "category",
                "--models",
                str(learnable_bert_dir),
                "--reference",
                "minilm-l6",
                "--out",
                str(tmp_path / "r"),
            ]
        )
    assert exit_info.value.code == 2
    assert "--reference minilm-l6 is not one of --models" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_multilabel_rows_get_intervals_at_the_thresholds_the_model_predicts_with(tmp_path):
    # a model whose scores rank one label well but sit below 0.5: at 0.5 it predicts nothing; the thresholds
    # tuned on validation (saved in test_stats.json, as compare leaves them) recover the label
    from distilbench.evaluation.metrics import compute_metrics
    from distilbench.evaluation.verdicts import assess
    from distilbench.runs import RunDir

    rng = np.random.default_rng(3)
    names = ["a", "b"]
    labels = (rng.random((400, 2)) < [0.2, 0.1]).astype(int)
    probs = np.where(labels == 1, 0.4, 0.05) + rng.normal(0, 0.03, labels.shape)
    thresholds = {"a": 0.2, "b": 0.5}
    results = tmp_path / "results" / "m"
    results.mkdir(parents=True)
    pd.DataFrame({f"prob_{n}": probs[:, j] for j, n in enumerate(names)}).to_csv(results / "test_predictions.csv")
    (results / "test_stats.json").write_text(json.dumps({"thresholds": thresholds}))
    test = pd.DataFrame(labels, columns=names)
    config = ExperimentConfig(task="multilabel", models=["m"], label_columns=names, resamples=200)
    rows = [{"model": "m"}]
    assess(rows, config.verdict_options(), RunDir(tmp_path), {"train": test, "test": test}, names)
    tuned = rows[0]["test_tuned_ci"]
    assert set(tuned) == {"hamming_score", "f1_micro", "f1_macro"}  # ROC-AUC does not depend on thresholds
    expected = compute_metrics("multilabel", labels, probs, names, np.array([0.2, 0.5]))
    for metric, ci in tuned.items():
        assert ci["value"] == pytest.approx(expected[metric])
        assert ci["low"] <= ci["value"] <= ci["high"]
    assert tuned["hamming_score"]["value"] > rows[0]["test_ci"]["hamming_score"]["value"] + 0.05
    # no texts in these splits: slices per label only; scores below 0 are no probabilities: no ECE, no failure
    assert {(e["kind"], e["metric"]) for e in rows[0]["slices"]} == {("label", "f1"), ("label", "roc_auc")}
    assert rows[0]["calibration_error"]["ece"] is None and "between 0 and 1" in rows[0]["calibration_error"]["note"]
