"""`distilbench tune`: a search on tiny models writes its results, prunes, resumes, never reads the test
split, and its best.yaml runs in compare with the best trial's result."""

import contextlib
import json
import random

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from distilbench.cli.commands import main
from distilbench.config import ExperimentConfig, load_config
from distilbench.experiments.compare import compare
from distilbench.experiments.tune import DB_NAME, SEARCH_SPACE, STUDY_NAME, SearchBudget, search_space, tune

WORDS = {
    "sport": "match goal team score league coach",
    "money": "bank market price stock trade loan",
    "music": "song album band guitar concert drum",
}


@pytest.fixture(scope="module")
def words_csv(tmp_path_factory):
    """120 unique texts of three classes, each class with its own words."""
    rng = random.Random(0)
    rows = [
        {"text": " ".join(rng.choice(WORDS[label].split()) for _ in range(5)) + f" number {i}", "label": label}
        for i, label in enumerate(list(WORDS) * 40)
    ]
    path = tmp_path_factory.mktemp("tune-data") / "words.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def learnable_dir(tmp_path_factory, minilm_tokenizer):
    """A 2-layer, 32-wide random BERT without conftest's loud token-type embedding (which drowns the words)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("tune-bert")
    BertModel(config).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


def base_config(data, out, **overrides) -> ExperimentConfig:
    values = dict(
        data=str(data),
        epochs=2,
        train_batch_size=16,
        max_length=16,
        val_size=0.25,
        precision="fp32",
        backend="torch-fp32",
        measure_speed=False,
        out=str(out),
    )
    values.update(overrides)
    return ExperimentConfig(**values).validate()


@contextlib.contextmanager
def texts_seen():
    """Every text tokenized while the block runs (training, validation, the teacher's outputs, testing)."""
    import distilbench.runtime.inference
    import distilbench.training.finetune

    seen = set()
    original = distilbench.runtime.inference.tokenize_texts

    def recording(tokenizer, texts, *args, **kwargs):
        seen.update(texts)
        return original(tokenizer, texts, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distilbench.training.finetune, "tokenize_texts", recording)
        patch.setattr(distilbench.runtime.inference, "tokenize_texts", recording)
        yield seen


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report, nothing else: pruning on cue."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


def split_texts(out, name) -> set[str]:
    return set(pd.read_csv(out / "data" / f"{name}.csv", keep_default_na=False)["text"])


@pytest.fixture(scope="module")
def search(tmp_path_factory, words_csv, learnable_dir):
    """Three trials of two epochs over learning rate and batch size; trial 1 pruned after epoch 1."""
    out = tmp_path_factory.mktemp("search") / "tune"
    config = base_config(words_csv, out)
    with texts_seen() as seen:
        result = tune(
            config,
            str(learnable_dir),
            budget=SearchBudget(trials=3, pruner=PruneTrialOne()),
            search=["learning_rate=1e-3:1e-2", "train_batch_size=8:16"],
            progress=False,
        )
    return result, out, seen


def test_search_writes_every_trial_and_the_best_settings(search, learnable_dir):
    result, out, _ = search
    for name in ("trials.csv", "tune.json", "tune.png", "best.yaml", DB_NAME, "config.yaml", "data/test.csv"):
        assert (out / name).is_file(), name
    assert not (out / "trials").exists()  # each trial's checkpoints are deleted with it
    assert (out / "tune.png").read_bytes().startswith(b"\x89PNG")
    records = result["trials"]
    assert [r["state"] for r in records] == ["finished", "pruned", "finished"]
    assert [len(r["scores"]) for r in records] == [2, 1, 2]  # the pruned trial stopped after its first epoch
    for record in records:
        assert record["score"] == max(record["scores"])  # the best epoch's validation accuracy
        assert record["scores"] == [row["val_accuracy"] for row in record["epochs"]]
        assert 1e-3 <= record["params"]["learning_rate"] <= 1e-2 and record["params"]["train_batch_size"] in (8, 16)
        assert record["time_s"] > 0
    finished = [r for r in records if r["state"] == "finished"]
    best = max(finished, key=lambda r: (r["score"], -r["number"]))
    assert result["best"]["number"] == best["number"] and result["best"]["params"] == best["params"]
    assert result["rows"] == {"train": 72, "val": 24}
    table = pd.read_csv(out / "trials.csv")
    assert table["state"].tolist() == ["finished", "pruned", "finished"]
    assert table["learning_rate"].tolist() == [r["params"]["learning_rate"] for r in records]
    assert json.loads((out / "tune.json").read_text())["best"] == result["best"]

    settings = load_config(out / "best.yaml")  # as compare --config reads it
    assert settings.learning_rate == best["params"]["learning_rate"]
    assert settings.train_batch_size == best["params"]["train_batch_size"]
    assert (settings.epochs, settings.max_length, settings.val_size, settings.models, settings.out) == (
        2,
        16,
        0.25,
        [str(learnable_dir)],
        None,
    )


def test_search_never_reads_the_test_split(search):
    _, out, seen = search
    assert split_texts(out, "train") | split_texts(out, "val") <= seen
    assert not split_texts(out, "test") & seen


def test_best_yaml_in_compare_reproduces_the_best_trial(search, tmp_path):
    """compare --config best.yaml makes the same split and trains the same model: its validation score at its
    best epoch is the best trial's, and only then is the test split used."""
    result, out, _ = search
    config = load_config(out / "best.yaml", {"out": str(tmp_path / "run")})
    rows = compare(config, progress=False)
    assert split_texts(tmp_path / "run", "test") == split_texts(out, "test")
    assert rows[0]["best_epoch"] == result["best"]["best_epoch"]
    assert rows[0]["val"]["accuracy"] == pytest.approx(result["best"]["score"], abs=1e-9)


def test_resume_keeps_finished_trials_and_runs_interrupted_ones_again(
    words_csv, learnable_dir, tmp_path, monkeypatch, capsys
):
    import distilbench.experiments.tune

    out = tmp_path / "tune"
    calls = []
    real_train = distilbench.experiments.tune.train_model

    def interrupted_second(*args, **kwargs):  # Ctrl-C in the middle of trial 1
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(distilbench.experiments.tune, "train_model", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        tune(
            base_config(words_csv, out, epochs=1),
            str(learnable_dir),
            budget=SearchBudget(trials=3, prune=False),
            search=["learning_rate=1e-3:1e-2"],
            progress=False,
        )
    monkeypatch.undo()
    storage = f"sqlite:///{out / DB_NAME}"
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    first = study.trials[0]
    # then a kill -9 in the middle of trial 2: it stays 'running', its directory left behind
    study.enqueue_trial({"learning_rate": 0.004})
    stale = study.ask()
    stale.suggest_float("learning_rate", 1e-3, 1e-2, log=True)
    (out / "trials" / "trial-2").mkdir(parents=True)
    (out / "trials" / "trial-2" / "model.safetensors").write_text("half written")

    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--out", str(out), "--resume", "--trials", "3", "--no-progress"])
    code = exit_info.value.code
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "interrupted trial(s) 1, 2: their settings run again" in printed.out
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]  # 3 finished, as asked
    assert (trials[0].params, trials[0].value, trials[0].datetime_start) == (
        first.params,
        first.value,
        first.datetime_start,
    )  # kept, not run again
    assert [t.user_attrs.get("retry_of") for t in trials[3:]] == [1, 2]
    assert trials[3].params == trials[1].params and trials[4].params == {"learning_rate": 0.004}
    assert not (out / "trials").exists()
    assert pd.read_csv(out / "trials.csv")["state"].tolist() == ["finished", "failed", "failed", "finished", "finished"]

    with pytest.raises(SystemExit) as exit_info:  # asked again for 3: nothing more to run
        main(["tune", "--out", str(out), "--resume", "--trials", "3", "--no-progress"])
    assert exit_info.value.code == 0
    assert "holds 3 finished trials already" in capsys.readouterr().out
    assert len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials) == 5


def test_distillation_search_tunes_alpha_and_temperature(words_csv, learnable_dir, tmp_path):
    from distilbench.models.registry import load_classifier

    teacher = tmp_path / "teacher"
    model, tokenizer = load_classifier(str(learnable_dir), "multiclass", sorted(WORDS))
    model.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    out = tmp_path / "tune"
    with texts_seen() as seen:
        result = tune(
            base_config(words_csv, out, epochs=1),
            f"student:{learnable_dir}",
            teacher=str(teacher),
            budget=SearchBudget(trials=2, prune=False),
            search=["alpha", "temperature=1:4"],
            progress=False,
        )
    assert not split_texts(out, "test") & seen  # the teacher's outputs are computed for training texts only
    assert list((out / "cache").glob("*.train-logits.npy"))
    records = result["trials"]
    assert [r["state"] for r in records] == ["finished", "finished"]
    assert records[0]["params"]["alpha"] != records[1]["params"]["alpha"]
    # same seed, data and rate: the settings reach the loss
    assert records[0]["epochs"][0]["train_loss"] != records[1]["epochs"][0]["train_loss"]
    settings = load_config(out / "best.yaml")
    assert (settings.alpha, settings.temperature) == (
        result["best"]["params"]["alpha"],
        result["best"]["params"]["temperature"],
    )
    assert settings.models == [f"student:{learnable_dir}"]
    assert f"distill --teacher {teacher}" in (out / "best.yaml").read_text()


def test_the_default_space_and_ranges():
    assert list(search_space(None, distillation=False)) == [
        "learning_rate",
        "epochs",
        "train_batch_size",
        "warmup_ratio",
        "weight_decay",
    ]
    assert set(search_space(None, distillation=True)) == set(SEARCH_SPACE) - {"layer_lr_decay", "label_smoothing"}
    assert search_space(["layer_lr_decay"], False) == {"layer_lr_decay": {"type": "float", "low": 0.6, "high": 1.0}}
    assert search_space(["label_smoothing"], False) == {"label_smoothing": {"type": "float", "low": 0.0, "high": 0.2}}
    assert "learning_rate" not in search_space(None, False, fixed={"learning_rate", "data"})  # given as a flag
    space = search_space(["learning_rate=2e-5:1e-4", "epochs=2:4", "train_batch_size=32:8"], False)
    assert space["learning_rate"] == {"type": "float", "low": 2e-5, "high": 1e-4, "log": True}
    assert space["epochs"] == {"type": "int", "low": 2, "high": 4}
    assert space["train_batch_size"] == {"type": "choice", "choices": [8, 32]}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--trials", "0"], "--trials must be at least 1"),
        (["--search", "dropout"], "unknown parameter 'dropout'"),
        (["--search", "alpha"], "alpha is searched only when distilling (--teacher)"),
        (["--search", "learning_rate", "--learning-rate", "1e-4"], "searched or fixed, not both"),
        (["--search", "epochs=4:2"], "LOW:HIGH with LOW < HIGH"),
        (["--search", "learning_rate=-1:1"], "--learning-rate must be positive"),
        (["--search", "epochs=two:4"], "give integers"),
        (["--search", "layer_lr_decay=0:1"], "--layer-lr-decay is a factor in (0, 1]"),
        (["--search", "label_smoothing=0:1"], "--label-smoothing is a share of the target in [0, 1)"),
        (["--timeout", "-5"], "--timeout must be a positive number"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, words_csv, flags, message):
    out = tmp_path / "tune"
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--model", "minilm-l6", "--data", str(words_csv), "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("distilbench: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()  # refused before anything is written


def test_tune_needs_a_model(capsys, tmp_path, words_csv):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--data", str(words_csv), "--out", str(tmp_path / "tune")])
    assert exit_info.value.code == 2 and "tune needs --model" in capsys.readouterr().err


def test_the_cli_passes_its_flags(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("distilbench.experiments.tune.tune", lambda *args, **kwargs: calls.append((args, kwargs)) or {})
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "tune",
                "--model",
                "student:M",
                "--teacher",
                "T",
                "--data",
                "d.csv",
                "--trials",
                "7",
                "--timeout",
                "60",
                "--search",
                "alpha, temperature=1:4",
                "--no-prune",
                "--learning-rate",
                "1e-4",
                "--max-length",
                "64",
                "--out",
                "o",
                "--no-progress",
            ]
        )
    assert exit_info.value.code == 0, capsys.readouterr().err
    (config, model), kwargs = calls[0]
    assert (model, config.data, config.learning_rate, config.max_length, config.out) == (
        "student:M",
        "d.csv",
        1e-4,
        64,
        "o",
    )
    assert {k: kwargs[k] for k in ("teacher", "budget", "search", "overwrite", "resume", "progress")} == {
        "teacher": "T",
        "budget": SearchBudget(trials=7, timeout=60.0, prune=False),
        "search": ["alpha", "temperature=1:4"],
        "overwrite": False,
        "resume": False,
        "progress": False,
    }
    assert {"learning_rate", "max_length"} <= kwargs["fixed"]  # given as flags: fixed, not searched
