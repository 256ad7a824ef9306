"""Per-class, per-label and per-length results with intervals and verdicts (slices.py), wired into the verdicts
of a run, its comparison.json and its report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from distilbench.evaluation.calibration import fit_calibration
from distilbench.evaluation.metrics import compute_metrics
from distilbench.evaluation.slices import SliceSettings, length_buckets, slice_results
from distilbench.evaluation.stats import paired_difference
from distilbench.evaluation.verdicts import VerdictOptions, assess, verdict_lines
from distilbench.runs import RunDir, model_slug

OLD_RUN = Path(__file__).parent / "fixtures" / "run-0.1.0"  # written by distilbench 0.1.0: no slices, no calibration
CLASSES = ["food", "sport", "tech"]
WORDS = {"food": "bread pasta soup", "sport": "goal match team", "tech": "phone robot data"}


def wrong_rows(labels: np.ndarray, error_by_class: dict[int, float], rng) -> np.ndarray:
    """Exactly the given share of each class's rows, chosen at random, marked wrong."""
    wrong = np.zeros(labels.size, dtype=bool)
    for c, share in error_by_class.items():
        rows = np.flatnonzero(labels == c)
        wrong[rng.choice(rows, int(round(share * rows.size)), replace=False)] = True
    return wrong


def model_probs(labels: np.ndarray, wrong: np.ndarray, confidence: float) -> np.ndarray:
    """Probabilities whose argmax is the true class except on the wrong rows (the next class there)."""
    predicted = np.where(wrong, (labels + 1) % len(CLASSES), labels)
    probs = np.full((labels.size, len(CLASSES)), (1 - confidence) / (len(CLASSES) - 1))
    probs[np.arange(labels.size), predicted] = confidence
    return probs


def student_and_reference(n_per_class: int = 300, seed: int = 0):
    """A reference 92 % right on every class, and a student 99 % right on two classes and 85 % on 'tech':
    better overall, far worse on one class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    reference = model_probs(labels, wrong_rows(labels, {0: 0.08, 1: 0.08, 2: 0.08}, rng), 0.99)
    student = model_probs(labels, wrong_rows(labels, {0: 0.01, 1: 0.01, 2: 0.15}, rng), 0.9)
    texts = [" ".join([WORDS[CLASSES[c]]] * int(k)) for c, k in zip(labels, rng.integers(1, 9, labels.size))]
    return labels, reference, student, texts


# --------------------------------------------------------------------------- the slices themselves


def test_length_buckets_are_quartiles_named_by_their_lengths():
    buckets = length_buckets(["x" * k for k in (1, 2, 3, 4, 5, 6, 7, 8)])
    assert [b["name"] for b in buckets] == ["1–2 chars", "3–4 chars", "5–6 chars", "7–8 chars"]
    assert [b["rows"].tolist() for b in buckets] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    tied = length_buckets(["x"] * 6 + ["xx", "xxx"])  # ties at a cut stay together: fewer, unequal buckets
    assert [(b["name"], b["rows"].size) for b in tied] == [("1 char", 6), ("2–3 chars", 2)]


def test_a_student_within_the_margin_overall_is_caught_on_the_class_it_loses():
    labels, reference, student, texts = student_and_reference()
    overall = paired_difference("multiclass", labels, reference, student, CLASSES, resamples=300, seed=1)
    assert overall["low"] > -1  # within the 1-point margin overall: better, even
    settings = SliceSettings("ref", margin=1.0, resamples=300, seed=1)
    results, info = slice_results(
        "multiclass", labels, {"ref": [reference], "student": [student]}, CLASSES, settings, texts
    )
    found = {(e["kind"], e["name"], e["metric"]): e for e in results["student"]}
    tech = found[("class", "tech", "recall")]
    assert tech["rows"] == 300
    assert tech["value"] == pytest.approx(0.85) and tech["low"] < 0.85 < tech["high"]
    assert tech["vs_reference"]["difference_points"] == pytest.approx(-7.0)
    assert tech["vs_reference"]["verdict"] == "worse" and tech["vs_reference"]["high"] < -1
    assert found[("class", "food", "recall")]["vs_reference"]["verdict"] == "within"
    tech_f1 = f1_score(labels == 2, student.argmax(axis=1) == 2)
    assert found[("class", "tech", "f1")]["value"] == pytest.approx(tech_f1, abs=1e-4)
    assert found[("class", "tech", "f1")]["rows"] == labels.size  # F1 counts other classes' rows predicted as it
    assert all(e["vs_reference"] is None for e in results["ref"])  # the reference is not compared with itself
    outside = [(o["model"], o["name"], o["metric"]) for o in info["outside_margin"]]
    assert ("student", "tech", "recall") in outside and all(model == "student" for model, _, _ in outside)
    message = next(o["message"] for o in info["outside_margin"] if o["metric"] == "recall")
    assert message.startswith("student: class tech recall -7.0 points [") and "outside the 1-point margin" in message
    lengths = [e for e in results["student"] if e["kind"] == "length"]
    assert len(lengths) == len(info["length_buckets"]) >= 3
    assert sum(b["rows"] for b in info["length_buckets"]) == labels.size
    for entry, bucket in zip(lengths, length_buckets(texts)):
        rows = bucket["rows"]
        assert entry["metric"] == "accuracy" and entry["name"] == bucket["name"]
        assert entry["value"] == pytest.approx((student[rows].argmax(axis=1) == labels[rows]).mean(), abs=1e-4)


def test_multilabel_slices_are_each_labels_f1_and_roc_auc_and_the_primary_metric_by_length():
    rng = np.random.default_rng(4)
    names = ["toxic", "insult", "threat"]
    labels = (rng.random((500, 3)) < [0.3, 0.2, 0.1]).astype(int)
    probs = np.clip(0.55 * labels + rng.random((500, 3)) * 0.5, 0, 1)
    texts = ["y" * k for k in rng.integers(5, 200, 500)]
    settings = SliceSettings("m", resamples=200)
    results, info = slice_results("multilabel", labels, {"m": [probs]}, names, settings, texts)
    found = {(e["kind"], e["name"], e["metric"]): e for e in results["m"]}
    for j, name in enumerate(names):
        assert found[("label", name, "f1")]["value"] == pytest.approx(
            f1_score(labels[:, j], probs[:, j] >= 0.5), abs=1e-4
        )
        assert found[("label", name, "roc_auc")]["value"] == pytest.approx(
            roc_auc_score(labels[:, j], probs[:, j]), abs=1e-4
        )
    for bucket in length_buckets(texts):
        rows = bucket["rows"]
        expected = compute_metrics("multilabel", labels[rows], probs[rows], names)["hamming_score"]
        assert found[("length", bucket["name"], "hamming_score")]["value"] == pytest.approx(expected, abs=1e-4)
    assert info["outside_margin"] == [] and info["classes_left_out"] == []


def test_seeds_are_averaged_and_texts_are_optional():
    labels, reference, student, _ = student_and_reference(60)
    other = model_probs(labels, np.zeros(labels.size, dtype=bool), 0.8)  # a seed that is always right
    settings = SliceSettings("ref", resamples=100)
    results, info = slice_results("multiclass", labels, {"ref": [reference], "s": [student, other]}, CLASSES, settings)
    assert info["length_buckets"] == [] and not any(e["kind"] == "length" for e in results["s"])
    tech = next(e for e in results["s"] if e["name"] == "tech" and e["metric"] == "recall")
    assert tech["value"] == pytest.approx((0.85 + 1.0) / 2, abs=0.01)
    assert tech["vs_reference"]["verdict"] in ("within", "worse", "inconclusive")


def test_a_class_with_too_few_test_rows_is_left_out_and_said_so():
    labels = np.array([0] * 20 + [1] * 20 + [2])
    probs = np.eye(3)[labels]
    results, info = slice_results("multiclass", labels, {"m": [probs]}, CLASSES, SliceSettings("m", resamples=50))
    assert info["classes_left_out"] == ["tech"]
    assert {e["name"] for e in results["m"]} == {"food", "sport"}


# --------------------------------------------------------------------------- a run, its verdicts and its report


@pytest.fixture(scope="module")
def sliced_run(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    """The 0.1.0 fixture run with synthetic test predictions (the student loses 'tech'), assessed by this version,
    with a calibration fitted on synthetic validation predictions, and its report written."""
    from distilbench.reporting.report import write_report

    run = Path(shutil.copytree(OLD_RUN, tmp_path_factory.mktemp("sliced") / "run"))
    comparison = json.loads((run / "comparison.json").read_text())
    rows = comparison["rows"]
    reference_name, student_name = rows[0]["model"], rows[1]["model"]
    labels, reference, student, texts = student_and_reference()
    for name, probs in ((reference_name, reference), (student_name, student)):
        frame = pd.DataFrame({"text": texts, "true": [CLASSES[c] for c in labels]})
        frame["predicted"] = [CLASSES[c] for c in probs.argmax(axis=1)]
        for j, label in enumerate(CLASSES):
            frame[f"prob_{label}"] = probs[:, j]
        frame.to_csv(run / "results" / model_slug(name) / "test_predictions.csv", index=False)
    val_labels, val_reference, val_student, _ = student_and_reference(100, seed=5)
    rows[0]["calibration"] = fit_calibration("multiclass", val_labels, val_reference)
    rows[1]["calibration"] = fit_calibration("multiclass", val_labels, val_student)
    test = pd.DataFrame({"text": texts, "label": [CLASSES[c] for c in labels]})
    options = VerdictOptions("multiclass", reference_name, margin=1.0, resamples=300, seed=3)
    assessment = assess(rows, options, RunDir(run), {"train": test, "test": test}, CLASSES)
    comparison.update(assessment, rows=rows)
    (run / "comparison.json").write_text(json.dumps(comparison))
    write_report(run)
    return run, assessment, rows


def test_assess_adds_slices_to_every_row_and_the_slices_outside_the_margin_to_the_run(sliced_run):
    run, assessment, rows = sliced_run
    reference, student = rows
    assert student["vs_reference"]["verdict"] == "within"
    assert {e["kind"] for e in student["slices"]} == {"class", "length"}
    assert all(e["vs_reference"] is None for e in reference["slices"])
    # the test ECE, raw and after the calibration fitted on validation: the over-confident reference gains most
    assert reference["calibration_error"]["bins"] == 15
    assert reference["calibration_error"]["ece_calibrated"] < reference["calibration_error"]["ece"] - 0.03
    outside = assessment["slices"]["outside_margin"]
    assert any(o["model"] == student["model"] and o["name"] == "tech" and o["metric"] == "recall" for o in outside)
    assert len(json.dumps(student["slices"])) < 6_000  # rounded, compact: comparison.json stays small
    assert all(len(str(e["value"]).split(".")[-1]) <= 4 for e in student["slices"])
    lines, warnings = verdict_lines(rows, assessment)
    line = next(x for x in lines if "but worse than the 1-point margin" in x)
    assert (
        line.startswith(f"  {student['model']}: within the margin overall") and "class tech recall -7.0 points" in line
    )
    assert not any("tech" in w for w in warnings)  # the slices are in the verdict lines, not repeated as warnings


def test_the_report_shows_slices_calibration_and_reliability_diagrams(sliced_run):
    run, assessment, rows = sliced_run
    page = (run / "report.html").read_text(encoding="utf-8")
    markdown = (run / "report.md").read_text(encoding="utf-8")
    assert "<h2>Where the models lose</h2>" in page and "<h3>Per class</h3>" in page
    assert "<h3>Per text length (characters)</h3>" in page
    assert "Outside the margin on a slice: student:tiny-bert: class tech recall -7.0 points" in page
    for bucket in assessment["slices"]["length_buckets"]:
        assert f"<td>{bucket['name']}</td>" in page
    assert "<h2>Calibration</h2>" in page and "<th>ECE (calibrated)</th>" in page
    for row in rows:
        assert (run / "plots" / f"reliability-{model_slug(row['model'])}.png").is_file()
        assert f"plots/reliability-{model_slug(row['model'])}.png" in markdown
    calibration_table = markdown.split("## Calibration", 1)[1].split("![", 1)[0]
    reference_line = next(x for x in calibration_table.splitlines() if x.startswith(f"| {rows[0]['model']} |"))
    raw, calibrated = (float(x) for x in reference_line.split("|")[2:4])
    assert calibrated < raw  # the over-confident reference (0.99 for 92 % right) is calibrated by its temperature
    assert rows[0]["calibration"]["temperature"][0] > 1
