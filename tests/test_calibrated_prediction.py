"""The calibration saved with a checkpoint is applied where its probabilities leave distilbench (load, predict,
serve): the probabilities change, no label does, and multilabel thresholds move with them."""

from __future__ import annotations

import json

import numpy as np

import distilbench as db


def checkpoint(tiny_bert_dir, out, task: str, labels: list[str], distilbench_block: dict):
    import torch

    from distilbench.models.registry import load_classifier

    torch.manual_seed(0)
    model, tokenizer = load_classifier(str(tiny_bert_dir), task, labels)
    model.config.update({"distilbench": {**(model.config.to_dict().get("distilbench") or {}), **distilbench_block}})
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


TEXTS = ["stocks rally after the rate cut", "the team wins the cup", "new phone chip", "a quiet day", "vaccine news"]


def test_a_saved_temperature_changes_probabilities_not_labels(tiny_bert_dir, tmp_path):
    labels = ["business", "sport", "tech"]
    plain = checkpoint(tiny_bert_dir, tmp_path / "plain", "multiclass", labels, {})
    calibration = {"method": "temperature", "task": "multiclass", "temperature": [0.25]}
    sharpened = checkpoint(tiny_bert_dir, tmp_path / "calibrated", "multiclass", labels, {"calibration": calibration})
    raw, calibrated = db.load(plain), db.load(sharpened)
    raw_probs, calibrated_probs = raw.predict_proba(TEXTS), calibrated.predict_proba(TEXTS)
    assert not np.allclose(raw_probs, calibrated_probs)  # applied: a temperature below 1 sharpens
    assert calibrated_probs.max(axis=1).mean() > raw_probs.max(axis=1).mean()
    expected = np.exp(np.log(raw_probs) / 0.25)
    np.testing.assert_allclose(calibrated_probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    assert raw.predict(TEXTS) == calibrated.predict(TEXTS)
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    # the backend load() runs (auto may choose a bf16 one, whose logits differ in the 4th decimal)
    db.predict(sharpened, source, output=tmp_path / "out.jsonl", backend="torch-fp32", progress=False)
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in written], calibrated_probs, atol=1e-5)


def test_multilabel_thresholds_move_with_the_calibration(tiny_bert_dir, tmp_path):
    labels = ["toxic", "insult"]
    thresholds = {"toxic": 0.45, "insult": 0.55}
    plain = checkpoint(tiny_bert_dir, tmp_path / "plain", "multilabel", labels, {"thresholds": thresholds})
    calibration = {"method": "temperature", "task": "multilabel", "temperature": [0.1, 3.0]}
    block = {"thresholds": thresholds, "calibration": calibration}
    calibrated = checkpoint(tiny_bert_dir, tmp_path / "calibrated", "multilabel", labels, block)
    assert db.load(plain).predict(TEXTS) == db.load(calibrated).predict(TEXTS)
    assert not np.allclose(db.load(plain).predict_proba(TEXTS), db.load(calibrated).predict_proba(TEXTS))
