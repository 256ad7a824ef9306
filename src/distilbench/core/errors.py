"""The errors a user can act on: one base class, one subclass per kind of mistake.

The CLI prints any of them as one line (`distilbench: error: <message>`) and exits 2; a Python caller can
catch the base class, or one kind (`except distilbench.DataError`). Each message says what to do.
"""

from __future__ import annotations


class DistilbenchError(Exception):
    """A problem the user can act on; the CLI prints its message and exits non-zero."""


class ConfigError(DistilbenchError, ValueError):
    """A setting is unknown, out of range, or contradicts another (a flag, a config file, a keyword)."""


class DataError(DistilbenchError, ValueError):
    """Data that cannot be read or used: a missing file or column, an unknown label, no rows."""


class ModelNotFoundError(DistilbenchError, LookupError):
    """A model name, alias or directory that names no model distilbench can load."""


class RunDirError(DistilbenchError):
    """A run directory that cannot be written, resumed or opened (not empty, not a run, not finished)."""


__all__ = ["ConfigError", "DataError", "DistilbenchError", "ModelNotFoundError", "RunDirError"]
