"""One dataclass of experiment settings, with the thesis's defaults; YAML in and out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distilbench.core.console import ConfigError, warn
from distilbench.models.ladder import parse_ladder_spec
from distilbench.runtime.names import BACKENDS, PRECISIONS

if TYPE_CHECKING:
    from distilbench.evaluation.verdicts import VerdictOptions

TASKS = ("multiclass", "multilabel")
HEAD_CHOICES = ("standard", "mean", "thesis", "auto")  # see models.registry.HEADS and resolve_head
# --head's help (the CLI shows it as is). The default is the architecture's own head because its checkpoint opens in
# `transformers.pipeline` and the Auto classes without running code from the checkpoint; distilbench's own heads
# are saved as custom code. The mean head's gain on the shared headlines was 0.9293 against 0.9277 accuracy
# (minilm-l6, 3 seeds, inside each other's 95 % intervals): too small to cost every user trust_remote_code.
HEAD_HELP = (
    "classification head. standard (default): the architecture's own; the checkpoint opens in "
    "transformers.pipeline and the Auto classes as it is. mean (linear layer on the mean of the token states) "
    "and thesis (the thesis's MLP on the first token) are distilbench's own heads, saved as custom code: "
    "outside distilbench they open only with trust_remote_code=True, which many serving tools refuse; the "
    "mean head's gain on the news headlines was within the 95 %% intervals of three seeds. auto: mean for "
    "checkpoints pretrained with mean pooling (sentence-transformers models such as minilm-l6, mpnet-base), else "
    "standard; the default of earlier versions, kept for their runs"
)
THRESHOLD_CHOICES = ("calibrated", "gmean", "f1")  # metrics.THRESHOLD_CRITERIA, without importing scikit-learn


@dataclass
class ExperimentConfig:
    """Everything that defines a run; saved as `config.yaml` in the run directory."""

    # data
    task: str = "multiclass"
    data: str | None = None
    val_data: str | None = None
    test_data: str | None = None
    text_column: str = "text"
    label_column: str | None = None
    label_columns: list[str] | None = None
    label_separator: str | None = None
    max_chars: int | None = None
    max_samples: int | None = None
    test_size: float = 0.2
    val_size: float = 0.1
    seed: int = 42  # splits (unless split_seed is set), initialisation, shuffling, dropout
    split_seed: int | None = None  # the splits' own seed, so --seeds varies training alone on fixed splits
    seeds: list[int] | None = None  # train every model once per seed (--seeds 3 = seed, seed+1, seed+2)
    # models
    models: list[str] = field(default_factory=lambda: ["minilm-l6", "student:minilm-l6"])
    # the architecture's own head: opens in transformers.pipeline without trust_remote_code (HEAD_HELP); runs of
    # earlier versions saved "auto" (resolve_head), which keeps its meaning so that they resume as they started
    head: str = "standard"
    # training: AdamW, warm-up then linear decay (lr_schedule), clip 1.0. The thesis's 5e-5, no warm-up, 4 epochs,
    # batch 64 left small models under-trained on small data (benchmarks/verdicts.py measures both); --preset
    # thesis restores them
    epochs: int = 5
    train_batch_size: int = 32
    eval_batch_size: int = 32
    learning_rate: float = 1e-4
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    lr_schedule: str = "linear"  # after the warm-up: linear decay to 0, cosine decay to 0, or constant
    layer_lr_decay: float = 1.0  # each layer below the top trains at this factor of the rate above it; 1: off
    label_smoothing: float = 0.0  # multiclass: train against (1 - e) one-hot + e / K instead of one-hot; 0: off
    # "probe": fit the output layer on the frozen encoder's features first (probe.py); "random": as built.
    # default: by task (HEAD_INIT, measured in the README)
    head_init: str | None = None
    max_grad_norm: float = 1.0
    max_length: int | None = None
    select_metric: str | None = None  # default: stats.select_metric_default (multilabel: by head_init); thesis: hamming
    class_weight: str = "none"  # multiclass: "balanced" weighs each class's loss by n / (K * n_class)
    pos_weight: str = "none"  # multilabel: "auto" weighs each label's positives by negatives / positives;
    # "rare" only the labels with fewer than rare_positives positives in the training split (the others keep 1)
    pos_weight_cap: float = 10.0  # ... capped, so a label with 3 positives does not dominate
    rare_positives: int = 200
    patience: int | None = None  # stop when the select metric has not improved for this many epochs
    # the averages of the weights of the last 2..N epochs compete with the epochs for the kept checkpoint;
    # default: 4 for multiclass, off (0) for multilabel (AVERAGED_CHECKPOINTS, measured in the README)
    average_checkpoints: int | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    min_agreement: float = 0.99  # --backend auto: share of predictions equal to torch-fp32's
    max_metric_drop: float = 0.5  # --backend auto: points of the primary metric below torch-fp32's
    recalibrate: bool = False  # --backend auto: measure again instead of using the cached choice
    keep_checkpoints: str = "all"
    measure_speed: bool = True
    threshold_metric: str = "calibrated"  # multilabel thresholds tuned on validation; thesis: gmean
    # task distillation: a student listed after its teacher learns from the fine-tuned teacher
    distill: bool = True
    alpha: float = 0.5
    temperature: float = 2.0
    distill_hidden: float = 0.0  # weight of the MSE between mapped layers' hidden states (TinyBERT); 0: off
    distill_attention: float = 0.0  # weight of the distance between mapped layers' attention maps; 0: off
    unlabeled: str | None = None  # more texts for the soft (and intermediate) losses only, any data source
    unlabeled_column: str = "text"
    augment: str = "none"  # "mask": masked copies of the training texts for the soft losses only
    augment_copies: int = 2
    # verdicts: every model against a reference on the same test examples
    reference: str | None = None  # default: the first model
    margin: float = 1.0  # points of the primary metric a model may lose and still be "within margin"
    resamples: int = 1000  # bootstrap resamples per interval
    preset: str | None = None  # "thesis": the thesis's settings exactly (see PRESETS)
    # output
    out: str | None = None

    def validate(self) -> "ExperimentConfig":
        """Check values a user may get wrong, with messages that name the flag; one check per group of settings,
        in this order (the first wrong value is the one reported)."""
        self._check_choices()
        self._check_backend_guard()
        self._check_distillation()
        self._check_outputs()
        self._check_label_weights()
        self._check_schedule()
        self._check_verdicts()
        self._check_models()
        self._check_sizes()
        return self

    def _check_choices(self) -> None:
        """The named choices: task, head, precision and backend."""
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, not '{self.task}'")
        if self.head not in HEAD_CHOICES:
            raise ConfigError(f"--head must be one of {', '.join(HEAD_CHOICES)}, not '{self.head}'")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        if self.backend not in (*BACKENDS, "auto", "onnx"):
            raise ConfigError(f"--backend must be auto or one of {', '.join(BACKENDS)}, not '{self.backend}'")

    def _check_backend_guard(self) -> None:
        """The accuracy guard of --backend auto."""
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"--min-agreement must be between 0 and 1, not {self.min_agreement}")
        if self.max_metric_drop < 0:
            raise ConfigError(f"--max-metric-drop must be 0 or more points, not {self.max_metric_drop}")

    def _check_distillation(self) -> None:
        """Task distillation: the loss weights, the temperature and the extra texts, which need a teacher."""
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be between 0 and 1, not {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be positive, not {self.temperature}")
        for flag, value in (("--distill-hidden", self.distill_hidden), ("--distill-attention", self.distill_attention)):
            if value < 0:
                raise ConfigError(f"{flag} is a loss weight, 0 (off) or more, not {value}")
        if self.augment not in ("none", "mask"):
            raise ConfigError(f"--augment must be 'none' or 'mask', not '{self.augment}'")
        if self.augment_copies < 1:
            raise ConfigError(f"--augment-copies must be at least 1, not {self.augment_copies}")
        if not self.distill and self.distillation_extras():
            raise ConfigError(
                f"{', '.join(self.distillation_extras())} need a teacher to distil from; drop --no-distill"
            )

    def _check_outputs(self) -> None:
        """What is kept of a run: the multilabel thresholds and the checkpoints."""
        if self.threshold_metric not in THRESHOLD_CHOICES:
            raise ConfigError(
                f"--threshold-metric must be one of {', '.join(THRESHOLD_CHOICES)}, not '{self.threshold_metric}'"
            )
        if self.keep_checkpoints not in ("all", "best"):
            raise ConfigError(f"--keep-checkpoints must be 'all' or 'best', not '{self.keep_checkpoints}'")

    def _check_label_weights(self) -> None:
        """The label-loss weights, each for its own task."""
        if self.class_weight not in ("none", "balanced"):
            raise ConfigError(f"--class-weight must be 'none' or 'balanced', not '{self.class_weight}'")
        if self.pos_weight not in ("none", "auto", "rare"):
            raise ConfigError(f"--pos-weight must be 'none', 'auto' or 'rare', not '{self.pos_weight}'")
        if self.class_weight != "none" and self.task != "multiclass":
            raise ConfigError("--class-weight is for multiclass tasks; use --pos-weight auto for multilabel")
        if self.pos_weight != "none" and self.task != "multilabel":
            raise ConfigError("--pos-weight is for multilabel tasks; use --class-weight balanced for multiclass")
        if self.pos_weight_cap < 1:
            raise ConfigError(f"--pos-weight-cap must be at least 1, not {self.pos_weight_cap}")
        if self.rare_positives < 1:
            raise ConfigError(f"--rare-positives must be at least 1, not {self.rare_positives}")

    def _check_schedule(self) -> None:
        """The training schedule: checkpoint averaging, early stopping, warm-up, the learning-rate schedule and its
        decay by layer, label smoothing and the head's initialisation."""
        if self.average_checkpoints is not None and (self.average_checkpoints < 0 or self.average_checkpoints == 1):
            raise ConfigError(
                f"--average-checkpoints is a number of last epochs, 0 (off) or 2 or more, "
                f"not {self.average_checkpoints}"
            )
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be at least 1 epoch, not {self.patience}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio is a share of the training steps in [0, 1), not {self.warmup_ratio}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError(
                f"--layer-lr-decay is a factor in (0, 1] (1: every layer at the same rate), not {self.layer_lr_decay}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"--label-smoothing is a share of the target in [0, 1) (0: off), not {self.label_smoothing}"
            )
        if self.label_smoothing > 0 and self.task != "multiclass":
            raise ConfigError(
                "--label-smoothing is for multiclass tasks (a multilabel target is 0 or 1 per "
                "label; its rare labels need --pos-weight instead)"
            )
        if self.head_init is not None and self.head_init not in HEAD_INITS:
            raise ConfigError(f"--head-init must be one of {', '.join(HEAD_INITS)}, not '{self.head_init}'")

    def _check_verdicts(self) -> None:
        """The verdicts' margin and resamples, and the preset."""
        if self.margin < 0:
            raise ConfigError(f"--margin is the loss in points a model may have, 0 or more, not {self.margin}")
        if self.resamples < 100:
            raise ConfigError(
                f"--resamples must be at least 100 (1000 or more for a 95 % interval), not {self.resamples}"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, not '{self.preset}'")

    def _check_models(self) -> None:
        """The seeds, the models and the reference among them."""
        if self.seeds is not None:
            if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) for s in self.seeds):
                raise ConfigError(f"--seeds takes a count (3) or a list of integer seeds (1,2,3), not {self.seeds!r}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"--seeds lists a seed twice: {self.seeds}")
        if not self.models:
            raise ConfigError("no models given: pass --models M1,M2,...")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"--models lists a model twice: {', '.join(self.models)}")
        for index, spec in enumerate(self.models):
            ladder = parse_ladder_spec(spec)
            missing = [stage for stage in (ladder.stages if ladder else ()) if stage not in self.models[:index]]
            if missing:
                raise ConfigError(
                    f"{spec}: list {', '.join(missing)} in --models before the cascade, which is built from the "
                    f"models the run trains (e.g. --models minilm-l6,tfidf,cascade:tfidf+minilm-l6)"
                )
        if self.reference is not None and self.reference not in self.models:
            raise ConfigError(f"--reference {self.reference} is not one of --models ({', '.join(self.models)})")

    def _check_sizes(self) -> None:
        """Epochs, batch sizes, split fractions, learning rate and text length."""
        for name, value in (
            ("--epochs", self.epochs),
            ("--train-batch-size", self.train_batch_size),
            ("--eval-batch-size", self.eval_batch_size),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if not 0 < self.test_size < 1 or not 0 < self.val_size < 1:
            raise ConfigError("--test-size and --val-size must be fractions between 0 and 1")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be positive, not {self.learning_rate}")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"--max-length must be at least 8 tokens, not {self.max_length}")

    def distillation_extras(self) -> list[str]:
        """The flags of the distillation variants that are on (beyond logits KD), for messages."""
        on = [
            ("--distill-hidden", self.distill_hidden > 0),
            ("--distill-attention", self.distill_attention > 0),
            ("--unlabeled", bool(self.unlabeled)),
            ("--augment", self.augment != "none"),
        ]
        return [flag for flag, value in on if value]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def verdict_options(self) -> VerdictOptions:
        """What the verdicts need of these settings."""
        from distilbench.evaluation.verdicts import VerdictOptions

        return VerdictOptions(
            task=self.task,
            reference=self.reference or self.models[0],
            margin=self.margin,
            resamples=self.resamples,
            seed=self.seed,
            seeds=tuple(self.training_seeds()),
        )

    def training_seeds(self) -> list[int]:
        """The seeds each model is trained with: --seeds, else just --seed."""
        return list(self.seeds) if self.seeds else [self.seed]

    def data_seed(self) -> int:
        """The seed of subsampling and splits: --split-seed, else --seed."""
        return self.seed if self.split_seed is None else self.split_seed

    def averaged_checkpoints(self) -> int:
        """How many last epochs' checkpoints are averaged (each window of the last 2..N epochs is a candidate
        for the kept checkpoint): --average-checkpoints, else distilbench's default for the task (0 under
        --preset thesis, which sets it)."""
        if self.average_checkpoints is not None:
            return self.average_checkpoints
        return AVERAGED_CHECKPOINTS[self.task]

    def initial_head(self) -> str:
        """How the output layer starts fine-tuning: --head-init, else distilbench's default for the task
        (random under --preset thesis, which sets it)."""
        return self.head_init or HEAD_INIT[self.task]

    def best_epoch_metric(self) -> str:
        """The validation metric that picks the best epoch (and early stopping): --select-metric, else the
        thesis's primary metric under --preset thesis, else distilbench's default (stats.select_metric_default)."""
        from distilbench.evaluation.metrics import primary_metric
        from distilbench.evaluation.stats import select_metric_default

        if self.select_metric:
            return self.select_metric
        if self.preset == "thesis":
            return primary_metric(self.task)
        return select_metric_default(self.task, self.initial_head())


HEAD_INITS = ("random", "probe")  # the output layer before fine-tuning: as the model has it, or a linear probe
# Defaults of --head-init by task (benchmarks/verdicts.py): on the toxic comments the probe, with the best epoch
# by validation hamming score, lifted macro ROC-AUC from 0.946 to 0.984 and macro F1 from 0.44 to 0.60 at the same
# hamming score.
HEAD_INIT = {"multiclass": "random", "multilabel": "probe"}
# Defaults of --average-checkpoints by task (benchmarks/checkpoint_averaging.py, benchmarks/verdicts.py): on the
# headlines the averages of the last epochs' weights beat the best epoch on every seed; on the toxic comments
# they traded hamming score for ROC-AUC, so multilabel keeps the best epoch.
AVERAGED_CHECKPOINTS = {"multiclass": 4, "multilabel": 0}
# the learning rate after the warm-up, as the transformers Trainer's lr_scheduler_type names it
LR_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}

# The thesis's settings (Bueno, 2022): AdamW 5e-5 (eps 1e-8), linear decay without warm-up, clipping at 1.0,
# 4 epochs, batches of 64/32, its own head (randomly initialised), the best epoch by accuracy / hamming score,
# G-mean thresholds, no loss weights, no label smoothing, no early stopping, no averaged checkpoints. --preset
# thesis sets exactly these; a config file and flags still win.
PRESETS = {
    "thesis": dict(
        epochs=4,
        train_batch_size=64,
        eval_batch_size=32,
        learning_rate=5e-5,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        warmup_ratio=0.0,
        lr_schedule="linear",
        layer_lr_decay=1.0,
        max_grad_norm=1.0,
        label_smoothing=0.0,
        head_init="random",
        head="thesis",
        select_metric=None,
        class_weight="none",
        pos_weight="none",
        patience=None,
        threshold_metric="gmean",
        average_checkpoints=0,
    ),
}


FIELDS = {f.name for f in dataclasses.fields(ExperimentConfig)}


def _read_settings(path: str | Path) -> dict:
    import yaml  # here, not at the top: a bundle's cold start reads no YAML

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    unknown = sorted(set(loaded) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    return loaded


MANY_SEEDS = 10  # about ten is the usual advice; a larger count is allowed, with a warning


def parse_seeds(value, seed: int) -> list[int] | None:
    """--seeds: a count N (seed, seed+1, ..., seed+N-1), or a list of seeds ("1,2,3" or a YAML list)."""
    if value is None or isinstance(value, list):
        return value
    text = str(value).strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ConfigError(f"--seeds must be a count of at least 1 or a list of seeds, not {text}")
            if count > MANY_SEEDS:  # --seeds 42 meant as "seed 42" would train every model 42 times
                warn(
                    f"--seeds {count} is a count: every model is trained {count} times (seeds {seed}-"
                    f"{seed + count - 1}); for one run with seed {count} use --seed {count} (or the list --seeds "
                    f"{count},)"
                )
            return [seed + i for i in range(count)]
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes a count (3) or a list of integer seeds (1,2,3), not '{text}'") from None


def _normalise(values: dict, seed: int | None = None) -> dict:
    for key in ("models", "label_columns"):
        if isinstance(values.get(key), str):
            values[key] = [item.strip() for item in values[key].split(",") if item.strip()]
    if "seeds" in values:
        values["seeds"] = parse_seeds(values["seeds"], values.get("seed", 42 if seed is None else seed))
    return values


def _with_preset(values: dict) -> dict:
    """A preset's settings under the file's and the flags' (theirs win)."""
    preset = values.get("preset")
    if preset is None:
        return values
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, not '{preset}'")
    return {**PRESETS[preset], **values}


def load_config(path: str | Path | None, overrides: dict | None = None) -> ExperimentConfig:
    """Settings from a YAML file (optional) with command-line overrides on top (flags win)."""
    values = _read_settings(path) if path is not None else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ExperimentConfig(**_normalise(_with_preset(values))).validate()
    except TypeError as exc:
        raise ConfigError(f"bad settings: {exc}") from None


def load_resumed_config(
    run_dir: str | Path, path: str | Path | None = None, overrides: dict | None = None
) -> ExperimentConfig:
    """The settings a stopped run was started with; settings given again must agree with them, so a
    resumed run ends as the uninterrupted one would."""
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"nothing to resume: {run_dir} holds no distilbench run (no config.yaml)")
    saved = load_config(saved_path)
    given = _read_settings(path) if path is not None else {}
    given.update({k: v for k, v in (overrides or {}).items() if v is not None})
    changed = [
        f"{key} (run: {getattr(saved, key)!r}, given: {value!r})"
        for key, value in _normalise(given, saved.seed).items()
        if key != "out" and getattr(saved, key) != value
    ]
    if changed:
        raise ConfigError(
            f"--resume continues {run_dir} with the settings it started with; these differ: "
            f"{'; '.join(changed)}. Drop them, or start a new run with --out"
        )
    saved.out = str(run_dir)
    return saved


def save_config(config: ExperimentConfig, path: Path) -> None:
    """Write the effective settings as YAML (atomically)."""
    import yaml

    from distilbench.runs import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
