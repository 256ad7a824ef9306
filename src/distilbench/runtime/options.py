"""The options that travel together through every command that runs a trained model (evaluate, predict, serve,
bench, compare's test): which backend, how many texts per batch, how many tokens per text, which device, and the
accuracy guard of `--backend auto`. Plain dataclasses that import nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from distilbench.core.console import ConfigError


@dataclass
class ChoiceSettings:
    """The accuracy guard's tolerances, and whether a cached choice may be reused."""

    min_agreement: float = 0.99  # share of texts with the same predicted label(s) as torch-fp32
    max_metric_drop: float = 0.5  # points of the primary metric below torch-fp32's
    recalibrate: bool = False

    def validate(self) -> "ChoiceSettings":
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"--min-agreement must be between 0 and 1, not {self.min_agreement}")
        if self.max_metric_drop < 0:
            raise ConfigError(f"--max-metric-drop must be 0 or more points, not {self.max_metric_drop}")
        return self


@dataclass(frozen=True)
class InferenceOptions:
    """How a trained model runs: `backend` (auto: the fastest that agrees with torch-fp32), `batch_size` texts
    per forward pass, `max_length` tokens per text (None: the model's limit), `device` (auto: CUDA if available)
    and the guard of auto (`choice`)."""

    backend: str = "auto"
    batch_size: int = 32
    max_length: int | None = None
    device: str = "auto"
    choice: ChoiceSettings = field(default_factory=ChoiceSettings)

    def validate(self) -> "InferenceOptions":
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more, not {self.batch_size}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"--max-length must be 1 or more tokens, not {self.max_length}")
        self.choice.validate()
        return self

    def with_backend(self, backend: str) -> "InferenceOptions":
        """The same options with another backend (e.g. the one auto chose)."""
        return replace(self, backend=backend)
