"""User-facing output and the one error type the CLI turns into a clear message."""

from __future__ import annotations

import os
import sys


def _quiet() -> bool:
    """Processes other than the first of a distributed launch print nothing (rank 0 speaks for all)."""
    return os.environ.get("RANK", "0") != "0"


class DistilbenchError(Exception):
    """A problem the user can act on; the CLI prints its message and exits non-zero."""


def say(message: str = "") -> None:
    """Print a line for the user (results, tables, what happens next)."""
    if not _quiet():
        print(message, file=sys.stdout, flush=True)


def warn(message: str) -> None:
    """Print a warning for the user on stderr."""
    if not _quiet():
        print(f"warning: {message}", file=sys.stderr, flush=True)
