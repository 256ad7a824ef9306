import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distilbench.core.console import DistilbenchError
from distilbench.runs import model_slug
from distilbench.training.distillation import distillation_loss, teacher_logits_for


def test_multiclass_loss_against_hand_computed_values():
    student = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> [0.75, 0.25]
    teacher = torch.tensor([[0.0, 0.0]])  # softmax -> [0.5, 0.5]
    label = torch.tensor([0])
    hard = -math.log(0.75)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert float(distillation_loss(student, teacher, label, "multiclass", alpha=1.0, temperature=1.0)) == pytest.approx(
        hard, rel=1e-6
    )
    assert float(distillation_loss(student, teacher, label, "multiclass", alpha=0.0, temperature=1.0)) == pytest.approx(
        kl, rel=1e-6
    )
    mixed = distillation_loss(student, teacher, label, "multiclass", alpha=0.3, temperature=1.0)
    assert float(mixed) == pytest.approx(0.3 * hard + 0.7 * kl, rel=1e-6)
    # label smoothing e = 0.2 on the hard loss alone: targets [0.9, 0.1]; the soft loss is unchanged
    smoothed = -(0.9 * math.log(0.75) + 0.1 * math.log(0.25))
    mixed = distillation_loss(student, teacher, label, "multiclass", alpha=0.3, temperature=1.0, smoothing=0.2)
    assert float(mixed) == pytest.approx(0.3 * smoothed + 0.7 * kl, rel=1e-6)


def test_temperature_softens_and_scales_by_t_squared():
    student = torch.tensor([[2.0 * math.log(3.0), 0.0]])  # at T=2: softmax -> [0.75, 0.25]
    teacher = torch.tensor([[0.0, 0.0]])
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    got = distillation_loss(student, teacher, torch.tensor([0]), "multiclass", alpha=0.0, temperature=2.0)
    assert float(got) == pytest.approx(4.0 * kl, rel=1e-6)


def test_multilabel_loss_against_hand_computed_values():
    student = torch.tensor([[0.0, math.log(3.0)]])  # sigmoid -> [0.5, 0.75]
    teacher = torch.tensor([[math.log(4.0), 0.0]])  # sigmoid -> [0.8, 0.5]
    labels = torch.tensor([[1.0, 0.0]])
    hard = (-math.log(0.5) - math.log(0.25)) / 2
    soft = (-(0.8 * math.log(0.5) + 0.2 * math.log(0.5)) - (0.5 * math.log(0.75) + 0.5 * math.log(0.25))) / 2
    assert float(distillation_loss(student, teacher, labels, "multilabel", 1.0, 1.0)) == pytest.approx(hard, rel=1e-6)
    assert float(distillation_loss(student, teacher, labels, "multilabel", 0.0, 1.0)) == pytest.approx(soft, rel=1e-6)


def test_soft_loss_is_smallest_when_the_student_copies_the_teacher():
    teacher = torch.tensor([[1.0, -0.5, 0.3]])
    same = distillation_loss(teacher.clone(), teacher, torch.tensor([0]), "multiclass", 0.0, 2.0)
    other = distillation_loss(torch.tensor([[-1.0, 0.5, 0.3]]), teacher, torch.tensor([0]), "multiclass", 0.0, 2.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6) and float(other) > 0.01


@pytest.mark.parametrize("alpha, temperature", [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0)])
def test_bad_settings(alpha, temperature):
    with pytest.raises(DistilbenchError):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), "multiclass", alpha, temperature)


def test_teacher_outputs_are_cached_and_reused(tmp_path, tiny_bert_dir, monkeypatch):
    from distilbench.models import registry as models
    from distilbench.models.registry import load_classifier

    model, tokenizer = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b"])
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    texts = ["one text", "another, longer text", "third"]
    cache = tmp_path / "cache" / "t.npy"
    first = teacher_logits_for(tmp_path / "teacher", texts, cache, progress=False)
    assert first.shape == (3, 2) and cache.is_file()

    def no_model(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(models, "load_trained", no_model)
    np.testing.assert_array_equal(teacher_logits_for(tmp_path / "teacher", texts, cache, progress=False), first)
    with pytest.raises(AssertionError, match="ran again"):  # other texts: the cache does not apply
        teacher_logits_for(tmp_path / "teacher", texts[:2], cache, progress=False)


def test_general_distillation_with_an_mlm_teacher_uses_all_three_terms_and_learns(tmp_path, minilm_tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    from distilbench.training.distillation import GeneralDistillationOptions, distill_general

    torch.manual_seed(0)
    teacher = BertForMaskedLM(
        BertConfig(
            vocab_size=minilm_tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    teacher.save_pretrained(tmp_path / "teacher")
    minilm_tokenizer.save_pretrained(tmp_path / "teacher")
    texts = [f"the market rose {i} points while the team won the match" for i in range(48)]
    result = distill_general(
        str(tmp_path / "teacher"),
        f"student:{tmp_path / 'teacher'}",
        texts,
        tmp_path / "out",
        GeneralDistillationOptions(epochs=4, batch_size=16, learning_rate=3e-3, max_length=24, precision="fp32"),
        progress=False,
    )
    assert result["teacher_mlm_head"] is True
    first, last = result["epochs"][0], result["epochs"][-1]
    assert all(first[k] > 0 for k in ("ce", "mlm", "cos"))
    assert last["loss"] < first["loss"]
    assert (tmp_path / "out" / "epoch-4" / "model.safetensors").is_file()
    import json

    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == "distilbert" and saved["distilbench"]["teacher_layers"] == [0, 2]


def test_general_distillation_without_mlm_head_uses_hidden_states_only(tmp_path, tiny_bert_dir, capsys):
    from distilbench.training.distillation import GeneralDistillationOptions, distill_general

    texts = [f"a sentence about topic {i}" for i in range(32)]
    result = distill_general(
        str(tiny_bert_dir),
        f"student:{tiny_bert_dir}",
        texts,
        tmp_path / "out",
        GeneralDistillationOptions(
            epochs=3, batch_size=16, learning_rate=3e-3, max_length=16, alpha_mse=1.0, precision="fp32"
        ),
        progress=False,
    )
    assert result["teacher_mlm_head"] is False
    assert result["weights"]["ce"] == 0 and result["weights"]["mlm"] == 0
    assert "hidden-state terms only" in capsys.readouterr().out
    assert result["epochs"][-1]["cos"] < result["epochs"][0]["cos"]
    assert result["epochs"][0]["mse"] > 0


def test_distill_command_end_to_end(tmp_path, tiny_bert_dir, capsys):
    import json

    from conftest import shared_file
    from distilbench.cli.commands import main

    teacher_run = tmp_path / "teacher"
    args = [
        "--data",
        str(shared_file("news-headlines.csv")),
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
    with pytest.raises(SystemExit) as code:
        main(["train", "--model", str(tiny_bert_dir), "--out", str(teacher_run), *args])
    assert code.value.code == 0
    with pytest.raises(SystemExit) as code:
        main(
            [
                "distill",
                "--teacher",
                str(teacher_run),
                "--student",
                f"student:{tiny_bert_dir}:first-1",
                "--out",
                str(tmp_path / "student"),
                "--alpha",
                "0.3",
                "--temperature",
                "3",
                *args,
            ]
        )
    assert code.value.code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "student" / "comparison.json").read_text())["rows"]
    assert "distilled from the fine-tuned" in rows[0]["method"] and "alpha 0.3" in rows[0]["method"]
    assert rows[0]["architecture"]["layers"] == 1
    assert 0 <= rows[0]["teacher_test"]["accuracy"] <= 1
    assert len(list((tmp_path / "student" / "cache").glob("*.npy"))) == 1


def test_distill_into_a_pretrained_model_by_name_with_seeds(tmp_path, tiny_bert_dir, capsys):
    """Any pretrained model (here the alias minilm-l6, not cut from the teacher) learns from a fine-tuned teacher,
    once per seed, every seed from that same teacher; an unknown name ends with one message."""
    import json

    from conftest import shared_file
    from distilbench.cli.commands import main

    teacher_run = tmp_path / "teacher"
    args = [
        "--data",
        str(shared_file("news-headlines.csv")),
        "--label-column",
        "category",
        "--max-samples",
        "120",
        "--epochs",
        "1",
        "--max-length",
        "16",
        "--no-progress",
        "--backend",
        "torch-fp32",
    ]
    with pytest.raises(SystemExit) as code:  # distill measures no speed: --no-speed is train's (and compare's)
        main(["train", "--model", str(tiny_bert_dir), "--out", str(teacher_run), "--no-speed", *args])
    assert code.value.code == 0
    with pytest.raises(SystemExit) as code:
        main(
            [
                "distill",
                "--teacher",
                str(teacher_run),
                "--student",
                "minilm-l6",
                "--seeds",
                "2",
                "--out",
                str(tmp_path / "student"),
                *args,
            ]
        )
    assert code.value.code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "mean of 2 seeds" in out and "accuracy [95% CI]" in out and "trivial baselines" in out
    saved = json.loads((tmp_path / "student" / "comparison.json").read_text())
    row = saved["rows"][0]
    assert saved["baselines"]["best"]["accuracy"] == "majority_class"  # intervals and the baseline check, as compare
    ci = row["test_ci"]["accuracy"]
    assert ci["low"] <= ci["value"] <= ci["high"] and "flag" in row["learned_nothing"]
    assert "baseline" in (tmp_path / "student" / "report.md").read_text()
    teacher = str(teacher_run / "models" / model_slug(str(tiny_bert_dir)) / "best")
    assert row["architecture"]["layers"] == 6 and [s["seed"] for s in row["seeds"]] == [42, 43]
    assert {Path(s["checkpoint"]).parent.name for s in row["seeds"]} == {"seed-42", "seed-43"}
    assert row["method"].startswith(f"distilled from the fine-tuned {teacher}") and row["teacher"] == teacher
    assert set(row["test_spread"]["accuracy"]) == {"mean", "std", "min", "max"}
    assert len(list((tmp_path / "student" / "cache").glob("*.npy"))) == 1  # the teacher's outputs, once
    with pytest.raises(SystemExit) as code:
        main(
            [
                "distill",
                "--teacher",
                str(teacher_run),
                "--student",
                "no-such-model-anywhere",
                "--out",
                str(tmp_path / "unknown"),
                *args,
            ]
        )
    assert code.value.code != 0
    err = capsys.readouterr().err
    assert "could not load model 'no-such-model-anywhere'" in err and "Traceback" not in err
