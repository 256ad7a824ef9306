"""Data sets for training: turn a data source into clean, split, normalised pandas DataFrames.

Reading files is readers.py's job (one reader for every command); this module makes task frames of what
it reads. A *task frame* has a ``text`` column (str) and either a ``label`` column holding label
names as strings (multiclass) or one int 0/1 column per label (multilabel).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distilbench.core.console import DataError, DistilbenchError, warn
from distilbench.data.readers import BUILTIN_SOURCES, SUPPORTED_EXTENSIONS, read_source, require_column  # noqa: F401 - part of this module's API
from distilbench.data.readers import as_text as _as_text
from distilbench.data.readers import check_unique as _check_unique
from distilbench.data.readers import column_list as _column_list
from distilbench.data.readers import is_missing as _is_missing
from distilbench.data.readers import missing_column_hint as _missing_column_hint
from distilbench.data.readers import plain as _plain
from distilbench.data.readers import quoted as _quoted
from distilbench.data.readers import short_reason as _short_reason
from distilbench.data.readers import where_from as _where

logger = logging.getLogger(__name__)

TASKS = ("multiclass", "multilabel")
SPLIT_NAMES = ("train", "val", "test")
_TRUE_STRINGS = {"1", "1.0", "true"}
_FALSE_STRINGS = {"0", "0.0", "false"}


# --------------------------------------------------------------------------- task frames


def to_task_frame(
    raw: pd.DataFrame,
    task: str,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    label_columns: list[str] | None = None,
    label_separator: str | None = None,
    min_classes: int = 2,
    label_names: list[str] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Normalise a raw table into a task frame and its label names (see module docstring).

    `label_names`, when given, is the label set of training (validation and test files, `evaluate`): the
    frame has exactly those labels, in that order, and a label outside them is an error, however the file
    holds its labels. Rows with a missing multiclass label are dropped; their count is in
    ``frame.attrs["dropped"]``.
    """
    _check_task(task)
    where = _where(raw)
    raw = raw.reset_index(drop=True)
    columns = [str(c) for c in raw.columns]
    require_column(raw, text_column, "text", "--text-column")
    texts = raw[text_column].map(_as_text)
    known = list(label_names) if label_names is not None else None
    if task == "multiclass":
        if label_columns:
            raise DataError(
                "--label-columns is for multilabel tasks; "
                "for multiclass use --label-column with one column of class names."
            )
        frame, names = _multiclass_frame(
            raw, texts, text_column, label_column or "label", where, columns, 1 if known is not None else min_classes
        )
        if known is not None:
            _check_known([[label] for label in frame["label"].tolist()], known, where)
            names = known
    else:
        if label_columns is not None and label_column is not None:
            raise DataError(
                "give either --label-columns (0/1 columns) or --label-column (a column of label lists), not both."
            )
        if (
            label_columns is None
            and label_column is None
            and known is not None
            and all(name in raw.columns for name in known)
        ):
            label_columns = known  # the training labels as 0/1 columns
        if label_columns is not None:
            frame, names = _multilabel_from_columns(raw, texts, text_column, list(label_columns), where, columns)
            if known is not None:
                _check_same_labels(names, known, where)
                frame, names = frame[["text", *known]], known
        else:
            if label_column is None:
                label_column = next((c for c in ("labels", "label") if c in raw.columns), None)
            if label_column is None:
                expected = f" (training labels: {', '.join(map(_quoted, known[:10]))})" if known else ""
                raise DataError(
                    f"no labels found{where} for a multilabel task{expected}; available columns: "
                    f"{_column_list(columns)}. Use --label-columns a,b,c for one 0/1 column per label, or "
                    "--label-column NAME for a column holding lists of labels or delimited strings (split by "
                    "--label-separator, default ',')."
                )
            frame, names = _multilabel_from_lists(
                raw, texts, text_column, label_column, label_separator, where, columns, known
            )
    if "text" in names:
        raise DataError("a label is named 'text', which clashes with the text column. Rename that label.")
    frame.attrs.setdefault("dropped", {})
    logger.debug("task frame: %d rows, %d labels (%s)", len(frame), len(names), task)
    return frame, names


def _check_known(label_sets: list[list[str]], known: list[str], where: str) -> None:
    """Every label of a validation/test/evaluation file is one the model was trained on."""
    allowed = set(known)
    rows = [[label for label in labels if label not in allowed] for labels in label_sets]
    unknown = [label for labels in rows for label in labels]
    if unknown:
        names = list(dict.fromkeys(unknown))
        count = sum(1 for labels in rows if labels)
        raise DataError(
            f"{count} row{'s' if count > 1 else ''}{where} {'have' if count > 1 else 'has'} labels not in the "
            "training data: "
            f"{', '.join(map(_quoted, names[:5]))}{' ...' if len(names) > 5 else ''}; the labels are "
            f"{', '.join(map(_quoted, known[:10]))}{' ...' if len(known) > 10 else ''}. A model predicts only the "
            "labels it was trained on: fix or drop those rows."
        )


def _check_same_labels(columns: list[str], known: list[str], where: str) -> None:
    """0/1 label columns of a validation/test/evaluation file name exactly the training labels."""
    missing = [name for name in known if name not in columns]
    extra = [name for name in columns if name not in known]
    if missing or extra:
        parts = [
            f"missing {', '.join(map(_quoted, missing[:5]))}" if missing else "",
            f"not in the training data {', '.join(map(_quoted, extra[:5]))}" if extra else "",
        ]
        raise DataError(
            f"the label columns{where} are not the training labels ({'; '.join(p for p in parts if p)}); the "
            f"labels are {', '.join(map(_quoted, known[:10]))}. Pass --label-columns with exactly those."
        )


def _check_task(task: str) -> None:
    """Reject a task name other than multiclass/multilabel."""
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'; use --task multiclass or --task multilabel.")


def _shown_value(value: Any) -> str:
    """A cell for an error message: strings quoted, missing values as '(empty)'."""
    value = _plain(value)
    if _is_missing(value):
        return "(empty)"
    return _quoted(value) if isinstance(value, str) else _quoted(value)[1:-1]


def _label_name(value: Any) -> str | None:
    """A label cell as its name: ints and integral floats as '3', strings with runs of whitespace (line breaks,
    tabs) made one space and stripped, so a name is one line; None if missing."""
    value = _plain(value)
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    name = " ".join(str(value).split())
    return name or None


def _check_label_column(
    raw: pd.DataFrame, label_column: str, text_column: str, where: str, columns: list[str], hint: str
) -> None:
    """The label column exists and is not the text column. A comma list that names no column is taken for what
    it most likely means: several 0/1 label columns, which --label-columns (multilabel) reads."""
    if label_column not in raw.columns:
        _refuse_column_list(label_column, where, columns)
        raise DataError(
            f"label column {_quoted(label_column)} not found{where}; available columns: {_column_list(columns)}. "
            f"{_missing_column_hint(label_column, columns)}{hint}"
        )
    if label_column == text_column:
        raise DataError(f"{_quoted(label_column)} is both the text and the label column. Pick different columns.")
    _check_unique(raw, label_column, where)


def _refuse_column_list(label_column: str, where: str, columns: list[str]) -> None:
    """--label-column a,b (no column of that name): say that it takes one column and what reads several."""
    parts = [part.strip() for part in str(label_column).split(",") if part.strip()]
    if len(parts) < 2:
        return
    absent = [part for part in parts if part not in columns]
    missing = f" ({', '.join(map(_quoted, absent))} not found{where})" if absent else ""
    raise DataError(
        f"--label-column takes one column, not the list {_quoted(label_column)}; for several 0/1 label columns "
        f"use --task multilabel --label-columns {','.join(parts)}{missing}. Available columns{where}: "
        f"{_column_list(columns)}."
    )


def _multiclass_frame(
    raw: pd.DataFrame,
    texts: pd.Series,
    text_column: str,
    label_column: str,
    where: str,
    columns: list[str],
    min_classes: int = 2,
) -> tuple[pd.DataFrame, list[str]]:
    """Task frame for single-label classification: text + label name."""
    _check_label_column(raw, label_column, text_column, where, columns, "Use --label-column to pick one.")
    values = raw[label_column]
    if values.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
        raise DataError(
            f"column {_quoted(label_column)}{where} holds lists of labels; use --task multilabel for that data."
        )
    labels = values.map(_label_name)
    keep = labels.notna()
    dropped = int((~keep).sum())
    frame = pd.DataFrame({"text": texts[keep].astype(str), "label": labels[keep].astype(str)}).reset_index(drop=True)
    frame.attrs["dropped"] = {"missing label": dropped} if dropped else {}
    if dropped:
        logger.info("dropped %d rows with a missing label in column '%s'", dropped, label_column)
    names = sorted(frame["label"].unique().tolist())
    if len(names) < min_classes:
        found = f"only {_quoted(names[0])}" if names else "no labels at all"
        raise DataError(
            f"multiclass needs at least 2 classes; found {found} in column {_quoted(label_column)}{where}. "
            "Check --label-column."
        )
    return frame, names


def _to01(value: Any) -> int | None:
    """A multilabel cell as 0/1, or None when it is not a valid 0/1 value."""
    value = _plain(value)
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer, float, np.floating)):
        return int(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_STRINGS:
            return 1
        if text in _FALSE_STRINGS:
            return 0
    return None


def _binary_column(values: pd.Series, column: str, where: str) -> pd.Series:
    """Validate and convert one multilabel column to int 0/1."""
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.astype("int64")
    if pd.api.types.is_numeric_dtype(values.dtype) and values.isin([0, 1]).all():
        return values.astype("int64")
    converted = values.map(_to01)
    bad = converted.isna()
    if bad.any():
        examples = list(dict.fromkeys(_shown_value(v) for v in values[bad]))[:3]
        first_row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise DataError(
            f"multilabel column {_quoted(column)}{where} holds values other than 0/1 (e.g. {', '.join(examples)}), "
            f"first in data row {first_row}; multilabel columns must hold 0/1 (True/False also works). "
            + ("Fill the empty cells with 0 or 1, or " if "(empty)" in examples else "")
            + ("fix" if "(empty)" in examples else "Fix")
            + " the data or pick other --label-columns."
        )
    return converted.astype("int64")


def _multilabel_from_columns(
    raw: pd.DataFrame, texts: pd.Series, text_column: str, label_columns: list[str], where: str, columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Task frame from one 0/1 column per label, in the order given."""
    label_columns = [str(c).strip() for c in label_columns]
    if not label_columns:
        raise DataError("multilabel needs at least 1 label column; pass --label-columns a,b,c.")
    duplicates = sorted({c for c in label_columns if label_columns.count(c) > 1})
    if duplicates:
        raise DataError(
            f"--label-columns lists {', '.join(map(_quoted, duplicates))} more than once. List each column once."
        )
    missing = [c for c in label_columns if c not in raw.columns]
    if missing:
        raise DataError(
            f"label column(s) {', '.join(_quoted(c) for c in missing[:5])} not found{where}; "
            f"available columns: {_column_list(columns)}. Fix --label-columns."
        )
    if text_column in label_columns:
        raise DataError(f"{_quoted(text_column)} is both the text column and a label column. Fix --label-columns.")
    data: dict[str, pd.Series] = {"text": texts.astype(str)}
    for column in label_columns:
        _check_unique(raw, column, where)
        data[column] = _binary_column(raw[column], column, where)
    return pd.DataFrame(data).reset_index(drop=True), label_columns


def _split_labels(value: Any, separator: str | None) -> list[str]:
    """Label names in one list-valued or delimited-string cell."""
    if _is_missing(value):
        return []
    if isinstance(value, (list, tuple, set, np.ndarray)):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if separator is None and text.startswith("[") and text.endswith("]"):
            parsed = _parse_list_literal(text)
            items = parsed if parsed is not None else text.split(",")
        else:
            items = text.split(separator or ",")
    else:
        items = [value]
    names = (_label_name(item) for item in items)
    return list(dict.fromkeys(name for name in names if name))


def _parse_list_literal(text: str) -> list[Any] | None:
    """Parse '["a", "b"]' or "['a', 'b']" (a list column saved to CSV); None if it is not a list."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, list):
            return value
    return None


def _multilabel_from_lists(
    raw: pd.DataFrame,
    texts: pd.Series,
    text_column: str,
    label_column: str,
    separator: str | None,
    where: str,
    columns: list[str],
    known: list[str] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Task frame from a column of label lists or delimited strings; labels sorted by name (or the `known`
    training labels, in their order: a label outside them is an error)."""
    _check_label_column(
        raw,
        label_column,
        text_column,
        where,
        columns,
        "Use --label-column to pick one (or --label-columns for 0/1 columns).",
    )
    label_sets = [_split_labels(value, separator) for value in raw[label_column]]
    if known is not None:
        _check_known(label_sets, known, where)
        names = known
    else:
        names = sorted({name for labels in label_sets for name in labels})
    if not names:
        raise DataError(
            f"no labels found in column {_quoted(label_column)}{where}; multilabel needs at least 1 label. "
            "Check --label-column and --label-separator."
        )
    position = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(label_sets), len(names)), dtype="int64")
    for row, labels in enumerate(label_sets):
        for name in labels:
            matrix[row, position[name]] = 1
    frame = pd.DataFrame(matrix, columns=names)
    frame.insert(0, "text", texts.astype(str).to_numpy())
    return frame, names


# --------------------------------------------------------------------------- cleaning


def clean_texts(
    frame: pd.DataFrame, *, max_chars: int | None = None, collapse_whitespace: bool = True
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The thesis's cleaning: collapse runs of whitespace (incl. newlines) to one space and strip;
    drop empty texts; optionally drop texts longer than max_chars.

    Returns the cleaned frame and counts of dropped rows by reason (only reasons that dropped rows),
    e.g. {"empty text": 3, "longer than 200 characters": 10}. Non-string texts (NaN) count as empty.
    """
    if max_chars is not None and not _is_positive_int(max_chars):
        raise DataError(f"--max-chars must be a positive whole number, got {max_chars!r}.")
    if "text" not in frame.columns:
        raise DataError("the frame to clean has no 'text' column; build it with to_task_frame first.")
    texts = frame["text"].map(lambda v: v if isinstance(v, str) else "").astype(object)
    if collapse_whitespace:
        texts = texts.map(lambda t: re.sub(r"\s+", " ", t).strip())
    empty = texts.map(lambda t: not t.strip()).astype(bool)
    dropped: dict[str, int] = {}
    if int(empty.sum()):
        dropped["empty text"] = int(empty.sum())
    keep = ~empty
    if max_chars is not None:
        too_long = keep & texts.map(len).gt(max_chars)
        if int(too_long.sum()):
            dropped[f"longer than {max_chars} characters"] = int(too_long.sum())
        keep &= ~too_long
    mask = keep.to_numpy(dtype=bool)
    cleaned = frame[mask].reset_index(drop=True)
    cleaned["text"] = pd.Series(texts.to_numpy()[mask], dtype=str)
    if cleaned.empty:
        reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.items()) or "the data has no rows"
        raise DataError(f"no rows left after cleaning: {reasons}. Check the text column and --max-chars.")
    logger.debug("cleaning kept %d of %d rows; dropped %s", len(cleaned), len(frame), dropped)
    return cleaned, dropped


# --------------------------------------------------------------------------- splitting


def split_data(
    frame: pd.DataFrame,
    task: str,
    label_names: list[str],
    *,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 42,
) -> dict[str, pd.DataFrame]:
    """Reproducible train/val/test split, the thesis's way: test_size of all rows for test,
    then val_size of the remaining train rows for validation.

    Stratified for multiclass (sklearn's train_test_split; classes too small to stratify are pooled and
    placed at random, with a warning, the others stay stratified), iteratively stratified for multilabel
    (iterstrat's MultilabelStratifiedShuffleSplit; random, with a warning, if it fails). Returns
    {"train", "val", "test"} frames with reset indexes. Same seed -> identical splits. Too few rows for a
    non-empty split -> error.
    """
    _check_task(task)
    for name, size in (("test_size", test_size), ("val_size", val_size)):
        _check_fraction(name, size)
    n_rows = len(frame)
    n_test = math.ceil(test_size * n_rows)
    n_val = math.ceil(val_size * (n_rows - n_test))
    if min(n_test, n_val, n_rows - n_test - n_val) < 1:
        raise DataError(
            f"too few rows ({n_rows}) to split into non-empty train/val/test sets with test_size={test_size} "
            f"and val_size={val_size}. Use more data (or a larger --max-samples)."
        )
    rest, test = holdout(frame, task, label_names, test_size, seed, what="test")
    train, val = holdout(rest, task, label_names, val_size, seed, what="validation")
    splits = {"train": train, "val": val, "test": test}
    warn_unlearnable_labels(frame, train, task, label_names)
    logger.debug("split sizes: %s", {name: len(part) for name, part in splits.items()})
    return splits


def warn_unlearnable_labels(data: pd.DataFrame, train: pd.DataFrame, task: str, label_names: list[str]) -> None:
    """Tell the user about multilabel labels that occur in the data but have no positive example in train:
    the model cannot learn them, and their test metrics mean little."""
    if task != "multilabel":
        return
    missing = [name for name in label_names if data[name].any() and not train[name].any()]
    if missing:
        warn(
            f"{len(missing)} label{'s' if len(missing) > 1 else ''} with no positive example in the training "
            f"split: {', '.join(map(_quoted, missing[:10]))}{' ...' if len(missing) > 10 else ''}; the model "
            "cannot learn them (more data or a larger --max-samples helps)"
        )


def holdout(
    frame: pd.DataFrame, task: str, label_names: list[str], size: float, seed: int, what: str = "held-out"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ceil(size * rows) rows, stratified like split_data; returns (rest, held out) with reset indexes.
    `what` names the held-out split in warnings."""
    _check_task(task)
    _check_fraction("the held-out fraction", size)
    n_rows = len(frame)
    n_held = math.ceil(size * n_rows)
    if n_held < 1 or n_rows - n_held < 1:
        raise DataError(
            f"too few rows ({n_rows}) to hold out a fraction of {size} and keep the rest non-empty. Use more data."
        )
    targets = _targets(frame, task, label_names)
    rest, held = _split_indices(np.arange(n_rows), targets, n_held, task, seed, what)
    return frame.iloc[rest].reset_index(drop=True), frame.iloc[held].reset_index(drop=True)


def _is_positive_int(value: Any) -> bool:
    """Whether value is a whole number >= 1 (bools excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_fraction(name: str, size: float) -> None:
    """Reject a split fraction outside (0, 1)."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.floating)) or not 0 < size < 1:
        raise DataError(f"{name} must be a fraction between 0 and 1 (exclusive), got {size!r}.")


def _targets(frame: pd.DataFrame, task: str, label_names: list[str]) -> np.ndarray:
    """Labels to stratify on: class names (multiclass) or the 0/1 matrix (multilabel)."""
    if task == "multiclass":
        if "label" not in frame.columns:
            raise DataError("the frame has no 'label' column; build it with to_task_frame first.")
        return frame["label"].astype(str).to_numpy()
    missing = [name for name in label_names if name not in frame.columns]
    if missing:
        raise DataError(f"the frame lacks label columns {', '.join(missing)}; build it with to_task_frame first.")
    return frame[list(label_names)].to_numpy(dtype="int64")


def _split_indices(
    rows: np.ndarray, targets: np.ndarray, n_second: int, task: str, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (first, second) with exactly n_second rows in second, stratified where possible; what
    cannot be stratified is said on the console (the `what` split)."""
    from sklearn.model_selection import train_test_split

    try:
        if task == "multiclass":
            groups = _stratification_groups(targets, len(rows) - n_second, n_second, what)
            first, second = train_test_split(rows, test_size=n_second, stratify=groups, random_state=seed)
        else:
            from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

            splitter = MultilabelStratifiedShuffleSplit(
                n_splits=1, test_size=n_second, train_size=len(rows) - n_second, random_state=seed
            )
            first_pos, second_pos = next(splitter.split(np.zeros(len(rows)), targets))
            first, second = rows[first_pos], rows[second_pos]
            if len(second) != n_second:
                raise ValueError(f"iterative stratification gave {len(second)} rows, wanted {n_second}")
        return np.asarray(first), np.asarray(second)
    except Exception as exc:  # iterstrat incompatible with this sklearn, or a case the grouping did not foresee
        warn(f"the {what} split could not be stratified ({_short_reason(exc)}); it is a plain random split")
    first, second = train_test_split(rows, test_size=n_second, random_state=seed)
    return np.asarray(first), np.asarray(second)


_POOL = "\x00pooled classes"


def _stratification_groups(targets: np.ndarray, n_first: int, n_second: int, what: str) -> np.ndarray:
    """Classes to stratify on: every class, where sklearn can (2+ rows each, no more classes than rows on
    either side); otherwise the largest classes that fit, with the rest pooled into one group that is split at
    random (a single pooled row joins the largest class). One class too small no longer turns stratification
    off for all of them; the user is told which classes were pooled."""
    counts = pd.Series(targets).value_counts(sort=True)  # largest first, ties in order of appearance
    room = min(n_first, n_second)
    if int(counts.min()) >= 2 and len(counts) <= room:
        return targets
    stratified = [name for name, count in counts.items() if count >= 2][: max(room - 1, 0)]
    pooled = [name for name in counts.index if name not in set(stratified)]
    pool_rows = int(counts[pooled].sum())
    groups = np.where(pd.Series(targets).isin(pooled).to_numpy(), _POOL, targets.astype(object))
    if pool_rows < 2 and stratified:
        groups = np.where(groups == _POOL, stratified[0], groups)
    shown = ", ".join(map(_quoted, pooled[:5])) + (f" and {len(pooled) - 5} more" if len(pooled) > 5 else "")
    if stratified:
        warn(
            f"{len(pooled)} of {len(counts)} classes are too small to stratify the {what} split ({shown}): their "
            f"{pool_rows} rows are placed at random; the other {len(stratified)} classes stay stratified"
        )
    else:
        singles = int((counts < 2).sum())
        warn(
            f"the {what} split is a plain random split: {len(counts)} classes ({singles} with a single row) "
            f"cannot be stratified over {n_second} held-out rows"
        )
    return groups


def subsample(frame: pd.DataFrame, task: str, max_samples: int | None, seed: int) -> pd.DataFrame:
    """--max-samples: keep at most N rows, stratified for multiclass where possible, reproducible."""
    _check_task(task)
    if max_samples is None:
        return frame
    if not _is_positive_int(max_samples):
        raise DataError(f"--max-samples must be a positive whole number, got {max_samples!r}.")
    if max_samples >= len(frame):
        return frame.reset_index(drop=True)
    rows = np.arange(len(frame))
    if task == "multiclass" and "label" in frame.columns:
        keep, _ = _split_indices(
            rows, frame["label"].astype(str).to_numpy(), len(frame) - int(max_samples), task, seed, "--max-samples"
        )
    else:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(rows, train_size=int(max_samples), random_state=seed)
    result = frame.iloc[np.sort(keep)].reset_index(drop=True)
    logger.debug("subsampled %d of %d rows", len(result), len(frame))
    return result


# --------------------------------------------------------------------------- reporting and files


def label_counts(splits: dict[str, pd.DataFrame], task: str, label_names: list[str]) -> pd.DataFrame:
    """Per-split counts table: one row per class/label (index = label names, named 'label'),
    one column per split (train, val, test) + 'total'.

    Multiclass: rows per class; multilabel: positives per label, plus a final row 'no label'
    (rows with no positive labels).
    """
    _check_task(task)
    order = [name for name in SPLIT_NAMES if name in splits] + [name for name in splits if name not in SPLIT_NAMES]
    table: dict[str, pd.Series] = {}
    for name in order:
        part = splits[name]
        if task == "multiclass":
            counts = part["label"].astype(str).value_counts().reindex(label_names, fill_value=0)
        else:
            matrix = part[list(label_names)].to_numpy(dtype="int64").reshape(len(part), len(label_names))
            counts = pd.Series(matrix.sum(axis=0), index=list(label_names))
            counts.loc["no label"] = int((matrix.sum(axis=1) == 0).sum())
        table[name] = counts.astype("int64")
    index = list(label_names) + (["no label"] if task == "multilabel" else [])
    result = pd.DataFrame(table, index=index).fillna(0).astype("int64")
    result["total"] = result.sum(axis=1)
    result.index.name = "label"
    return result


def save_splits(splits: dict[str, pd.DataFrame], directory: Path) -> dict[str, Path]:
    """Write each split to directory/<name>.csv (UTF-8, index=False) with runs' atomic, durable write.
    Return the paths by split name."""
    from distilbench.runs import write_csv_atomic

    directory = Path(directory)
    paths: dict[str, Path] = {}
    try:
        for name, part in splits.items():
            paths[name] = directory / f"{name}.csv"
            write_csv_atomic(paths[name], part)
    except OSError as exc:
        raise DataError(
            f"could not write the splits to {directory}: {_short_reason(exc)}. Check the path and free space."
        ) from None
    logger.debug("saved splits to %s", directory)
    return paths


def load_split(path: Path, task: str, label_names: list[str]) -> pd.DataFrame:
    """Read a split written by save_splits back into a task frame (multiclass labels as str)."""
    _check_task(task)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}. Prepare the data again to recreate it.")
    try:
        raw = read_source(str(path), "text", string_columns=("label",) if task == "multiclass" else ())
    except DistilbenchError as exc:
        raise DataError(f"could not read split file {path} ({exc}); prepare the data again.") from None
    needed = ["text", "label"] if task == "multiclass" else ["text", *label_names]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise DataError(
            f"split file {path} lacks column(s) {', '.join(missing)} for this {task} task. "
            "Prepare the data again with the same task and labels."
        )
    texts = raw["text"].map(_as_text).astype(str)
    if task == "multiclass":
        labels = raw["label"].map(_label_name)
        unknown = sorted({str(v) for v in labels if v not in set(label_names)})
        if unknown:
            raise DataError(
                f"split file {path} has labels not among the known classes: {', '.join(unknown[:5])}. "
                "Prepare the data again."
            )
        return pd.DataFrame({"text": texts, "label": labels.astype(str)}).reset_index(drop=True)
    data: dict[str, pd.Series] = {"text": texts}
    for name in label_names:
        data[name] = _binary_column(raw[name], name, f" in {path.name}")
    return pd.DataFrame(data).reset_index(drop=True)
