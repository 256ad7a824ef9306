"""distilbench: can a distilled model replace the big one for your text classifier?

    import distilbench as db
    result = db.compare("news.csv", label_column="category", models=["minilm-l6", "student:minilm-l6"],
                        epochs=3, out="runs/news")
    result.table                                   # metrics with intervals, verdicts, speed, size per model
    clf = db.load("runs/news/models/minilm-l6/best")
    clf.predict(["Stocks fall as the Fed hints at higher rates"])

The functions and classes below live in `distilbench.api` and are imported on first use, so that
`import distilbench` (and `distilbench --help`) does not import PyTorch. The errors are light and
imported at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilbench.core.errors import ConfigError, DataError, DistilbenchError, ModelNotFoundError, RunDirError

__version__ = "0.1.0"

_API = (
    "Classifier",
    "RunResult",
    "bench",
    "cascade",
    "compare",
    "distill",
    "distill_general",
    "evaluate",
    "export",
    "load",
    "open_run",
    "predict",
    "report",
    "serve",
    "train",
    "tune",
)

__all__ = [
    *_API,
    "ConfigError",
    "DataError",
    "DistilbenchError",
    "ModelNotFoundError",
    "RunDirError",
    "__version__",
]

if TYPE_CHECKING:  # type checkers and IDEs see the real signatures
    from distilbench.api import (  # noqa: F401
        Classifier,
        RunResult,
        bench,
        cascade,
        compare,
        distill,
        distill_general,
        evaluate,
        export,
        load,
        open_run,
        predict,
        report,
        serve,
        train,
        tune,
    )


def __getattr__(name: str) -> Any:
    """Import distilbench.api the first time one of its names is used (PEP 562)."""
    if name in _API:
        from distilbench import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'distilbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
