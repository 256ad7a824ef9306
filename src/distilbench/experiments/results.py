"""A finished run directory as an object: its settings, its comparison table, its verdicts, its checkpoints.

`open_run` reads what compare, train and distill wrote (comparison.json last), from this version or an earlier
one; nothing here trains or predicts, so reopening a run is cheap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilbench.core.console import ConfigError, ModelNotFoundError, RunDirError

if TYPE_CHECKING:
    import pandas as pd

    from distilbench.config import ExperimentConfig
    from distilbench.runtime.classifier import Classifier


def require_finished(root: Path) -> None:
    """A finished run directory: it has comparison.json (written last)."""
    if not root.is_dir():
        raise RunDirError(f"{root} is not a directory; pass a run directory (the --out of compare)")
    if not (root / "comparison.json").is_file():
        what = (
            "a run that has not finished (no comparison.json yet): continue it with --resume"
            if (root / "config.yaml").is_file()
            else "not a distilbench run directory (no comparison.json)"
        )
        raise RunDirError(f"{root} is {what}")


@dataclass
class RunResult:
    """A finished run directory (compare, train, distill), as written by any version of distilbench.

    `comparison` is comparison.json's content; `table` one row per model (the primary metric with its 95 %
    interval, the other metrics, the difference to the reference and its verdict, times, speed, size);
    `verdicts` each model's paired comparison with the reference."""

    path: Path
    config: ExperimentConfig
    comparison: dict = field(repr=False)

    @property
    def rows(self) -> list[dict]:
        """One dict per model, as comparison.json holds them."""
        return list(self.comparison.get("rows") or [])

    @property
    def models(self) -> list[str]:
        return [row["model"] for row in self.rows]

    @property
    def reference(self) -> str:
        """The model every other was compared with."""
        return self.comparison.get("reference") or self.config.reference or self.models[0]

    @property
    def table(self) -> pd.DataFrame:
        """comparison.csv's table, from comparison.json: one row per model."""
        from distilbench.experiments.compare import comparison_table

        return comparison_table(self.rows, self.comparison.get("task", self.config.task))

    @property
    def verdicts(self) -> dict[str, dict]:
        """Model -> its comparison with the reference (difference in points, paired interval, verdict); the
        reference itself and a distilled student's one-row run have none."""
        return {row["model"]: row["vs_reference"] for row in self.rows if row.get("vs_reference")}

    def report(self) -> Path:
        """Write report.html (and report.md, plots) again; returns report.html's path."""
        from distilbench.reporting.report import write_report

        return Path(write_report(str(self.path))[0])

    def model_dir(self, name: str | None = None) -> Path:
        """The checkpoint kept for model `name` (its spec as given, e.g. 'student:minilm-l6', or its folder name
        under models/, e.g. 'student-minilm-l6'; default: the reference): models/<slug>/best."""
        from distilbench.runs import RunDir, model_slug

        name = name or self.reference
        by_slug = {model_slug(model): model for model in self.models}
        if name not in self.models and name not in by_slug:
            raise ModelNotFoundError(f"{self.path} has no model '{name}'; it has {', '.join(self.models)}")
        best = RunDir(self.path).best_dir(name if name in by_slug else model_slug(name))
        from distilbench.runtime.light import is_text_model

        if not (best / "config.json").is_file() and not is_text_model(best):
            raise ModelNotFoundError(f"{best} holds no checkpoint (was the run made with --keep-checkpoints?)")
        return best

    def load(self, name: str | None = None, **options: Any) -> Classifier:
        """The kept checkpoint of `name` (default: the reference) as a Classifier; options as load()'s."""
        from distilbench.runtime.classifier import load

        return load(self.model_dir(name), **options)


def open_run(path: str | Path) -> RunResult:
    """Re-open a finished run directory (from this version or an earlier one, also from before the package
    layout). Raises RunDirError when `path` is not a finished run."""
    from distilbench.runs import read_json

    root = Path(path)
    require_finished(root)
    try:
        comparison = read_json(root / "comparison.json")
    except ValueError as exc:
        raise RunDirError(f"{root}/comparison.json is not valid JSON ({exc}); rerun the comparison") from None
    return RunResult(root, _saved_config(root, comparison), comparison)


def _saved_config(root: Path, comparison: dict) -> ExperimentConfig:
    """A run's settings from its config.yaml. A run of another version may hold a setting this one does not know
    or no longer accepts: its known settings are kept as saved (the run is read, not started again)."""
    import yaml

    from distilbench.config import FIELDS, ExperimentConfig, load_config

    path = root / "config.yaml"
    try:
        return load_config(path)
    except ConfigError:
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (yaml.YAMLError, UnicodeDecodeError):
            saved = None
        known = {k: v for k, v in (saved or {}).items() if k in FIELDS} if isinstance(saved, dict) else {}
        known.setdefault("task", comparison.get("task", "multiclass"))
        return ExperimentConfig(**known)
