"""One dataclass of experiment settings, with the thesis's defaults; YAML in and out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .console import DistilbenchError

TASKS = ("multiclass", "multilabel")


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
    seed: int = 42
    # models
    models: list[str] = field(default_factory=lambda: ["minilm-l6", "student:minilm-l6"])
    head: str = "standard"
    # training (the thesis: AdamW 5e-5, eps 1e-8, linear decay, no warm-up, clip 1.0, 4 epochs, 64/32)
    epochs: int = 4
    train_batch_size: int = 64
    eval_batch_size: int = 32
    learning_rate: float = 5e-5
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = None
    select_metric: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    min_agreement: float = 0.99  # --backend auto: share of predictions equal to torch-fp32's
    max_metric_drop: float = 0.5  # --backend auto: points of the primary metric below torch-fp32's
    recalibrate: bool = False  # --backend auto: measure again instead of using the cached choice
    keep_checkpoints: str = "all"
    measure_speed: bool = True
    threshold_metric: str = "gmean"
    # task distillation: a student listed after its teacher learns from the fine-tuned teacher
    distill: bool = True
    alpha: float = 0.5
    temperature: float = 2.0
    # output
    out: str | None = None

    def validate(self) -> "ExperimentConfig":
        """Check values a user may get wrong, with messages that name the flag."""
        if self.task not in TASKS:
            raise DistilbenchError(f"--task must be one of {', '.join(TASKS)}, not '{self.task}'")
        if self.head not in ("standard", "thesis"):
            raise DistilbenchError(f"--head must be 'standard' or 'thesis', not '{self.head}'")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise DistilbenchError(f"--precision must be auto, fp32, bf16 or fp16, not '{self.precision}'")
        from .backends import BACKENDS

        if self.backend not in (*BACKENDS, "auto", "onnx"):
            raise DistilbenchError(f"--backend must be auto or one of {', '.join(BACKENDS)}, not '{self.backend}'")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise DistilbenchError(f"--min-agreement must be between 0 and 1, not {self.min_agreement}")
        if self.max_metric_drop < 0:
            raise DistilbenchError(f"--max-metric-drop must be 0 or more points, not {self.max_metric_drop}")
        if not 0.0 <= self.alpha <= 1.0:
            raise DistilbenchError(f"--alpha must be between 0 and 1, not {self.alpha}")
        if self.temperature <= 0:
            raise DistilbenchError(f"--temperature must be positive, not {self.temperature}")
        if self.threshold_metric not in ("gmean", "f1"):
            raise DistilbenchError(f"--threshold-metric must be gmean or f1, not '{self.threshold_metric}'")
        if self.keep_checkpoints not in ("all", "best"):
            raise DistilbenchError(f"--keep-checkpoints must be 'all' or 'best', not '{self.keep_checkpoints}'")
        if not self.models:
            raise DistilbenchError("no models given: pass --models M1,M2,...")
        if len(set(self.models)) != len(self.models):
            raise DistilbenchError(f"--models lists a model twice: {', '.join(self.models)}")
        for name, value in (("--epochs", self.epochs), ("--train-batch-size", self.train_batch_size),
                            ("--eval-batch-size", self.eval_batch_size)):
            if value < 1:
                raise DistilbenchError(f"{name} must be at least 1, not {value}")
        if not 0 < self.test_size < 1 or not 0 < self.val_size < 1:
            raise DistilbenchError("--test-size and --val-size must be fractions between 0 and 1")
        if self.learning_rate <= 0:
            raise DistilbenchError(f"--learning-rate must be positive, not {self.learning_rate}")
        if self.max_length is not None and self.max_length < 8:
            raise DistilbenchError(f"--max-length must be at least 8 tokens, not {self.max_length}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(ExperimentConfig)}


def _read_settings(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DistilbenchError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DistilbenchError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise DistilbenchError(f"config file {path} must hold a mapping of settings")
    unknown = sorted(set(loaded) - FIELDS)
    if unknown:
        raise DistilbenchError(f"unknown setting(s) in {path}: {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(FIELDS))}")
    return loaded


def _normalise(values: dict) -> dict:
    for key in ("models", "label_columns"):
        if isinstance(values.get(key), str):
            values[key] = [item.strip() for item in values[key].split(",") if item.strip()]
    return values


def load_config(path: str | Path | None, overrides: dict | None = None) -> ExperimentConfig:
    """Settings from a YAML file (optional) with command-line overrides on top (flags win)."""
    values = _read_settings(path) if path is not None else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ExperimentConfig(**_normalise(values)).validate()
    except TypeError as exc:
        raise DistilbenchError(f"bad settings: {exc}") from None


def load_resumed_config(run_dir: str | Path, path: str | Path | None = None,
                        overrides: dict | None = None) -> ExperimentConfig:
    """The settings a stopped run was started with; settings given again must agree with them, so a
    resumed run ends as the uninterrupted one would."""
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise DistilbenchError(f"nothing to resume: {run_dir} holds no distilbench run (no config.yaml)")
    saved = load_config(saved_path)
    given = _read_settings(path) if path is not None else {}
    given.update({k: v for k, v in (overrides or {}).items() if v is not None})
    changed = [f"{key} (run: {getattr(saved, key)!r}, given: {value!r})"
               for key, value in _normalise(given).items() if key != "out" and getattr(saved, key) != value]
    if changed:
        raise DistilbenchError(f"--resume continues {run_dir} with the settings it started with; these differ: "
                               f"{'; '.join(changed)}. Drop them, or start a new run with --out")
    saved.out = str(run_dir)
    return saved


def save_config(config: ExperimentConfig, path: Path) -> None:
    """Write the effective settings as YAML (atomically)."""
    from .runs import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
