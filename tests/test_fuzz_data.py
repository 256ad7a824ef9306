"""Fuzzed data loading: whatever a user points --data at either loads into a valid task frame or stops with
one clear DistilbenchError (a single line), never a traceback.

Every property goes through the path `compare.load_task_data` takes: read_source -> to_task_frame ->
clean_texts, on real files written to disk with each supported suffix.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from distilbench.core.console import DistilbenchError
from distilbench.data import datasets as data
from distilbench.data import readers

# 120 examples per property keep the file at a few seconds; DISTILBENCH_FUZZ_EXAMPLES=5000 digs deeper.
FUZZ = settings(
    max_examples=int(os.environ.get("DISTILBENCH_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
MAX_MESSAGE = 1000  # an error is one readable line, not a dump of the file

_counter = itertools.count()
_workdir = tempfile.TemporaryDirectory(prefix="distilbench-fuzz-")
_written: list[Path] = []


def _path(suffix: str) -> Path:
    """A fresh file name per example (hypothesis runs many examples inside one test call); the previous
    example's file is removed, so thousands of examples do not fill the disk."""
    while _written:
        _written.pop().unlink(missing_ok=True)
    path = Path(_workdir.name) / f"data{next(_counter)}{suffix}"
    _written.append(path)
    return path


# --------------------------------------------------------------------------- the property


def _load(path: Path, task: str, **columns: Any) -> tuple[pd.DataFrame, list[str]]:
    """The user's path through the loader, as compare.load_task_data runs it."""
    raw = data.read_source(str(path), columns.get("text_column", "text"))
    frame, names = data.to_task_frame(raw, task, **columns)
    frame, _ = data.clean_texts(frame)
    return frame, names


def _check_valid(frame: pd.DataFrame, names: list[str], task: str) -> None:
    """A task frame as the module docstring of distilbench.data.datasets defines it, cleaned."""
    assert len(frame) > 0
    texts = frame["text"].tolist()
    assert all(isinstance(t, str) and t and t == " ".join(t.split()) for t in texts)
    assert names and all(isinstance(n, str) and n for n in names)
    assert len(set(names)) == len(names) and "text" not in names
    if task == "multiclass":
        assert list(frame.columns) == ["text", "label"]
        assert len(names) >= 2 and names == sorted(names)
        labels = frame["label"].tolist()
        assert all(isinstance(v, str) and v for v in labels)
        assert set(labels) <= set(names)
    else:
        assert list(frame.columns) == ["text", *names]
        for name in names:
            assert frame[name].dtype == np.int64, (name, frame[name].dtype)
            assert set(frame[name].unique().tolist()) <= {0, 1}


def _check_error(exc: DistilbenchError) -> str:
    message = str(exc)
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "\r" not in message, f"a multi-line error: {message!r}"
    assert len(message) <= MAX_MESSAGE, f"an error of {len(message)} characters: {message[:300]!r}..."
    return message


def loads_or_fails_clearly(path: Path, task: str, **columns: Any) -> tuple[pd.DataFrame, list[str]] | None:
    """The property: a valid task frame, or one clear DistilbenchError; any other exception fails the test."""
    try:
        frame, names = _load(path, task, **columns)
    except DistilbenchError as exc:
        _check_error(exc)
        return None
    _check_valid(frame, names, task)
    return frame, names


# --------------------------------------------------------------------------- strategies

# Characters that break naive CSV/JSON handling: quotes, delimiters, line breaks, BOM, NUL-free controls.
_NASTY = st.sampled_from(
    [
        '"',
        "'",
        ",",
        ";",
        "\t",
        "\n",
        "\r",
        "\r\n",
        " ",
        "\\",
        "\ufeff",
        "\x0b",
        "\x85",
        "\u2028",
        "é",
        "ß",
        "€",
        "😀",
        "NA",
        "null",
        "[",
        "]",
        "{",
        "}",
        "#",
    ]
)
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
cell_text = st.lists(st.one_of(_NASTY, st.text(_CHARS, max_size=8)), max_size=6).map("".join)
long_text = st.integers(600, 6000).map(lambda n: "lorem ipsum " * n)
any_text = st.one_of(cell_text, cell_text, cell_text, long_text)

# Label values a user's file may hold where 0/1 or class names are expected.
odd_label = st.one_of(
    st.sampled_from(
        [
            0,
            1,
            2,
            -1,
            0.5,
            1.0,
            0.0,
            float("nan"),
            None,
            True,
            False,
            "0",
            "1",
            "yes",
            "no",
            "",
            " ",
            " 1 ",
            "1.0",
            "true",
            "FALSE",
            "0.5",
            "-1",
            "NaN",
            "null",
        ]
    ),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    cell_text,
)
binary_label = st.sampled_from([0, 1, 0, 1, "0", "1", True, False, 1.0, 0.0])

column_name = st.one_of(
    st.sampled_from(["text", "label", "labels", "toxic", "insult", "", " text", "Text", "text.1", "label.1"]), cell_text
)

# The ways a user can ask for labels: (task, keyword arguments of to_task_frame).
label_requests = st.sampled_from(
    [
        ("multiclass", {}),
        ("multiclass", {"label_column": "labels"}),
        ("multilabel", {}),
        ("multilabel", {"label_column": "label", "label_separator": "|"}),
        ("multilabel", {"label_columns": ["toxic", "insult"]}),
        ("multilabel", {"label_columns": ["label"]}),
    ]
)


def _quote(cell: str, style: str, sep: str) -> str:
    if style == "raw":
        return cell
    if style == "quoted":
        return '"' + cell.replace('"', '""') + '"'
    if style == "unescaped":  # quotes inside a quoted cell left as they are
        return '"' + cell + '"'
    return cell.replace(sep, " ")  # "clean": a cell that needs no quoting, except for quotes and newlines


@st.composite
def delimited_text(draw, sep: str) -> str:
    """A CSV/TSV file's text: a header of odd (or duplicate) names, rows of odd cells with mixed quoting,
    ragged rows, blank and whitespace-only lines, mixed line endings."""
    header = draw(st.lists(column_name, min_size=1, max_size=4))
    if draw(st.booleans()):
        header = ["text", draw(st.sampled_from(["label", "labels", "toxic"]))] + header[:2]
    width = len(header)
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [sep.join(_quote(h, draw(st.sampled_from(["raw", "quoted", "clean"])), sep) for h in header)]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["row", "row", "row", "blank", "spaces", "ragged"]))
        if kind == "blank":
            lines.append("")
        elif kind == "spaces":
            lines.append(" " * draw(st.integers(1, 3)))
        else:
            n = width if kind == "row" else draw(st.integers(1, width + 2))
            cells = [draw(st.one_of(any_text, odd_label.map(str))) for _ in range(n)]
            styles = st.sampled_from(["raw", "quoted", "quoted", "unescaped", "clean"])
            lines.append(sep.join(_quote(c, draw(styles), sep) for c in cells))
    return newline.join(lines) + draw(st.sampled_from(["", newline, newline * 3]))


ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, errors="replace")


def _json_scalar() -> st.SearchStrategy:
    return st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), any_text)


json_value = st.recursive(
    _json_scalar(),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(column_name, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def json_lines_text(draw) -> str:
    """JSON lines: mostly objects with text/label keys, plus arrays, scalars, garbage and blank lines."""
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["record", "record", "record", "value", "garbage", "blank"]))
        if kind == "record":
            record = {
                "text": draw(any_text),
                "label": draw(odd_label),
                "labels": draw(json_value),
                "toxic": draw(odd_label),
                "insult": draw(binary_label),
            }
            keys = draw(st.lists(st.sampled_from(list(record)), unique=True, max_size=5))
            extra = draw(st.dictionaries(column_name, json_value, max_size=2))
            obj = {**extra, **{k: record[k] for k in keys}}
            lines.append(json.dumps(obj, ensure_ascii=draw(st.booleans())))  # NaN/Infinity literals included
        elif kind == "value":
            lines.append(json.dumps(draw(json_value)))
        elif kind == "garbage":
            lines.append(draw(cell_text).replace("\n", " ").replace("\r", " "))
        else:
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


def _frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame({"text": []})


@st.composite
def table_rows(draw) -> list[dict[str, Any]]:
    """Well-formed tables with awkward contents: odd texts (some very long) and odd label values."""
    labels = draw(st.sampled_from(["binary", "classes", "odd"]))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        row = {"text": draw(st.one_of(any_text, st.none()))}
        if labels == "binary":
            row.update(label=draw(binary_label), toxic=draw(binary_label), insult=draw(binary_label))
        elif labels == "classes":
            row.update(
                label=draw(st.sampled_from(["sport", "tech", "sport|tech", "", None])),
                toxic=draw(binary_label),
                insult=draw(binary_label),
            )
        else:
            row.update(label=draw(odd_label), toxic=draw(odd_label), insult=draw(binary_label))
        rows.append(row)
    return rows


def _write_table(frame: pd.DataFrame, path: Path) -> bool:
    """Write a frame the way users' tools do; False where the format cannot hold these values."""
    suffix = path.suffix
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix == ".tsv":
            frame.to_csv(path, sep="\t", index=False)
        elif suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        elif suffix == ".json":
            frame.to_json(path, orient="records")
        else:
            frame.to_parquet(path, index=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False
    return True


# --------------------------------------------------------------------------- properties


@FUZZ
@given(
    content=st.binary(max_size=600),
    suffix=st.sampled_from(TEXT_SUFFIXES + (".parquet",)),
    request=label_requests,
    header=st.sampled_from([b"", b"text,label\n", b"text\tlabel\n", b'{"text": ']),
)
@example(content=bytes(range(256)), suffix=".csv", request=("multiclass", {}), header=b"")
@example(
    content=b"\xff\xfe" + "text,label\na,b\n".encode("utf-16-le"), suffix=".csv", request=("multiclass", {}), header=b""
)
def test_byte_soup_loads_or_fails_clearly(content: bytes, suffix: str, request: tuple, header: bytes) -> None:
    path = _path(suffix)
    path.write_bytes(header + content)
    task, columns = request
    loads_or_fails_clearly(path, task, **columns)


@FUZZ
@given(
    text=st.one_of(delimited_text(","), delimited_text(";")),
    encoding=st.sampled_from(ENCODINGS),
    request=label_requests,
)
def test_odd_csv_loads_or_fails_clearly(text: str, encoding: str, request: tuple) -> None:
    path = _path(".csv")
    path.write_bytes(_encode(text, encoding))
    task, columns = request
    loads_or_fails_clearly(path, task, **columns)


@FUZZ
@given(text=delimited_text("\t"), encoding=st.sampled_from(ENCODINGS), request=label_requests)
def test_odd_tsv_loads_or_fails_clearly(text: str, encoding: str, request: tuple) -> None:
    path = _path(".tsv")
    path.write_bytes(_encode(text, encoding))
    task, columns = request
    loads_or_fails_clearly(path, task, **columns)


@FUZZ
@given(
    text=json_lines_text(),
    suffix=st.sampled_from([".jsonl", ".json"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]),
    request=label_requests,
)
def test_odd_json_lines_load_or_fail_clearly(text: str, suffix: str, encoding: str, request: tuple) -> None:
    path = _path(suffix)
    path.write_bytes(_encode(text, encoding))
    task, columns = request
    loads_or_fails_clearly(path, task, **columns)


@FUZZ
@given(records=st.lists(json_value, max_size=5), request=label_requests)
def test_json_array_files_load_or_fail_clearly(records: list, request: tuple) -> None:
    path = _path(".json")
    path.write_text(json.dumps(records), encoding="utf-8")
    task, columns = request
    loads_or_fails_clearly(path, task, **columns)


@FUZZ
@given(rows=table_rows(), suffix=st.sampled_from(TEXT_SUFFIXES + (".parquet",)), request=label_requests)
def test_tables_with_odd_values_load_or_fail_clearly(rows: list[dict], suffix: str, request: tuple) -> None:
    path = _path(suffix)
    assume(_write_table(_frame_from_rows(rows), path))
    task, columns = request
    result = loads_or_fails_clearly(path, task, **columns)
    if result is None or "label_columns" not in columns:
        return
    frame, names = result  # 0/1 columns load under the names asked for, in that order
    assert names == columns["label_columns"]


@FUZZ
@given(
    names=st.lists(st.sampled_from(["text", "label", "toxic", "insult", "other"]), min_size=2, max_size=5),
    suffix=st.sampled_from([".csv", ".tsv", ".parquet"]),
    request=label_requests,
)
def test_duplicate_column_names_load_or_fail_clearly(names: list[str], suffix: str, request: tuple) -> None:
    path = _path(suffix)
    rows = [
        [f"row {i} col {j}" if name == "text" else str((i + j) % 2) for j, name in enumerate(names)] for i in range(4)
    ]
    if suffix == ".parquet":
        pq.write_table(pa.table([pa.array([row[j] for row in rows]) for j in range(len(names))], names=names), path)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        path.write_text("\n".join(sep.join(row) for row in [names, *rows]) + "\n", encoding="utf-8")
    task, columns = request
    result = loads_or_fails_clearly(path, task, **columns)
    if "label_columns" in columns:
        used = {"text", *columns["label_columns"]}
    elif task == "multilabel" and not columns:  # the loader picks 'labels', else 'label'
        used = {"text", "labels" if "labels" in names else "label"}
    else:
        used = {"text", columns.get("label_column") or "label"}
    duplicated = {name for name in names if names.count(name) > 1}
    if duplicated & used & set(names):
        assert result is None, f"a duplicated column {duplicated & used} was used silently"


# --------------------------------------------------------------------------- predict's input, streamed


def streams_like_the_whole_reader(path: Path, chunk_rows: int) -> list[str] | None:
    """The property of predict's input: streamed in chunks (readers.iter_texts, after predict's up-front
    check), a file gives exactly the rows and texts that the whole-table reader of training gives, in chunks
    of exactly `chunk_rows`; or both refuse it, the streamed one with one clear line."""
    try:
        whole = readers.read_source(str(path), "text")
        readers.require_column(whole, "text", "text", "--text-column")
        expected = [readers.as_text(v) for v in whole["text"].tolist()]
    except DistilbenchError:
        expected = None
    try:
        readers.check_input(str(path))
        chunks = list(readers.iter_texts(str(path), "text", chunk_rows))
    except DistilbenchError as exc:
        _check_error(exc)
        streamed = None
    else:
        assert chunks and all(len(chunk) == chunk_rows for chunk in chunks[:-1])
        assert 1 <= len(chunks[-1]) <= chunk_rows
        streamed = [text for chunk in chunks for text in chunk]
        assert all(isinstance(text, str) for text in streamed)
    assert streamed == expected, (streamed, expected)
    return streamed


chunk_sizes = st.integers(1, 5)


@FUZZ
@given(
    content=st.binary(max_size=600),
    suffix=st.sampled_from(TEXT_SUFFIXES + (".parquet",)),
    header=st.sampled_from([b"", b"text,label\n", b"text\tlabel\n", b'{"text": ']),
    chunk_rows=chunk_sizes,
)
def test_predict_input_byte_soup_streams_or_fails_clearly(
    content: bytes, suffix: str, header: bytes, chunk_rows: int
) -> None:
    path = _path(suffix)
    path.write_bytes(header + content)
    streams_like_the_whole_reader(path, chunk_rows)


@FUZZ
@given(
    file=st.one_of(
        delimited_text(",").map(lambda text: (text, ".csv")), delimited_text("\t").map(lambda text: (text, ".tsv"))
    ),
    encoding=st.sampled_from(ENCODINGS),
    chunk_rows=chunk_sizes,
)
def test_predict_input_odd_delimited_files_stream_like_training_reads_them(
    file: tuple, encoding: str, chunk_rows: int
) -> None:
    text, suffix = file
    path = _path(suffix)
    path.write_bytes(_encode(text, encoding))
    streams_like_the_whole_reader(path, chunk_rows)


def test_a_number_in_json_lines_reads_the_same_whole_and_in_chunks(tmp_path):
    """Found by the property below: a number as the text after an object without the key was 0.0 read whole
    (pandas turned the column of 0 and a gap into floats) and 0 in chunks of one row."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"other": 1}\n{"text": 0}\n')
    whole = readers.read_source(str(path), "text")
    assert [readers.as_text(v) for v in whole["text"]] == ["", "0"]
    assert [text for chunk in readers.iter_texts(str(path), "text", 1) for text in chunk] == ["", "0"]


@FUZZ
@given(
    text=json_lines_text(),
    suffix=st.sampled_from([".jsonl", ".json"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]),
    chunk_rows=chunk_sizes,
)
def test_predict_input_odd_json_lines_stream_like_training_reads_them(
    text: str, suffix: str, encoding: str, chunk_rows: int
) -> None:
    path = _path(suffix)
    path.write_bytes(_encode(text, encoding))
    streams_like_the_whole_reader(path, chunk_rows)


@FUZZ
@given(
    rows=table_rows(),
    suffix=st.sampled_from(TEXT_SUFFIXES + (".parquet",)),
    chunk_rows=chunk_sizes,
    row_group=st.integers(1, 4),
)
def test_predict_input_tables_stream_every_row_in_order(
    rows: list[dict], suffix: str, chunk_rows: int, row_group: int
) -> None:
    frame = _frame_from_rows(rows)
    path = _path(suffix)
    if suffix == ".parquet":  # row groups of another size than the chunks: chunks are still cut exactly
        try:
            frame.to_parquet(path, index=False, row_group_size=row_group)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            assume(False)
    else:
        assume(_write_table(frame, path))
    streamed = streams_like_the_whole_reader(path, chunk_rows)
    if streamed is not None and suffix in (".jsonl", ".json", ".parquet"):  # lossless formats: the texts as given
        assert streamed == [readers.as_text(t) for t in frame["text"].tolist()]


@FUZZ
@given(
    lines=st.lists(st.one_of(cell_text, st.sampled_from(["", " ", "\t"])), min_size=1, max_size=8),
    newline=st.sampled_from(["\n", "\r\n"]),
    chunk_rows=chunk_sizes,
)
def test_predict_text_files_are_one_text_per_line(lines: list[str], newline: str, chunk_rows: int) -> None:
    """.txt input: one text per line (LF or CRLF); a CR or another line separator inside a text stays in it."""
    lines = [
        line.replace("\n", " ").replace("\r", "\x0b") if newline == "\r\n" else line.replace("\n", " ")
        for line in lines
    ]
    assume(not (newline == "\n" and any(line.endswith("\r") for line in lines)))  # that is a CRLF line end
    assume(not lines[0].startswith("\ufeff"))  # a byte-order mark at the start is not text
    path = _path(".txt")
    path.write_bytes(newline.join(lines).encode("utf-8") + newline.encode())
    chunks = list(readers.iter_texts(str(path), "text", chunk_rows))
    assert [text for chunk in chunks for text in chunk] == lines


class_name = st.sampled_from(
    ["sport", " sport ", "tech", "world news", "NA", "null", "nan", "None", "#1", "naïve", "", " ", None]
)
plain_text = st.one_of(cell_text, long_text)


@FUZZ
@given(
    rows=st.lists(st.tuples(plain_text, class_name), max_size=10), suffix=st.sampled_from(TEXT_SUFFIXES + (".parquet",))
)
def test_well_formed_multiclass_files_load_exactly(rows: list[tuple], suffix: str) -> None:
    """What a user's tool writes correctly comes back exactly: cleaned texts, stripped class names,
    rows without a label or text dropped; no 'NA'/'null' read as missing."""
    rows = [("plain words", "sport"), *rows]  # a non-numeric text, so no reader takes the column for numbers
    path = _path(suffix)
    assert _write_table(pd.DataFrame(rows, columns=["text", "label"]), path)
    labelled = [(" ".join(text.split()), label.strip()) for text, label in rows if label and label.strip()]
    expected = [(text, label) for text, label in labelled if text]
    names = sorted({label for _, label in labelled})
    result = loads_or_fails_clearly(path, "multiclass")
    if len(names) < 2:
        assert result is None
        return
    assert result is not None
    frame, got_names = result
    assert got_names == names
    assert list(zip(frame["text"], frame["label"])) == expected


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            plain_text,
            st.lists(st.sampled_from(["sport", "tech", "world news", "NA", "a b"]), max_size=3),
            binary_label,
        ),
        max_size=10,
    ),
    suffix=st.sampled_from(TEXT_SUFFIXES + (".parquet",)),
    flag_type=st.sampled_from([int, float, bool, str]),
)
def test_well_formed_multilabel_files_load_exactly(rows: list[tuple], suffix: str, flag_type: type) -> None:
    """0/1 columns (ints, floats, bools or strings) and delimited label lists come back as the same 0/1 matrix."""
    rows = [("plain words", ["sport"], 1), *rows]
    path = _path(suffix)
    flag = [flag_type(int(float(v))) for *_, v in rows]
    raw = pd.DataFrame({"text": [t for t, *_ in rows], "labels": ["|".join(ls) for _, ls, _ in rows], "toxic": flag})
    assert _write_table(raw, path)
    keep = [i for i, (text, *_) in enumerate(rows) if text.split()]
    frame, names = loads_or_fails_clearly(path, "multilabel", label_columns=["toxic"])
    assert names == ["toxic"]
    assert frame["toxic"].tolist() == [int(float(rows[i][2])) for i in keep]
    frame, names = loads_or_fails_clearly(path, "multilabel", label_column="labels", label_separator="|")
    assert names == sorted({name for _, labels, _ in rows for name in labels})
    assert frame["text"].tolist() == [" ".join(rows[i][0].split()) for i in keep]
    assert frame[names].to_numpy().tolist() == [[int(n in rows[i][1]) for n in names] for i in keep]


# --------------------------------------------------------------------------- pinned cases


def _error_of(path: Path, task: str, **columns: Any) -> str:
    with pytest.raises(DistilbenchError) as info:
        _load(path, task, **columns)
    return _check_error(info.value)


def test_duplicate_text_column_names_the_column() -> None:
    path = _path(".csv")
    path.write_text("text,label,text\na,x,b\nc,y,d\n", encoding="utf-8")
    message = _error_of(path, "multiclass")
    assert "'text'" in message and "2 columns" in message and path.name in message


def test_utf16_with_bom_loads() -> None:  # Excel's "Unicode Text" export
    path = _path(".tsv")
    path.write_bytes("text\tlabel\ncafé au lait\tdrink\ntea\tdrink\nbread\tfood\n".encode("utf-16"))
    frame, names = _load(path, "multiclass")
    assert frame["text"].tolist()[0] == "café au lait" and names == ["drink", "food"]


def test_latin1_error_says_where_and_what_to_do() -> None:
    path = _path(".csv")
    path.write_bytes("text,label\nfine,a\ncaf\u00e9,b\n".encode("latin-1"))
    message = _error_of(path, "multiclass")
    assert "UTF-8" in message and "line 3" in message and "re-save" in message.lower()


def test_rows_wider_than_the_header_are_an_error() -> None:  # pandas would take column 1 as an index
    path = _path(".csv")
    path.write_text("text,label\nhello, world,a\nbye, now,b\n", encoding="utf-8")
    message = _error_of(path, "multiclass")
    assert "header" in message and "quote" in message


@pytest.mark.parametrize("value,shown", [("2", "2"), ("-1", "-1"), ("yes", "'yes'"), ("0.5", "0.5"), ("", "empty")])
def test_non_binary_label_names_column_and_value(value: str, shown: str) -> None:
    path = _path(".csv")
    path.write_text(f"text,toxic\na,1\nb,{value}\nc,0\n", encoding="utf-8")
    message = _error_of(path, "multilabel", label_columns=["toxic"])
    assert "'toxic'" in message and shown in message and "row 2" in message


def test_nullable_bool_parquet_column_with_gaps() -> None:
    path = _path(".parquet")
    pq.write_table(pa.table({"text": ["a", "b", "c"], "toxic": pa.array([True, None, False])}), path)
    message = _error_of(path, "multilabel", label_columns=["toxic"])
    assert "'toxic'" in message and "empty" in message


def test_newline_in_column_names_keeps_errors_on_one_line() -> None:
    path = _path(".csv")
    path.write_text('"te\nxt","la\nbel"\na,b\n', encoding="utf-8")
    message = _error_of(path, "multiclass")
    assert "te\\nxt" in message


def test_bare_carriage_return_in_a_pandas_csv_cell_stays_in_its_row() -> None:
    path = _path(".csv")  # pandas' to_csv leaves a lone CR unquoted; a reader would start a new row there
    pd.DataFrame({"text": ["one\rtwo", "three"], "toxic": [1, 0]}).to_csv(path, index=False)
    assert b"one\rtwo,1" in path.read_bytes()
    frame, _ = _load(path, "multilabel", label_columns=["toxic"])
    assert frame["text"].tolist() == ["one two", "three"] and frame["toxic"].tolist() == [1, 0]


def test_crlf_and_cr_line_endings_still_load() -> None:
    for newline in ("\r\n", "\r"):
        path = _path(".csv")
        path.write_bytes(newline.join(["text,label", "a,x", '"b\nc",y', ""]).encode())
        frame, names = _load(path, "multiclass")
        assert frame["text"].tolist() == ["a", "b c"] and names == ["x", "y"]


def test_deeply_nested_json_is_a_clear_error() -> None:
    path = _path(".json")
    path.write_text("[" * 100_000, encoding="utf-8")
    assert "could not read" in _error_of(path, "multiclass")


def test_json_lines_with_blank_lines_load() -> None:
    path = _path(".jsonl")
    path.write_text('\n{"text": "a", "label": "x"}\n\n  \n{"text": "b", "label": "y"}\n\n', encoding="utf-8")
    frame, names = _load(path, "multiclass")
    assert frame["text"].tolist() == ["a", "b"] and names == ["x", "y"]


def test_very_long_texts_load_whole() -> None:  # truncation is the tokenizer's job, with a warning
    path = _path(".csv")
    long = "word " * 200_000
    pd.DataFrame({"text": [long, "short"], "label": ["a", "b"]}).to_csv(path, index=False)
    frame, _ = _load(path, "multiclass")
    assert len(frame["text"][0]) == len(long.strip())


# --------------------------------------------------------------------------- truncation warning


def test_tokenize_texts_warns_once_about_truncation(minilm_tokenizer, capsys, monkeypatch) -> None:
    from distilbench.runtime import batching as inference  # the loop's numpy part holds the warned limits

    monkeypatch.setattr(inference, "_warned_truncation", set())
    texts = ["short text", "word " * 50, "a b c d e f", "word " * 60]
    expected = minilm_tokenizer(texts, truncation=True, max_length=8, padding=False)
    encoded = inference.tokenize_texts(minilm_tokenizer, texts, 8)
    assert encoded["input_ids"] == expected["input_ids"]  # the return value is unchanged
    inference.tokenize_texts(minilm_tokenizer, texts, 8)  # the same limit again (speed rounds): no repeat
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["warning: 2 of 4 texts are longer than 8 tokens and were truncated to 8 (--max-length)."]
    inference.tokenize_texts(minilm_tokenizer, ["a b c d e f"], 8)  # exactly 8 tokens: not truncated
    inference.tokenize_texts(minilm_tokenizer, ["short", "texts"], None)
    assert capsys.readouterr().err == ""


def test_tokenize_texts_names_the_model_limit(minilm_tokenizer, capsys, monkeypatch) -> None:
    from distilbench.runtime import batching as inference  # the loop's numpy part holds the warned limits

    monkeypatch.setattr(inference, "_warned_truncation", set())
    inference.tokenize_texts(minilm_tokenizer, ["word " * 600, "short"], None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 texts are longer than 512 tokens" in err and "model" in err


# --------------------------------------------------------------------------- end to end


def _nasty_files(tmp_path: Path) -> list[tuple[Path, str]]:
    files = {
        "soup.csv": bytes(range(1, 256)) * 4,
        "latin1.csv": "text,label\ncaf\u00e9,a\nthé,b\n".encode("latin-1"),
        "ragged.csv": b'text,label\n"unclosed,a\nb,c,d,e\n',
        "dupes.csv": b"text,text,label\na,b,x\nc,d,y\n",
        "nolabel.jsonl": b'{"text": "a"}\n{"text": "b"}\n',
        "newline-header.csv": b'"te\nxt",label\na,b\n',
    }
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        paths.append((path, name))
    return paths


def test_cli_reports_nasty_files_in_one_line(capsys, tmp_path) -> None:
    from distilbench.cli.commands import main

    for path, name in _nasty_files(tmp_path):
        with pytest.raises(SystemExit) as info:
            main(
                [
                    "train",
                    "--task",
                    "multiclass",
                    "--model",
                    "minilm-l6",
                    "--data",
                    str(path),
                    "--out",
                    str(tmp_path / f"run-{name}"),
                    "--no-progress",
                ]
            )
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert info.value.code == 2, (name, err)
        assert "Traceback" not in err
        assert len(lines) == 1 and lines[0].startswith("distilbench: error: "), (name, err)
        assert name in lines[0], (name, lines[0])


def test_multilabel_cli_names_bad_label_value(capsys, tmp_path) -> None:
    from distilbench.cli.commands import main

    path = tmp_path / "labels.csv"
    path.write_text("text,toxic,insult\na,1,0\nb,yes,1\nc,0,0\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--task",
                "multilabel",
                "--label-columns",
                "toxic,insult",
                "--model",
                "minilm-l6",
                "--data",
                str(path),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and "'toxic'" in err and "'yes'" in err


def test_property_helper_rejects_other_exceptions(monkeypatch) -> None:
    """The property itself: an exception that is not a DistilbenchError is a failure, not a pass."""
    path = _path(".csv")
    path.write_text("text,label\na,x\nb,y\n", encoding="utf-8")

    def broken(source: str, *args) -> pd.DataFrame:
        raise KeyError("boom")

    monkeypatch.setattr(data, "read_source", broken)
    with pytest.raises(KeyError):
        loads_or_fails_clearly(path, "multiclass")


def test_count_truncated_without_fast_encodings(minilm_tokenizer) -> None:
    """A slow tokenizer keeps no overflow: the texts at the limit are tokenized again to tell."""
    from distilbench.runtime import inference

    texts = ["short text", "word " * 50, "a b c d e f", "word " * 60]
    encoded = minilm_tokenizer(texts, truncation=True, max_length=8, padding=False)
    assert inference._count_truncated(minilm_tokenizer, texts, encoded, 8) == 2
    assert inference._count_truncated(minilm_tokenizer, texts, dict(encoded), 8) == 2


def test_parquet_binary_and_decimal_cells_read_as_text_and_numbers() -> None:
    import decimal

    path = _path(".parquet")
    pq.write_table(
        pa.table(
            {
                "text": pa.array([b"caf\xc3\xa9", b"tea", b"milk"]),
                "label": pa.array([b"drink", b"drink", b"food"]),
                "toxic": pa.array([decimal.Decimal("1.0"), decimal.Decimal("0"), decimal.Decimal("1")]),
            }
        ),
        path,
    )
    frame, names = _load(path, "multiclass")
    assert frame["text"].tolist() == ["café", "tea", "milk"] and names == ["drink", "food"]
    frame, names = _load(path, "multilabel", label_columns=["toxic"])
    assert frame["toxic"].tolist() == [1, 0, 1]


def test_semicolon_csv_gets_a_delimiter_hint() -> None:
    path = _path(".csv")
    path.write_text("text;label\nhello;a\nbye;b\n", encoding="utf-8")
    message = _error_of(path, "multiclass")
    assert "';'" in message and "commas" in message


def test_column_name_differing_in_spaces_is_suggested() -> None:
    path = _path(".csv")
    path.write_text(" Text ,label\nhello,a\nbye,b\n", encoding="utf-8")
    assert "Did you mean ' Text '?" in _error_of(path, "multiclass")


def test_label_names_with_line_breaks_become_one_line() -> None:
    path = _path(".csv")
    path.write_text('text,label\nhello,"good\nnews"\nbye,bad\n', encoding="utf-8")
    frame, names = _load(path, "multiclass")
    assert names == ["bad", "good news"]


# --------------------------------------------------------------------------- adversarial data sets, end to end


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_bert_dir) -> Path:
    """An untrained two-class classifier saved like a distilbench checkpoint: enough to run predict."""
    from distilbench.models.registry import load_classifier

    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["business", "sport"])
    path = tmp_path_factory.mktemp("adversarial-checkpoint")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from distilbench.cli.commands import main

    with pytest.raises(SystemExit) as info:
        main(list(argv))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _refused_in_one_line(code: int, err: str, name: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("distilbench: error: ") and name in lines[0], err
    return lines[0]


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Files no command can use, each with a word its one-line error must contain."""
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"text,label\nstock\x00market,business\nsports,sport\n")
    mixed = tmp_path / "mixed.csv"  # UTF-8 rows, then one row saved by a Latin-1 tool, far down the file
    mixed.write_bytes(
        "text,label\n".encode() + "café fell,business\n".encode() * 3000 + "thé,sport\n".encode("latin-1")
    )
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    parquet = tmp_path / "really-parquet.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["business", "sport"]}).to_parquet(parquet)
    return {
        "nul": (nul, "NUL"),
        "mixed": (mixed, "line 3002"),
        "folder": (folder, "folder"),
        "parquet": (parquet, "Parquet file"),
    }


@pytest.mark.parametrize("case", ["nul", "mixed", "folder", "parquet"])
def test_bad_files_end_in_one_line_for_train_and_predict(capsys, tmp_path, checkpoint, case) -> None:
    path, word = _bad_files(tmp_path)[case]
    out = tmp_path / "run"
    code, _, err = _cli(
        capsys, "train", "--model", "minilm-l6", "--data", str(path), "--out", str(out), "--no-progress"
    )
    assert word in _refused_in_one_line(code, err, path.name)
    assert not (out / "comparison.json").exists() and not list(out.glob("results/*/row.json"))
    output = tmp_path / "p.jsonl"
    code, _, err = _cli(
        capsys,
        "predict",
        "--model",
        str(checkpoint),
        "--input",
        str(path),
        "--output",
        str(output),
        "--backend",
        "torch-fp32",
        "--no-progress",
    )
    assert word in _refused_in_one_line(code, err, path.name)
    (tmp_path / "again").mkdir()
    written = {p.name for p in tmp_path.iterdir()} - {p.name for p, _ in _bad_files(tmp_path / "again").values()}
    assert written == {"again"}, f"something was written: {written}"  # not even the run directory


@pytest.mark.parametrize(
    "task, flags, word",
    [
        ("multiclass", [], "no labels at all"),
        ("multilabel", ["--label-columns", "label"], "(empty)"),
    ],
)
def test_a_label_column_that_is_all_empty_is_one_line(capsys, tmp_path, task, flags, word) -> None:
    path = tmp_path / "no-labels.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [np.nan] * 3}).to_csv(path, index=False)
    code, _, err = _cli(
        capsys,
        "train",
        "--task",
        task,
        *flags,
        "--model",
        "minilm-l6",
        "--data",
        str(path),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert word in _refused_in_one_line(code, err, "no-labels.csv")
    assert not (tmp_path / "run" / "comparison.json").exists()


def test_awkward_but_valid_files_give_correct_results(capsys, tmp_path, checkpoint) -> None:
    """Blank lines, texts of only whitespace and a 5 MB text: training data is read right (blank lines
    skipped, blank texts dropped and counted) and predict answers every input row, in order."""
    from distilbench.config import ExperimentConfig
    from distilbench.experiments.compare import load_task_data

    huge = "stock market " * 400_000  # 5.2 MB
    path = tmp_path / "awkward.csv"
    path.write_text(
        'text,label\n\nstock fell,business\n\n   \n" \t ",sport\n\n' + huge + ",business\nsports won,sport\n\n",
        encoding="utf-8",
    )
    frame, names, dropped = load_task_data(str(path), ExperimentConfig(data=str(path)))
    assert frame["text"].tolist() == ["stock fell", huge.strip(), "sports won"] and names == ["business", "sport"]
    assert dropped == {"empty text": 1}
    output = tmp_path / "p.jsonl"
    code, _, err = _cli(
        capsys,
        "predict",
        "--model",
        str(checkpoint),
        "--input",
        str(path),
        "--output",
        str(output),
        "--backend",
        "torch-fp32",
        "--max-length",
        "32",
        "--chunk-rows",
        "2",
        "--no-progress",
    )
    assert code == 0, err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["row"] for r in records] == [0, 1, 2, 3]  # the blank-text row is predicted too: rows stay aligned
    lines = tmp_path / "lines.txt"
    lines.write_text("stock fell\n\n   \n" + huge[:10_000] + "\nsports\rwon\n", encoding="utf-8")
    code, _, err = _cli(
        capsys,
        "predict",
        "--model",
        str(checkpoint),
        "--input",
        str(lines),
        "--output",
        str(tmp_path / "l.jsonl"),
        "--backend",
        "torch-fp32",
        "--max-length",
        "32",
        "--no-progress",
    )
    assert code == 0, err
    assert [json.loads(line)["row"] for line in (tmp_path / "l.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]


def test_a_hundred_thousand_distinct_labels(capsys, tmp_path) -> None:
    """Every class a single row: the data is read and split (at random, and the user is told so)."""
    from distilbench.config import ExperimentConfig
    from distilbench.experiments.compare import prepare_data
    from distilbench.runs import RunDir

    path = tmp_path / "many.csv"
    pd.DataFrame(
        {"text": [f"text {i}" for i in range(100_000)], "label": [f"class-{i}" for i in range(100_000)]}
    ).to_csv(path, index=False)
    splits, names = prepare_data(ExperimentConfig(data=str(path)), RunDir(tmp_path / "run"))
    assert len(names) == 100_000 and [len(splits[n]) for n in ("train", "val", "test")] == [72_000, 8_000, 20_000]
    err = capsys.readouterr().err
    assert "warning: the test split is a plain random split: 100000 classes (100000 with a single row)" in err
