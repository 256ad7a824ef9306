"""Distillation beyond the logits: intermediate-layer losses, unlabelled texts, masked copies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.training.distillation import (
    attention_loss,
    distillation_loss,
    distillation_variant,
    hidden_state_loss,
    mapped_teacher_layers,
    masked_copies,
    teacher_logits_for,
    unlabeled_texts,
    use_eager_attention,
)


def _outputs(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
            output_attentions=True,
        )
    return out, batch["attention_mask"]


@pytest.mark.parametrize("kind", ["student", "student-bert"])
def test_intermediate_losses_are_zero_for_a_student_with_every_teacher_layer(
    tmp_path, tiny_bert_dir, minilm_tokenizer, kind
):
    from transformers import AutoModelForSequenceClassification, BertModel

    from distilbench.models.registry import build_student

    sharp = BertModel.from_pretrained(tiny_bert_dir)  # random attention at init is nearly uniform: sharpen it
    with torch.no_grad():
        for layer in sharp.encoder.layer:
            layer.attention.self.query.weight.mul_(40)
            layer.attention.self.key.weight.mul_(40)
    sharp.save_pretrained(tmp_path / "teacher")
    minilm_tokenizer.save_pretrained(tmp_path / "teacher")
    teacher_dir = str(tmp_path / "teacher")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, num_labels=2)
    texts = ["a short one", "a much longer text about markets, sport and science today"]  # padding in the batch
    use_eager_attention(teacher)
    t_out, mask = _outputs(teacher, minilm_tokenizer, texts)
    losses = {}
    for layers in ("0,1,2,3", "0,2"):
        student = build_student(teacher_dir, "multiclass", ["a", "b"], layers, kind)
        mapping = mapped_teacher_layers(student, teacher)
        assert mapping == [int(i) for i in layers.split(",")]
        use_eager_attention(student)
        s_out, _ = _outputs(student, minilm_tokenizer, texts)
        losses[layers] = (
            float(hidden_state_loss(s_out.hidden_states, t_out.hidden_states, mask, mapping)),
            float(attention_loss(s_out.attentions, t_out.attentions, mask, mapping)),
        )
    assert losses["0,1,2,3"][0] < 1e-9 and losses["0,1,2,3"][1] < 1e-9
    assert losses["0,2"][0] > 1e-6 and losses["0,2"][1] > 1e-6  # layer 2 now reads layer 0's output (1e9 x above)


def test_intermediate_losses_ignore_padding():
    hidden = (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    other = (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    other[1][0, 2] = 5.0  # only the padded position differs
    mask = torch.tensor([[1, 1, 0]])
    assert float(hidden_state_loss(hidden, other, mask, [0])) == 0.0
    attention = torch.full((1, 2, 3, 3), 1 / 3)
    changed = attention.clone()
    changed[0, :, 2] = torch.tensor([1.0, 0.0, 0.0])  # the padded query's row
    assert float(attention_loss((attention,), (changed,), mask, [0])) == 0.0
    changed[0, :, 0] = torch.tensor([1.0, 0.0, 0.0])
    assert float(attention_loss((attention,), (changed,), mask, [0])) > 0


def test_mapping_needs_a_student_cut_from_the_teacher(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    with pytest.raises(DistilbenchError, match="cut from its teacher's layers"):
        mapped_teacher_layers(teacher, teacher)  # a plain model names no teacher layers


def test_unlabelled_rows_get_no_hard_loss():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 0])
    labelled = torch.tensor([True, True, False, False])
    loss = distillation_loss(student, teacher, labels, "multiclass", 0.5, 2.0, labelled=labelled)
    other_labels = torch.tensor([0, 1, 1, 2])  # the placeholders of unlabelled rows do not count
    assert torch.allclose(
        loss, distillation_loss(student, teacher, other_labels, "multiclass", 0.5, 2.0, labelled=labelled)
    )
    soft_only = distillation_loss(student, teacher, labels, "multiclass", 0.0, 2.0)
    hard_on_two = distillation_loss(student[:2], teacher[:2], labels[:2], "multiclass", 1.0, 2.0)
    assert torch.allclose(loss, 0.5 * hard_on_two + 0.5 * soft_only)
    none = torch.zeros(4, dtype=torch.bool)
    assert torch.allclose(
        distillation_loss(student, teacher, labels, "multiclass", 0.5, 2.0, labelled=none), 0.5 * soft_only
    )


def _splits():
    return {
        "train": pd.DataFrame({"text": ["train one", "train two"]}),
        "val": pd.DataFrame({"text": ["val one"]}),
        "test": pd.DataFrame({"text": ["Test  One", "test two"]}),
    }


def test_unlabeled_texts_drop_held_out_and_training_texts(tmp_path, capsys):
    source = tmp_path / "more.csv"
    pd.DataFrame({"body": ["test one", "VAL ONE", "train one", "new text", "new  text", "another"]}).to_csv(
        source, index=False
    )
    assert unlabeled_texts(str(source), "body", _splits(), 0) == ["new text", "another"]
    out = capsys.readouterr().out
    assert "removed 2 texts that are in the validation or test split" in out
    assert "removed 1 texts of the training split and 1 repeats" in out
    leaky = tmp_path / "leaky.txt"
    leaky.write_text("test two\nval one\n")
    with pytest.raises(DistilbenchError, match="no texts are left"):
        unlabeled_texts(str(leaky), "text", _splits(), 0)


def test_masked_copies_are_seeded_and_keep_the_words_and_order():
    texts = ["stocks fall as markets fear rate rises", "team wins the cup", "one"]
    first = masked_copies(texts, "[MASK]", 2, seed=3)
    assert first == masked_copies(texts, "[MASK]", 2, seed=3)
    assert first != masked_copies(texts, "[MASK]", 2, seed=4)
    assert len(first) == 2 * len(texts)
    for i, copy in enumerate(first):
        original = texts[i % len(texts)].split()
        words = copy.split()
        assert len(words) == len(original)
        assert all(w == o or w == "[MASK]" for w, o in zip(words, original))
        assert len(original) < 2 or "[MASK]" in words
    with pytest.raises(DistilbenchError, match="mask token"):
        masked_copies(texts, None, 1, seed=0)


def test_soft_rows_keep_the_labelled_rows_and_have_no_labels(minilm_tokenizer):
    from transformers import DataCollatorWithPadding

    from distilbench.training.finetune import EncodedDataset

    labelled = EncodedDataset(minilm_tokenizer(["a b", "c"]), np.array([1, 0]), np.ones((2, 2), dtype=np.float32))
    merged = labelled.with_soft_rows(minilm_tokenizer(["x y z"]), np.zeros((1, 2), dtype=np.float32))
    assert len(merged) == 3 and merged.labelled.tolist() == [True, True, False]
    np.testing.assert_array_equal(merged.labelled_labels(), [1, 0])
    batch = DataCollatorWithPadding(minilm_tokenizer)([merged[i] for i in range(3)])
    assert batch["labelled"].tolist() == [True, True, False]
    assert batch["teacher_logits"].shape == (3, 2)


def test_the_teacher_outputs_on_unlabelled_texts_are_cached(tmp_path, tiny_bert_dir, monkeypatch):
    from distilbench.models import registry as models
    from distilbench.models.registry import load_classifier

    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b"])
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    texts = masked_copies(["one text here", "another text"], tokenizer.mask_token, 2, seed=0)
    cache = tmp_path / "augment-logits.npy"
    first = teacher_logits_for(tmp_path / "teacher", texts, cache, progress=False, what="augment texts")
    monkeypatch.setattr(models, "load_trained", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran again")))
    np.testing.assert_array_equal(teacher_logits_for(tmp_path / "teacher", texts, cache, progress=False), first)


def test_config_checks_the_new_settings():
    from distilbench.config import ExperimentConfig

    with pytest.raises(DistilbenchError, match="--distill-hidden is a loss weight"):
        ExperimentConfig(distill_hidden=-1).validate()
    with pytest.raises(DistilbenchError, match="--augment must be"):
        ExperimentConfig(augment="swap").validate()
    with pytest.raises(DistilbenchError, match="--augment-copies"):
        ExperimentConfig(augment="mask", augment_copies=0).validate()
    with pytest.raises(DistilbenchError, match="drop --no-distill"):
        ExperimentConfig(unlabeled="more.csv", distill=False).validate()


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_bert_dir):
    from conftest import shared_file
    from distilbench.cli.commands import main

    data = shared_file("news-headlines.csv")
    out = tmp_path_factory.mktemp("kd") / "teacher"
    with pytest.raises(SystemExit) as code:
        main(["train", "--model", str(tiny_bert_dir), "--out", str(out), *_common(data)])
    assert code.value.code == 0
    return data, out


def _common(data) -> list[str]:
    return [
        "--data",
        str(data),
        "--label-column",
        "category",
        "--max-samples",
        "200",
        "--epochs",
        "1",
        "--max-length",
        "24",
        "--no-progress",
        "--backend",
        "torch-fp32",
    ]


def test_distill_with_every_variant_end_to_end(tmp_path, teacher_run, tiny_bert_dir, capsys):
    from distilbench.cli.commands import main

    data, teacher = teacher_run
    frame = pd.read_csv(data).sample(60, random_state=1)
    test_texts = pd.read_csv(teacher / "data" / "test.csv")["text"].head(5).tolist()
    more = tmp_path / "more.jsonl"
    pd.DataFrame({"headline": frame["text"].tolist() + test_texts}).to_json(more, orient="records", lines=True)
    with pytest.raises(SystemExit) as code:
        main(
            [
                "distill",
                "--teacher",
                str(teacher),
                "--student",
                f"student:{tiny_bert_dir}",
                "--out",
                str(tmp_path / "student"),
                "--distill-hidden",
                "1",
                "--distill-attention",
                "1",
                "--unlabeled",
                str(more),
                "--unlabeled-column",
                "headline",
                "--augment",
                "mask",
                "--augment-copies",
                "1",
                *_common(data),
            ]
        )
    out, err = capsys.readouterr()
    assert code.value.code == 0, err
    assert "that are in the validation or test split" in out
    row = json.loads((tmp_path / "student" / "comparison.json").read_text())["rows"][0]
    assert "hidden-state MSE 1" in row["method"] and "attention-map loss 1" in row["method"]
    assert "unlabeled texts from" in row["method"] and "1 masked copy of each" in row["method"]
    settings = row["distillation"]
    train_rows = len(pd.read_csv(tmp_path / "student" / "data" / "train.csv"))
    assert settings["labelled_texts"] == train_rows
    assert train_rows + 60 - 5 <= settings["soft_only_texts"] + 5 <= train_rows + 65  # copies + new texts
    assert len(list((tmp_path / "student" / "cache").glob("*.npy"))) == 3  # train, unlabeled, augment


@pytest.mark.parametrize(
    "make, flag, message",
    [
        (None, "--unlabeled", "not found"),
        ("empty", "--unlabeled", "empty"),
        ("column", "--unlabeled-column", "body"),
    ],
)
def test_unlabeled_errors_are_one_line(tmp_path, teacher_run, tiny_bert_dir, capsys, make, flag, message):
    from distilbench.cli.commands import main

    data, teacher = teacher_run
    source = tmp_path / "more.csv"
    if make == "empty":
        source.write_text("")
    elif make == "column":
        source.write_text("text\nsome headline\n")
    extra = ["--unlabeled", str(source)] + (["--unlabeled-column", "body"] if make == "column" else [])
    with pytest.raises(SystemExit) as code:
        main(
            [
                "distill",
                "--teacher",
                str(teacher),
                "--student",
                f"student:{tiny_bert_dir}:first-1",
                "--out",
                str(tmp_path / "student"),
                *extra,
                *_common(data),
            ]
        )
    err = capsys.readouterr().err
    assert code.value.code == 2
    assert err.startswith("distilbench: error:") and len(err.strip().splitlines()) == 1
    assert message in err.lower() and "Traceback" not in err


@pytest.mark.parametrize("verb", ["distill", "compare"])
def test_the_variant_flags_reach_the_config(capsys, monkeypatch, verb):
    from distilbench.cli.commands import main

    calls = []
    monkeypatch.setattr(f"distilbench.experiments.compare.{verb}", lambda *a, **k: calls.append(a) or {})
    monkeypatch.setattr("distilbench.api.open_run", lambda path: None)  # the stand-in wrote no run to re-open
    extra = ["--teacher", "T", "--student", "student:T"] if verb == "distill" else []
    with pytest.raises(SystemExit) as code:
        main(
            [
                verb,
                *extra,
                "--data",
                "d.csv",
                "--label-column",
                "c",
                "--out",
                "o",
                "--distill-hidden",
                "2",
                "--distill-attention",
                "0.5",
                "--unlabeled",
                "more.txt",
                "--unlabeled-column",
                "body",
                "--augment",
                "mask",
                "--augment-copies",
                "3",
            ]
        )
    assert code.value.code == 0, capsys.readouterr().err
    config = calls[0][0]
    assert (
        config.distill_hidden,
        config.distill_attention,
        config.unlabeled,
        config.unlabeled_column,
        config.augment,
        config.augment_copies,
    ) == (2.0, 0.5, "more.txt", "body", "mask", 3)


def test_the_method_line_counts_masked_copies_in_words():
    from distilbench.config import ExperimentConfig

    class Rows:  # two labelled texts and two with soft targets only, as the distillation's training data
        labelled = np.array([True, True, False, False])

        def __len__(self):
            return 4

    train_data = Rows()
    one = distillation_variant(ExperimentConfig(augment="mask", augment_copies=1), train_data)
    two = distillation_variant(ExperimentConfig(augment="mask", augment_copies=2), train_data)
    assert "1 masked copy of each training text" in one and "2 masked copies of each training text" in two
    assert "2 texts with soft targets only" in one
