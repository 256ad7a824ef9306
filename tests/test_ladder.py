"""The ladder's small rungs, tfidf and static:<teacher>, through compare, predict, evaluate, bench and load like any
model: trained on real headlines (a few hundred rows), saved with a checked manifest, run without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import distilbench as db
from distilbench.core.console import DistilbenchError
from distilbench.runtime.light import load_text_model

FAST = dict(
    epochs=1,
    train_batch_size=16,
    eval_batch_size=32,
    max_length=32,
    precision="fp32",
    backend="torch-fp32",
    keep_checkpoints="best",
    resamples=100,
    val_size=0.2,
    test_size=0.2,
)


@pytest.fixture(scope="module")
def headlines(shared_data) -> pd.DataFrame:
    frame = pd.read_csv(shared_data("news-headlines.csv"))
    return frame.sample(n=700, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory, headlines, tiny_bert_dir):
    """compare of tfidf and a static model distilled from a tiny BERT, with the speed rounds."""
    out = tmp_path_factory.mktemp("ladder") / "run"
    result = db.compare(
        headlines,
        models=["tfidf", f"static:{tiny_bert_dir}", f"cascade:tfidf+static:{tiny_bert_dir}"],
        label_column="category",
        out=out,
        progress=False,
        **FAST,
    )
    return result, out


def test_ladder_models_get_rows_verdicts_and_speed(ladder_run):
    result, out = ladder_run
    comparison = json.loads((out / "comparison.json").read_text())
    tfidf, static, cascade = comparison["rows"]
    assert tfidf["model"] == "tfidf" and tfidf["backend"] == "tfidf"
    assert static["architecture"]["model_type"] == "model2vec"
    # tfidf on 420 real headlines is far above the majority class (about 0.35)
    assert tfidf["test"]["accuracy"] > 0.6
    assert tfidf["test_ci"]["accuracy"]["low"] < tfidf["test"]["accuracy"] < tfidf["test_ci"]["accuracy"]["high"]
    assert static["vs_reference"]["verdict"]
    for row in (tfidf, static):
        assert row["throughput"]["median"] > 0 and row["size_mb"] > 0
        assert row["calibration"]["method"] == "temperature"
    assert (out / "report.html").is_file()
    # the cascade is a row like the others, built from the run's own models and tested on the same rows
    assert cascade["backend"] == "cascade" and cascade["vs_reference"]["verdict"]
    assert cascade["throughput"]["median"] > 0 and cascade["cascade"]["stages"][0]["curve"]
    assert cascade["size_mb"] == pytest.approx(tfidf["size_mb"] + static["size_mb"])


def test_predict_load_and_evaluate_agree_on_a_tfidf_model(ladder_run, headlines, tmp_path):
    _, out = ladder_run
    model_dir = out / "models" / "tfidf" / "best"
    texts = headlines["text"].tolist()[:50]
    classifier = db.load(model_dir)
    labels = classifier.predict(texts)
    probs = classifier.predict_proba(texts)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # calibration changes probabilities, never the predicted label
    raw = load_text_model(model_dir).raw_probabilities(texts)
    assert [classifier.labels[i] for i in raw.argmax(axis=1)] == labels
    source = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    written = tmp_path / "out.jsonl"
    db.predict(model_dir, source, output=written, progress=False)
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r["label"] for r in records] == labels
    stats = db.evaluate(model_dir, headlines.tail(100), label_column="category", progress=False)
    assert 0.5 < stats["accuracy"] <= 1 and stats["backend"] == "tfidf"


def test_a_light_model_predicts_without_torch(ladder_run):
    _, out = ladder_run
    code = (
        "import sys, distilbench as db\n"
        "print(db.load(sys.argv[1]).predict(['stocks fall as the central bank raises rates']))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n"
    )
    bests = sorted((out / "models").glob("*/best"))
    assert len(bests) == 3  # tfidf, static and the cascade of the two
    for best in bests:
        run = subprocess.run([sys.executable, "-c", code, str(best)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]


def test_a_damaged_light_model_is_refused(ladder_run, tmp_path):
    import shutil

    _, out = ladder_run
    copy = tmp_path / "tfidf"
    shutil.copytree((out / "models" / "tfidf" / "best").resolve(), copy)
    weights = copy / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DistilbenchError, match="weights.npz"):
        load_text_model(copy)


def test_bench_measures_a_run_with_light_models(ladder_run, tmp_path):
    _, out = ladder_run
    report = db.bench([str(out)], samples=64, repeats=1, latency_samples=2, memory=False, progress=False)
    backends = sorted(row["backend"] for row in report["results"])
    assert backends == ["cascade", "static", "tfidf"]
    assert all(row["samples_per_s"]["median"] > 0 and row["test"]["accuracy"] > 0 for row in report["results"])


def test_multilabel_tfidf_tunes_thresholds_per_label(shared_data, tmp_path):
    frame = pd.read_csv(shared_data("toxic-comments.csv")).sample(n=900, random_state=0)
    labels = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    out = tmp_path / "run"
    db.compare(
        frame,
        task="multilabel",
        models=["tfidf"],
        label_columns=labels,
        out=out,
        progress=False,
        measure_speed=False,
        **{k: v for k, v in FAST.items() if k != "backend"},
    )
    manifest = json.loads((out / "models" / "tfidf" / "best" / "distilbench_model.json").read_text())
    assert len(manifest["thresholds"]) == 6 and len(manifest["calibration"]["temperature"]) == 6
    model = load_text_model(out / "models" / "tfidf" / "best")
    probs = model.probabilities(frame["text"].tolist()[:20])
    assert probs.shape == (20, 6) and ((probs >= 0) & (probs <= 1)).all()
    row = json.loads((out / "comparison.json").read_text())["rows"][0]
    assert row["test"]["hamming_score"] > 0.8  # predicting no label scores about 0.86 here; a test it can fail


def test_a_cascade_needs_its_models_listed_before_it(headlines, tmp_path):
    with pytest.raises(DistilbenchError, match="list minilm-l6 in --models before the cascade"):
        db.compare(headlines, models=["tfidf", "cascade:tfidf+minilm-l6"], label_column="category", out=tmp_path)


def test_a_static_spec_without_teacher_is_an_error():
    from distilbench.models.ladder import parse_ladder_spec

    assert parse_ladder_spec("cascade:tfidf+minilm-l6").stages == ("tfidf", "minilm-l6")
    with pytest.raises(DistilbenchError, match="two models or more"):
        parse_ladder_spec("cascade:tfidf")

    assert parse_ladder_spec("tfidf").kind == "tfidf"
    assert parse_ladder_spec("static:minilm-l6").teacher == "minilm-l6"
    assert parse_ladder_spec("minilm-l6") is None
    with pytest.raises(DistilbenchError, match="static:minilm-l6"):
        parse_ladder_spec("static:")


def test_tfidf_weights_give_sklearns_probabilities(tmp_path):
    """The saved arrays reproduce scikit-learn's own predict_proba (multiclass, and a binary model)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from distilbench.runtime.light import load_tfidf
    from distilbench.training.ladder import linear_weights, save_tfidf

    texts = ["cheap flights today", "stocks rally", "team wins cup", "flights delayed", "cup final", "stocks fall"]
    for labels in ([0, 1, 2, 0, 2, 1], [0, 1, 1, 0, 1, 1]):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
        classifier = LogisticRegression(C=10).fit(vectorizer.transform(texts), labels)
        n = len(set(labels))
        path = tmp_path / f"m{n}"
        save_tfidf(path, [vectorizer], *linear_weights(classifier, "multiclass", n))
        model = load_tfidf(path, {"kind": "tfidf", "task": "multiclass", "label_names": [str(i) for i in range(n)]})
        expected = classifier.predict_proba(vectorizer.transform(texts + ["cup stocks"]))
        assert np.allclose(model.raw_probabilities(texts + ["cup stocks"]), expected, atol=1e-5)


def test_serve_answers_with_a_light_model_and_a_cascade(ladder_run, tmp_path):
    from fastapi.testclient import TestClient

    from distilbench.serving.app import create_app

    _, out = ladder_run
    tfidf = out / "models" / "tfidf" / "best"
    texts = ["stocks fall as the central bank raises rates", "new vaccine trial shows promise"]
    with TestClient(create_app(tfidf)) as client:
        answer = client.post("/predict", json={"texts": texts})
        assert answer.status_code == 200, answer.text
        assert [r["label"] for r in answer.json()["predictions"]] == db.load(tfidf).predict(texts)
        assert client.get("/metadata").json()["architecture"]["model_type"] == "tfidf"
    static = next(p for p in (out / "models").glob("static-*/best"))
    cascade = tmp_path / "cascade"
    db.cascade(str(tfidf), str(static), out=cascade, measure_speed=False)
    with TestClient(create_app(cascade)) as client:
        answer = client.post("/predict", json={"texts": texts})
        assert answer.status_code == 200, answer.text
        counts = client.get("/metadata").json()["stats"]["stage_counts"]
        assert sum(counts) == len(texts)  # the rows served, the warm-up text not counted


def test_export_copies_a_cascade_with_its_stages_into_one_movable_directory(ladder_run, tmp_path, headlines):
    import shutil

    _, out = ladder_run
    cascade = out / "models" / next(p.name for p in (out / "models").iterdir() if p.name.startswith("cascade"))
    exported = db.export(cascade / "best", tmp_path / "bundle")
    moved = tmp_path / "moved"
    shutil.move(str(exported), moved)  # relative stage paths: the directory works wherever it lies
    texts = headlines["text"].tolist()[:30]
    assert db.load(moved).predict(texts) == db.load(cascade / "best").predict(texts)
    manifest = json.loads((moved / "distilbench_model.json").read_text())
    assert [stage["model"] for stage in manifest["stages"]] == ["stage-1", "stage-2"]
    with pytest.raises(DistilbenchError, match="nothing to quantize"):
        db.export(out / "models" / "tfidf" / "best", tmp_path / "q", quantize="int8")
