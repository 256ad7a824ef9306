"""User-facing output, and the errors the CLI turns into a clear message (defined in core.errors)."""

from __future__ import annotations

import logging
import os
import sys

from distilbench.core.errors import (  # noqa: F401 - re-exported: every module raises them from here
    ConfigError,
    DataError,
    DistilbenchError,
    ModelNotFoundError,
    RunDirError,
)


def _quiet() -> bool:
    """Processes other than the first of a distributed launch print nothing (rank 0 speaks for all)."""
    return os.environ.get("RANK", "0") != "0"


def say(message: str = "") -> None:
    """Print a line for the user (results, tables, what happens next)."""
    if not _quiet():
        print(message, file=sys.stdout, flush=True)


def warn(message: str) -> None:
    """Print a warning for the user on stderr."""
    if not _quiet():
        print(f"warning: {message}", file=sys.stderr, flush=True)


def quiet_libraries(verbose: bool) -> None:
    """Log at WARNING (DEBUG with -v) and silence the libraries' own progress bars and chatter."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # transformers reads this when it is imported: its own bars stay off too
    else:  # read on its first import; importing it here would cost a bundle's cold start 50 ms
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" not in sys.modules:  # not imported here: an exported bundle runs without it
        os.environ["TRANSFORMERS_VERBOSITY"] = "info" if verbose else "error"  # read on its first import
        return
    import transformers

    transformers.logging.set_verbosity_info() if verbose else transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
