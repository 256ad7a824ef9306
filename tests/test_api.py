"""The Python API (distilbench.api, re-exported lazily by `import distilbench`): end to end on tiny models and
data, the same predictions as the CLI, DataFrames as data, one error type per kind of mistake, light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import distilbench as db
from distilbench.cli.commands import main as cli_main

WORDS = {
    "sport": ["match", "goal", "team", "league", "coach", "score"],
    "tech": ["chip", "software", "robot", "data", "cloud", "phone"],
    "food": ["pasta", "bread", "cheese", "recipe", "soup", "salad"],
}
# keep the runs small and fast: one epoch, short texts, the plain backend, no speed measurement
FAST = dict(
    epochs=1,
    train_batch_size=16,
    eval_batch_size=32,
    learning_rate=1e-3,
    max_length=16,
    precision="fp32",
    backend="torch-fp32",
    measure_speed=False,
    keep_checkpoints="best",
    resamples=100,
)
TEXTS = ["the team scored a late goal", "a new chip for every phone", "cheese and bread soup", "robot recipe"]


def tiny_frame(rows: int = 90, seed: int = 0) -> pd.DataFrame:
    """Short texts of three topics, each built from its topic's words."""
    rng = np.random.default_rng(seed)
    labels = [list(WORDS)[i % 3] for i in range(rows)]
    texts = [" ".join(rng.choice(WORDS[label], size=4)) for label in labels]
    return pd.DataFrame({"headline": texts, "topic": labels})


def run_cli(*argv: str) -> int:
    """`distilbench ARGV...` in this process; its exit code."""
    with pytest.raises(SystemExit) as exited:
        cli_main(list(argv))
    return exited.value.code


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, tiny_bert_dir):
    """compare of a tiny BERT and its student through the Python API, with a DataFrame as data."""
    out = tmp_path_factory.mktemp("api") / "run"
    frame = tiny_frame()
    result = db.compare(
        frame,
        models=[str(tiny_bert_dir), f"student:{tiny_bert_dir}"],
        text_column="headline",
        label_column="topic",
        out=out,
        progress=False,
        **FAST,
    )
    return result, frame, out


def test_compare_reopen_load_predict_gives_the_cli_predictions(api_run, tmp_path):
    """The issue's end-to-end test: compare two models, reopen the run, load the best checkpoint, predict;
    the labels are those `distilbench predict` writes for the same texts."""
    result, _, out = api_run
    reopened = db.open_run(out)
    assert reopened.models == result.models and len(reopened.models) == 2
    table = reopened.table
    assert list(table["model"]) == reopened.models
    assert {"accuracy", "accuracy_low", "accuracy_high", "verdict", "size_mb", "params_m"} <= set(table.columns)
    student = reopened.models[1]
    assert set(reopened.verdicts) == {student}  # the reference has no verdict against itself
    assert reopened.verdicts[student]["verdict"] == table.loc[1, "verdict"]

    best = reopened.model_dir(student)
    assert best == out / "models" / best.parent.name / "best" and (best / "config.json").is_file()
    clf = db.load(best)
    assert clf.task == "multiclass" and sorted(clf.labels) == sorted(WORDS)
    labels = clf.predict(TEXTS)
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert labels == [clf.labels[i] for i in probs.argmax(axis=1)]

    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n")
    output = tmp_path / "predictions.jsonl"
    code = run_cli(
        "predict",
        "--model",
        str(best),
        "--input",
        str(texts_file),
        "--output",
        str(output),
        "--backend",
        "torch-fp32",
        "--no-progress",
    )
    assert code == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["label"] for record in records] == labels
    for record, row in zip(records, probs):
        assert [record["probabilities"][name] for name in clf.labels] == pytest.approx(row.tolist(), abs=1e-5)


def test_a_run_directory_loads_as_its_reference_model(api_run):
    result, _, out = api_run
    clf = db.load(out)
    assert clf.path == result.model_dir(result.reference)
    assert clf.predict(TEXTS) == db.load(result.model_dir()).predict(TEXTS)
    with pytest.raises(db.ModelNotFoundError, match="has no model 'nope'"):
        result.model_dir("nope")


def test_an_exported_directory_loads_and_predicts_as_its_checkpoint(api_run, tmp_path):
    result, _, _ = api_run
    exported = db.export(result.path, tmp_path / "onnx")
    assert exported == tmp_path / "onnx" and (exported / "model.onnx").is_file()
    onnx = db.load(exported)
    assert onnx.backend == "onnx-fp32" and onnx.labels == db.load(result.model_dir()).labels
    torch_probs = db.load(result.model_dir()).predict_proba(TEXTS)
    assert np.allclose(onnx.predict_proba(TEXTS), torch_probs, atol=1e-4)


def test_multilabel_predictions_use_each_labels_threshold():
    from distilbench.runtime.predict import predicted_labels, prediction_records

    probs = np.array([[0.9, 0.4, 0.1], [0.2, 0.6, 0.05]])
    thresholds = np.array([0.5, 0.3, 0.01])
    assert predicted_labels("multilabel", ["a", "b", "c"], probs, thresholds) == [["a", "b", "c"], ["b", "c"]]
    assert predicted_labels("multiclass", ["a", "b", "c"], probs, thresholds) == ["a", "b"]
    records = prediction_records("multilabel", ["a", "b", "c"], probs, thresholds)
    assert [r["labels"] for r in records] == [["a", "b", "c"], ["b", "c"]]
    assert records[1]["probabilities"] == {"a": 0.2, "b": 0.6, "c": 0.05}


def test_a_dataframe_run_records_and_keeps_its_rows(api_run):
    """config.yaml names the rows saved in the run directory, so the run is reproducible from its folder."""
    result, frame, out = api_run
    rows = out / "data" / db.api.DATAFRAME_FILE
    assert result.config.data == str(rows)
    pd.testing.assert_frame_equal(pd.read_parquet(rows), frame)
    saved = (out / "config.yaml").read_text()
    assert f"data: {rows}" in saved
    assert json.loads((out / "data" / "summary.json").read_text())["rows"] == {"train": 64, "val": 8, "test": 18}


def test_train_on_a_dataframe_then_resume_the_finished_run(tmp_path, tiny_bert_dir):
    out = tmp_path / "run"
    frame = tiny_frame(60, seed=1)
    first = db.train(
        frame, model=str(tiny_bert_dir), text_column="headline", label_column="topic", out=out, progress=False, **FAST
    )
    assert first.models == [str(tiny_bert_dir)] and first.verdicts == {}
    again = db.train(
        frame,
        model=str(tiny_bert_dir),
        text_column="headline",
        label_column="topic",
        out=out,
        resume=True,
        progress=False,
        **FAST,
    )
    pd.testing.assert_frame_equal(again.table, first.table)
    assert again.config.data == first.config.data == str(out / "data" / db.api.DATAFRAME_FILE)


def test_report_and_evaluate_through_the_api(api_run, tmp_path):
    result, frame, out = api_run
    html = result.report()
    assert html == out / "report.html" and html.stat().st_size > 0
    # the API functions stay functions after a run imported the packages that implement them (benchmarking, reporting)
    assert db.report(out) == (html, out / "report.md")
    assert callable(db.bench) and db.bench.__module__ == "distilbench.api"
    metrics = db.evaluate(out, frame.head(30), text_column="headline", label_column="topic", progress=False)
    assert metrics["samples"] == 30 and metrics["data"] == "a DataFrame (30 rows)"
    assert 0 <= metrics["accuracy"] <= 1


def test_a_misspelt_column_in_a_dataframe_fails_before_anything_is_created(tmp_path, tiny_bert_dir):
    out = tmp_path / "run"
    with pytest.raises(db.DataError, match="label column 'topc' not found in the DataFrame"):
        db.compare(
            tiny_frame(), models=[str(tiny_bert_dir)], text_column="headline", label_column="topc", out=out, **FAST
        )
    assert not out.exists()


def test_distill_and_tune_check_a_dataframe_before_anything_is_created(tmp_path, api_run):
    teacher = str(api_run[0].model_dir())
    wrong = tiny_frame(30).rename(columns={"topic": "category"})
    columns = dict(text_column="headline", label_column="topic")
    missing = "label column 'topic' not found in the DataFrame"
    with pytest.raises(db.DataError, match=missing):
        db.distill(wrong, teacher=teacher, student=f"student:{teacher}", out=tmp_path / "d", **columns, **FAST)
    with pytest.raises(db.DataError, match=missing):
        db.tune(wrong, model=f"student:{teacher}", teacher=teacher, out=tmp_path / "t", **columns, **FAST)
    assert not (tmp_path / "d").exists() and not (tmp_path / "t").exists()


def test_each_kind_of_mistake_has_its_error_type(tmp_path, tiny_bert_dir, api_run):
    with pytest.raises(db.ConfigError, match="unknown setting 'epoch'; did you mean epochs"):
        db.compare("x.csv", out=tmp_path / "a", epoch=3)
    with pytest.raises(db.ConfigError, match="--learning-rate must be positive"):
        db.compare("x.csv", out=tmp_path / "a", learning_rate=0)
    with pytest.raises(db.ConfigError, match="train fine-tunes one model"):
        db.train("x.csv", model=None, config={"models": ["a", "b"]}, out=tmp_path / "a")
    with pytest.raises(db.ConfigError, match="pass one of them"):
        db.compare("x.csv", out=tmp_path / "a", resume=True, overwrite=True)
    with pytest.raises(db.RunDirError, match="nothing to resume"):
        db.compare("x.csv", out=tmp_path, resume=True)
    with pytest.raises(db.RunDirError, match="not a distilbench run directory"):
        db.open_run(tmp_path)
    (tmp_path / "config.yaml").write_text("task: multiclass\n")
    with pytest.raises(db.RunDirError, match="has not finished"):
        db.open_run(tmp_path)
    with pytest.raises(db.ModelNotFoundError, match="not a saved model directory|not a model"):
        db.load(tmp_path)
    with pytest.raises(db.ModelNotFoundError, match="holds no classifier fine-tuned by distilbench"):
        db.evaluate(tiny_bert_dir, tmp_path / "missing.csv")
    with pytest.raises(db.DataError, match="missing.csv"):
        db.evaluate(api_run[0].model_dir(), tmp_path / "missing.csv")
    with pytest.raises(db.DataError, match="list of texts"):
        db.load(api_run[0].path).predict("one text")
    for kind in (db.ConfigError, db.DataError, db.ModelNotFoundError, db.RunDirError):
        assert issubclass(kind, db.DistilbenchError)


def test_the_cli_turns_an_api_error_into_one_line_and_exit_2(tmp_path, capsys):
    code = run_cli("report", "--run", str(tmp_path))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distilbench: error: ") and "comparison.json" in err[0]


def test_import_distilbench_does_not_import_torch():
    code = (
        "import sys, distilbench; assert distilbench.__version__; "
        "assert 'distilbench.api' not in sys.modules; "
        "distilbench.open_run; assert 'distilbench.api' in sys.modules; "
        "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_command_help_stays_light():
    """`distilbench --help` (and a verb's) imports the package, not the API's heavy dependencies."""
    code = (
        "import sys\n"
        "from distilbench.cli.commands import main\n"
        "for argv in (['--help'], ['compare', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_public_names_are_exported_and_typed():
    assert set(db.api.__all__) <= set(db.__all__)
    for name in db.__all__:
        assert getattr(db, name) is not None
    assert (Path(db.__file__).parent / "py.typed").is_file()
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["distilbench"]  # the wheel ships it
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        db.nothing  # noqa: B018


OLD_RUN = Path(__file__).parent / "fixtures" / "run-0.1.0"  # written by the code before the package move


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the run directory that distilbench 0.1.0 wrote before the package move (commit ef04931; see
    fixtures/make_tiny_run_model.py), so that writing its report leaves the fixture as it is."""
    import shutil

    return Path(shutil.copytree(OLD_RUN, tmp_path / "run-0.1.0", symlinks=True))


def test_a_run_from_before_the_package_move_opens(old_run):
    result = db.open_run(old_run)
    assert result.models == ["tiny-bert", "student:tiny-bert"] and result.reference == "tiny-bert"
    assert list(result.table["model"]) == result.models and "accuracy_low" in result.table
    assert result.verdicts["student:tiny-bert"]["verdict"] == result.table.loc[1, "verdict"] == "inconclusive"
    assert result.config.models == result.models and result.config.keep_checkpoints == "best"
    clf = db.load(result.model_dir("student:tiny-bert"))
    assert sorted(clf.labels) == sorted(WORDS)
    assert len(clf.predict(TEXTS)) == len(TEXTS) and set(clf.predict(TEXTS)) <= set(WORDS)
    assert db.load(old_run).path == old_run / "models" / "tiny-bert" / "best"


def test_a_run_with_settings_this_version_does_not_know_still_opens(old_run):
    config = old_run / "config.yaml"
    config.write_text(config.read_text() + "a_setting_of_another_version: 3\n")
    result = db.open_run(old_run)
    assert result.config.models == ["tiny-bert", "student:tiny-bert"] and result.config.max_length == 16
    assert result.model_dir("student-tiny-bert") == result.model_dir("student:tiny-bert")


def test_report_and_evaluate_commands_work_on_a_run_from_before_the_package_move(old_run, tmp_path):
    assert run_cli("report", "--run", str(old_run)) == 0
    assert (old_run / "report.html").stat().st_size > 0 and (old_run / "report.md").is_file()
    out = tmp_path / "metrics.json"
    best = old_run / "models" / "tiny-bert" / "best"
    test_split = old_run / "data" / "test.csv"
    assert (
        run_cli("evaluate", "--model", str(best), "--data", str(test_split), "--output", str(out), "--no-progress") == 0
    )
    saved = json.loads((old_run / "results" / "tiny-bert" / "test_stats.json").read_text())
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(saved["accuracy"])


def test_serve_and_bench_pass_their_options_to_the_one_implementation(monkeypatch, api_run):
    """The guard of backend auto, the server's limits and a DataFrame's texts reach serve and run_bench as
    they expect them; an unknown option is refused by name."""
    import inspect

    import distilbench.benchmarking.bench as bench_module
    import distilbench.serving.app as app_module

    calls = {}

    def fake_serve(model, **kwargs):
        calls["serve"] = (model, kwargs)

    fake_serve.__signature__ = inspect.signature(app_module.serve)  # the options the real one takes
    monkeypatch.setattr(app_module, "serve", fake_serve)

    def fake_bench(specs, backends, **kwargs):
        return {"specs": specs, **kwargs}

    fake_bench.__signature__ = inspect.signature(bench_module.run_bench)
    monkeypatch.setattr(bench_module, "run_bench", fake_bench)
    result, frame, out = api_run
    db.serve(out, port=0, max_batch_size=8, batching=False, min_agreement=0.9, threads=2)
    model, kwargs = calls["serve"]
    assert model == str(result.model_dir()) and kwargs["port"] == 0 and kwargs["threads"] == 2
    assert kwargs["limits"].max_batch_size == 8 and kwargs["limits"].batching is False
    assert kwargs["choice"].min_agreement == 0.9
    with pytest.raises(db.ConfigError, match="unknown option.*max_batch"):
        db.serve(out, max_batch=8)

    measured = db.bench([str(out)], data=frame, text_column="headline", repeats=1, recalibrate=True)
    assert measured["specs"] == [str(out)]
    assert measured["source"].texts == frame["headline"].tolist() and measured["source"].data is None
    assert measured["options"].repeats == 1 and measured["choice"].recalibrate
    with pytest.raises(db.DataError, match="no column 'text'"):
        db.bench([str(out)], data=frame)
    with pytest.raises(db.ConfigError, match="unknown option.*sample"):
        db.bench([str(out)], sample=5)


def test_predict_passes_its_options_to_the_engine_it_names(monkeypatch, api_run, tmp_path):
    """The inference options, the chunking options (local) and the pool's (Ray) reach each engine as their
    dataclasses; an option no engine takes is refused by name."""
    import inspect

    import distilbench.runtime.predict as predict_module
    import distilbench.runtime.ray_predict as ray_module
    from distilbench.runtime.options import ChoiceSettings, InferenceOptions

    calls = {}

    def stand_in(engine, real):
        def fake(model_dir, source, output, **kwargs):
            calls[engine] = (model_dir, source, output, kwargs)
            return 3

        fake.__signature__ = inspect.signature(real)  # the options the real one takes
        return fake

    monkeypatch.setattr(predict_module, "predict", stand_in("local", predict_module.predict))
    monkeypatch.setattr(ray_module, "predict_on_ray", stand_in("ray", ray_module.predict_on_ray))
    result, _, out = api_run
    source = str(tmp_path / "texts.csv")
    done = db.predict(out, source, "p.jsonl", backend="torch-fp32", batch_size=4, workers=2, min_agreement=0.9)
    assert done == {"rows": 3, "output": "p.jsonl", "engine": "local"}
    assert calls["local"] == (
        str(result.model_dir()),
        source,
        "p.jsonl",
        {
            "inference": InferenceOptions("torch-fp32", 4, choice=ChoiceSettings(min_agreement=0.9)),
            "chunks": predict_module.ChunkOptions(workers=2),
        },
    )
    db.predict(out, source, "d", engine="ray", device="cpu", actors=2, cpus_per_actor=0.5, output_format="jsonl")
    assert calls["ray"][3] == {
        "inference": InferenceOptions(device="cpu"),
        "pool": ray_module.RayPoolOptions(actors=2, cpus_per_actor=0.5),
        "output_format": "jsonl",
    }
    with pytest.raises(db.ConfigError, match="unknown option.*chunk_size"):
        db.predict(out, source, chunk_size=8)
    with pytest.raises(db.ConfigError, match="unknown option.*pool_size"):
        db.predict(out, source, "d", engine="ray", pool_size=8)


def test_the_one_reader_reads_a_dataframe_as_it_reads_a_file():
    from distilbench.data.readers import frame_source, read_source, read_texts

    frame = pd.DataFrame([["a b", 1, "x"], ["c", 2, "y"]], columns=["text", 0, "text"])
    read = read_source(frame)
    assert list(read.columns) == ["text", "0", "text.1"] and read.attrs["duplicate_columns"] == {"text": 2}
    assert read is not frame and list(frame.columns) == ["text", 0, "text"]  # the caller's frame is untouched
    with frame_source("runs/x/data/dataframe.parquet", frame[["text"]].iloc[:, :1]):
        assert read_source("runs/x/data/dataframe.parquet")["text"].tolist() == ["a b", "c"]
    with pytest.raises(db.DataError, match="not found"):
        read_source("runs/x/data/dataframe.parquet")  # registered only while the run reads it
    assert read_texts(pd.DataFrame({"body": ["  two   words ", None, ""]}), "body", None, 0) == ["two words"]
    with pytest.raises(db.DataError, match="text column 'text' not found in the DataFrame"):
        read_texts(pd.DataFrame({"body": ["x"]}), "text", None, 0)
    with pytest.raises(db.DataError, match="no rows"):
        read_source(pd.DataFrame({"text": []}))
