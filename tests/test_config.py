import pytest
import yaml

from distilbench.config import ExperimentConfig, load_config, save_config
from distilbench.core.console import DistilbenchError


def test_defaults_and_the_thesis_preset():
    config = ExperimentConfig()
    assert (config.epochs, config.train_batch_size, config.eval_batch_size) == (5, 32, 32)
    assert (config.learning_rate, config.adam_epsilon) == (1e-4, 1e-8)
    assert (config.max_grad_norm, config.warmup_ratio) == (1.0, 0.1)
    assert (config.test_size, config.val_size) == (0.2, 0.1)
    thesis = load_config(None, {"preset": "thesis"})
    assert (thesis.epochs, thesis.train_batch_size, thesis.eval_batch_size) == (4, 64, 32)
    assert (thesis.learning_rate, thesis.adam_epsilon) == (5e-5, 1e-8)
    assert (thesis.max_grad_norm, thesis.warmup_ratio, thesis.head) == (1.0, 0.0, "thesis")
    assert config.lr_schedule == thesis.lr_schedule == "linear"
    assert load_config(None, {"preset": "thesis", "lr_schedule": "cosine"}).lr_schedule == "cosine"
    with pytest.raises(DistilbenchError, match="--lr-schedule must be one of linear, cosine, constant, not step"):
        load_config(None, {"lr_schedule": "step"})


def test_thresholds_default_to_calibrated_and_the_thesis_preset_keeps_gmean():
    from distilbench.config import THRESHOLD_CHOICES
    from distilbench.evaluation.metrics import THRESHOLD_CRITERIA

    assert THRESHOLD_CHOICES == THRESHOLD_CRITERIA  # the flag's choices are the criteria tune_thresholds knows
    assert load_config(None, {"task": "multilabel"}).threshold_metric == "calibrated"
    assert load_config(None, {"task": "multilabel", "preset": "thesis"}).threshold_metric == "gmean"
    with pytest.raises(DistilbenchError, match="--threshold-metric must be one of calibrated, gmean, f1"):
        load_config(None, {"threshold_metric": "youden"})


def test_averaged_checkpoints_default_by_task_and_off_under_the_thesis_preset():
    assert load_config(None, {"task": "multiclass"}).averaged_checkpoints() == 4
    assert load_config(None, {"task": "multilabel"}).averaged_checkpoints() == 0
    assert load_config(None, {"task": "multiclass", "preset": "thesis"}).averaged_checkpoints() == 0
    assert load_config(None, {"task": "multilabel", "average_checkpoints": 3}).averaged_checkpoints() == 3
    assert load_config(None, {"task": "multiclass", "average_checkpoints": 0}).averaged_checkpoints() == 0


def test_file_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"epochs": 2, "models": "a,b", "learning_rate": 1e-4}))
    config = load_config(path, {"epochs": 3, "label_columns": "x, y", "seed": None})
    assert config.epochs == 3  # the flag wins
    assert config.learning_rate == 1e-4  # the file fills what flags leave
    assert config.models == ["a", "b"] and config.label_columns == ["x", "y"]
    assert config.seed == 42  # an absent flag (None) does not erase the default


def test_saved_config_loads_back(tmp_path):
    config = load_config(None, {"task": "multilabel", "models": ["m"], "max_length": 64})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task": "regression"}, "--task"),
        ({"epochs": 0}, "--epochs"),
        ({"models": ["a", "a"]}, "twice"),
        ({"test_size": 1.5}, "--test-size"),
        ({"max_length": 2}, "--max-length"),
        ({"precision": "int4"}, "--precision"),
        ({"average_checkpoints": 1}, "--average-checkpoints"),
        ({"average_checkpoints": -2}, "--average-checkpoints"),
    ],
)
def test_bad_values_name_the_flag(overrides, message):
    with pytest.raises(DistilbenchError, match=message):
        load_config(None, overrides)


def test_config_file_errors(tmp_path):
    with pytest.raises(DistilbenchError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(DistilbenchError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(DistilbenchError, match="mapping"):
        load_config(listing)


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_layer_lr_decay_must_be_a_factor_in_zero_to_one(value):
    assert load_config(None, {"layer_lr_decay": 0.8}).layer_lr_decay == 0.8
    assert load_config(None, {"preset": "thesis"}).layer_lr_decay == 1.0
    with pytest.raises(DistilbenchError, match=r"--layer-lr-decay is a factor in \(0, 1\]"):
        load_config(None, {"layer_lr_decay": value})


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_label_smoothing_is_a_share_in_zero_to_one_for_multiclass(value):
    assert load_config(None, {"label_smoothing": 0.1}).label_smoothing == 0.1
    assert load_config(None, {"preset": "thesis", "label_smoothing": 0.1}).label_smoothing == 0.1  # flags win
    assert load_config(None, {"preset": "thesis"}).label_smoothing == 0.0
    with pytest.raises(DistilbenchError, match=r"--label-smoothing is a share of the target in \[0, 1\)"):
        load_config(None, {"label_smoothing": value})
    with pytest.raises(DistilbenchError, match="--label-smoothing is for multiclass tasks"):
        load_config(None, {"task": "multilabel", "label_smoothing": 0.1})


def test_head_init_is_random_or_a_probe_with_a_default_by_task():
    assert load_config(None, {}).initial_head() == "random"
    assert load_config(None, {"task": "multilabel"}).initial_head() == "probe"
    assert load_config(None, {"task": "multilabel", "head_init": "random"}).initial_head() == "random"
    assert load_config(None, {"head_init": "probe"}).initial_head() == "probe"
    assert load_config(None, {"preset": "thesis", "task": "multilabel"}).initial_head() == "random"
    with pytest.raises(DistilbenchError, match="--head-init must be one of random, probe, not 'linear'"):
        load_config(None, {"head_init": "linear"})
