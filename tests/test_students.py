"""Students of every encoder family `student:` supports, on tiny random teachers: the copied layers and
everything outside the layer stack equal the teacher's, a student with all layers computes the teacher's
function, and the students run through distillation, bench, predict, serve and ONNX export."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

from distilbench.core.console import DistilbenchError
from distilbench.models.registry import LAYER_STACKS, build_student, load_classifier

TEXTS = [
    "stock market fell sharply today",
    "the home team won the match",
    "ok",
    "a longer text about new phones, batteries and screens, so that the batch is padded",
]


def tiny_config(family: str, layers: int = 4, vocab_size: int = 30522):
    """A 32-wide random config of `family` (pad id 0: the teachers use the MiniLM tokenizer)."""
    from transformers import (
        AlbertConfig,
        BertConfig,
        DebertaConfig,
        DebertaV2Config,
        DistilBertConfig,
        ElectraConfig,
        MPNetConfig,
        RobertaConfig,
        XLMRobertaConfig,
    )

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=0,
    )
    relative = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=64)
    return {
        "bert": lambda: BertConfig(**common),
        "distilbert": lambda: DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=layers,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=130,
            pad_token_id=0,
        ),
        "roberta": lambda: RobertaConfig(**common),
        "xlm-roberta": lambda: XLMRobertaConfig(**common),
        "electra": lambda: ElectraConfig(**common, embedding_size=16),  # narrower embeddings: their projection
        "mpnet": lambda: MPNetConfig(**common),  # 32 relative-position buckets (the only count transformers runs)
        "deberta": lambda: DebertaConfig(**common, **relative),
        # DeBERTa-v3's layout: relative embeddings with their LayerNorm, shared keys, no token types
        "deberta-v2": lambda: DebertaV2Config(
            **common, **relative, position_buckets=16, norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0
        ),
        "albert": lambda: AlbertConfig(**common, embedding_size=16),
    }[family]()


FAMILIES = sorted(LAYER_STACKS)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, minilm_tokenizer):
    """family -> directory of a tiny random 4-layer encoder of that family, saved with the MiniLM tokenizer."""
    made = {}

    def make(family: str, layers: int = 4):
        if (family, layers) not in made:
            torch.manual_seed(0)
            model = AutoModel.from_config(tiny_config(family, layers))
            with torch.no_grad():  # non-trivial LayerNorms and biases, so a missed copy shows
                for name, parameter in model.named_parameters():
                    if "LayerNorm" in name or name.endswith("bias"):
                        parameter.normal_(0, 0.3)
            path = tmp_path_factory.mktemp(f"teacher-{family}-{layers}")
            model.save_pretrained(path)
            minilm_tokenizer.save_pretrained(path)
            made[family, layers] = path
        return made[family, layers]

    return make


def padded_batch(tokenizer, with_token_types: bool = False) -> dict:
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else [])
    return {k: batch[k] for k in names}


def stack_of(model, family: str):
    module = model
    for part in LAYER_STACKS[family].split("."):
        module = getattr(module, part)
    return module


@pytest.mark.parametrize("family", FAMILIES)
def test_student_copies_the_chosen_layers_and_everything_outside_the_stack(family, teachers):
    teacher = AutoModel.from_pretrained(teachers(family)).eval()
    kind = "student-bert" if family == "bert" else "student"  # student:<BERT> is a DistilBERT (test_models.py)
    student = build_student(str(teachers(family)), "multiclass", ["a", "b", "c"], "0,3", kind=kind)
    assert student.config.model_type == teacher.config.model_type
    assert student.config.num_hidden_layers == 2 and student.config.num_labels == 3
    assert student.config.distilbench["teacher_layers"] == [0, 3]
    base = getattr(student, student.base_model_prefix)
    for student_index, teacher_index in enumerate([0, 3]):
        got = dict(stack_of(base, family)[student_index].named_parameters())
        want = dict(stack_of(teacher, family)[teacher_index].named_parameters())
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], msg=name, rtol=0, atol=0)
    outside = {
        k: v
        for k, v in teacher.state_dict().items()
        if not k.startswith(LAYER_STACKS[family] + ".") and k in base.state_dict()
    }
    assert any("embeddings" in k for k in outside)
    for name, want in outside.items():
        torch.testing.assert_close(base.state_dict()[name], want, msg=name, rtol=0, atol=0)


def test_shared_relative_position_tables_are_copied(teachers):
    """MPNet's relative attention bias and DeBERTa-v2's relative embeddings and their LayerNorm live in the
    encoder, outside the layers, and are shared by all of them."""
    for family, names in (
        ("mpnet", ["encoder.relative_attention_bias.weight"]),
        ("deberta-v2", ["encoder.rel_embeddings.weight", "encoder.LayerNorm.weight", "encoder.LayerNorm.bias"]),
    ):
        teacher = AutoModel.from_pretrained(teachers(family))
        student = build_student(str(teachers(family)), "multiclass", ["a", "b"], "last-1")
        state = getattr(student, student.base_model_prefix).state_dict()
        for name in names:
            torch.testing.assert_close(state[name], teacher.state_dict()[name], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_student_with_every_layer_computes_the_teachers_function(family, teachers, minilm_tokenizer):
    teacher = AutoModel.from_pretrained(teachers(family)).eval()
    kind = "student-bert" if family == "bert" else "student"
    student = build_student(str(teachers(family)), "multiclass", ["a", "b"], "0,1,2,3", kind=kind).eval()
    base = getattr(student, student.base_model_prefix)
    batch = padded_batch(minilm_tokenizer)
    with torch.no_grad():
        want = teacher(**batch).last_hidden_state
        got = base(**batch).last_hidden_state
        reordered = build_student(str(teachers(family)), "multiclass", ["a", "b"], "1,0,2,3", kind=kind).eval()
        other = getattr(reordered, reordered.base_model_prefix)(**batch).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(other, want, atol=1e-3)  # the order of the layers matters: the copy is what counts


@pytest.mark.parametrize("family", ["mpnet", "roberta", "deberta-v2"])
def test_scratch_is_the_same_architecture_with_random_weights(family, teachers):
    copied = build_student(str(teachers(family)), "multiclass", ["a", "b"])
    scratch = build_student(str(teachers(family)), "multiclass", ["a", "b"], kind="scratch")
    assert type(scratch) is type(copied) and scratch.config.num_hidden_layers == 2
    word = "word_embeddings.weight"
    got = next(v for k, v in scratch.state_dict().items() if k.endswith(word))
    want = next(v for k, v in copied.state_dict().items() if k.endswith(word))
    assert not torch.allclose(got, want)


def test_distilbert_rule_takes_six_of_twelve_layers(teachers):
    student = build_student(str(teachers("mpnet", 12)), "multiclass", ["a", "b"], "distilbert")
    assert student.config.num_hidden_layers == 6
    assert student.config.distilbench["teacher_layers"] == [0, 2, 4, 7, 9, 11]
    every_other = build_student(str(teachers("mpnet", 12)), "multiclass", ["a", "b"])
    assert every_other.config.distilbench["teacher_layers"] == [0, 2, 4, 6, 8, 10]


def test_an_encoder_that_cannot_be_cut_gets_one_clear_error(teachers):
    """ALBERT shares one set of layer weights across its depth: there are no layers to choose."""
    with pytest.raises(DistilbenchError) as error:
        build_student(str(teachers("albert")), "multiclass", ["a", "b"])
    message = str(error.value)
    assert "'albert'" in message and "\n" not in message
    for family in ("BERT", "RoBERTa", "XLM-RoBERTa", "ELECTRA", "MPNet", "DeBERTa-v2"):
        assert family in message


def test_student_tokenizers_give_what_the_student_takes(teachers):
    """Only a DistilBERT student (of a BERT teacher) drops the token types."""
    for spec, token_types in (
        (f"student:{teachers('bert')}", False),
        (f"student-bert:{teachers('bert')}", True),
        (f"student:{teachers('mpnet')}", False),
        (f"student:{teachers('electra')}", True),
    ):
        model, tokenizer = load_classifier(spec, "multiclass", ["a", "b"])
        assert ("token_type_ids" in tokenizer("hello")) is token_types, spec
        model(**tokenizer(TEXTS, padding=True, return_tensors="pt"))  # what the tokenizer gives, the model takes


@pytest.mark.parametrize("family", ["mpnet", "deberta-v2"])
def test_thesis_head_on_a_student_round_trips(family, teachers, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = load_classifier(f"student:{teachers(family)}", "multiclass", ["a", "b", "c"], head="thesis")
    assert model.config.distilbench["teacher_layers"] == [0, 2]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model.eval()(**inputs).logits)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "electra", "mpnet", "deberta", "deberta-v2"])
def test_mlm_heads_are_found_for_general_distillation(family, tmp_path):
    """A masked-LM teacher's head, copied, turns hidden states into the teacher's own logits."""
    from transformers import AutoModelForMaskedLM

    from distilbench.training.distillation import mlm_head

    torch.manual_seed(0)
    mlm = AutoModelForMaskedLM.from_config(tiny_config(family, 2, vocab_size=200)).eval()
    head = mlm_head(mlm)
    assert head is not None and len(head) >= 1
    ids = torch.randint(5, 200, (2, 6))
    with torch.no_grad():
        out = mlm(input_ids=ids, output_hidden_states=True)
        torch.testing.assert_close(head(out.hidden_states[-1]), out.logits)
    if family == "deberta-v2":  # the newer head takes the word embeddings too: not a function of hidden states
        config = tiny_config(family, 2, vocab_size=200)
        config.legacy = False
        assert mlm_head(AutoModelForMaskedLM.from_config(config)) is None


def test_general_distillation_of_an_mpnet_student(tmp_path, minilm_tokenizer):
    """distill-general with an MPNet teacher that has a trained MLM head: all three terms, and the saved
    student is an MPNet with the teacher's layers recorded, loadable as a classifier."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    from distilbench.training.distillation import GeneralDistillationOptions, distill_general

    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    AutoModelForMaskedLM.from_config(tiny_config("mpnet")).save_pretrained(teacher_dir)
    minilm_tokenizer.save_pretrained(teacher_dir)
    texts = [f"{t} number {i}" for i in range(12) for t in TEXTS[:3]]
    result = distill_general(
        str(teacher_dir),
        f"student:{teacher_dir}:first-2",
        texts,
        tmp_path / "out",
        GeneralDistillationOptions(epochs=1, batch_size=8, max_length=16, precision="fp32", device="cpu"),
        progress=False,
    )
    assert result["teacher_mlm_head"] and all(result["epochs"][0][k] > 0 for k in ("ce", "mlm", "cos"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "mpnet" and config["distilbench"]["teacher_layers"] == [0, 1]
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", num_labels=2)
    assert classifier.config.num_hidden_layers == 2


def test_task_distillation_bench_predict_serve_and_export_of_an_mpnet_student(tmp_path, teachers, shared_data, capsys):
    """compare fine-tunes a tiny MPNet, distils its MPNet student, and the student's checkpoint runs in
    predict, serve, bench (every backend, with FLOPs) and export (ONNX equal to PyTorch)."""
    from distilbench.benchmarking.bench import BenchOptions, BenchTexts, run_bench
    from distilbench.cli.commands import main
    from distilbench.config import ExperimentConfig
    from distilbench.experiments.compare import compare
    from distilbench.runtime.export import export_model
    from distilbench.serving.app import Classifier

    teacher = str(teachers("mpnet"))
    config = ExperimentConfig(
        task="multiclass",
        data=str(shared_data("news-headlines.csv")),
        label_column="category",
        max_samples=160,
        epochs=1,
        train_batch_size=16,
        eval_batch_size=32,
        max_length=24,
        precision="fp32",
        backend="torch-fp32",
        out=str(tmp_path / "run"),
        models=[teacher, f"student:{teacher}"],
        measure_speed=False,
    ).validate()
    rows = compare(config, progress=False)
    assert "2-layer mpnet copy of" in rows[1]["method"] and "distilled from the fine-tuned" in rows[1]["method"]
    assert rows[1]["architecture"]["model_type"] == "mpnet" and rows[1]["architecture"]["layers"] == 2
    best = rows[1]["checkpoint"]

    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    with pytest.raises(SystemExit) as code:
        main(
            [
                "predict",
                "--model",
                best,
                "--input",
                str(source),
                "--output",
                str(tmp_path / "p.jsonl"),
                "--backend",
                "torch-fp32",
                "--no-progress",
            ]
        )
    assert code.value.code == 0, capsys.readouterr().err
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    served = Classifier(best, backend="torch-fp32").predict(TEXTS)
    assert [r["label"] for r in served] == [r["label"] for r in predicted] and len(predicted) == 4

    report = run_bench(
        [best],
        ["torch-fp32", "torch-bf16", "onnx-fp32"],
        source=BenchTexts(texts=TEXTS),
        options=BenchOptions(samples=8, repeats=1, warmup=0, latency_samples=1, memory=False, metric=False),
        choice=None,
        progress=False,
        show=False,
    )
    for row in report["results"]:
        assert row["flops_per_sample"] > 0 and row["samples_per_s"]["median"] > 0
        if row["backend"] == "torch-bf16" and row.get("notes"):  # on a CPU with the fused path: it says why not
            assert "plain bf16 model ran" in row["notes"][0]

    info = export_model(best, tmp_path / "exported")
    assert info["check"]["passed"] and info["check"]["max_abs_logit_diff"] < 1e-4


@pytest.mark.parametrize("family", ["mpnet", "roberta", "deberta-v2", "electra"])
def test_onnx_export_of_a_student_equals_pytorch(family, teachers, tmp_path):
    from distilbench.runtime.export import export_model

    model, tokenizer = load_classifier(f"student:{teachers(family)}", "multiclass", ["a", "b", "c"])
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # O(1) logits, so that the tolerance means something
        last.weight.mul_(40.0)
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    info = export_model(tmp_path / "ckpt", tmp_path / "exported")
    assert info["check"]["passed"] and info["check"]["max_abs_logit_diff"] < 1e-4
    assert info["check"]["argmax_agreement"] == 1.0


def test_a_graph_that_does_not_match_its_model_is_refused(teachers, tmp_path):
    from distilbench.models.inputs import model_input_names
    from distilbench.runtime.export import check_graph, export_onnx

    model, _ = load_classifier(f"student:{teachers('mpnet')}", "multiclass", ["a", "b"])
    model.eval()
    names = model_input_names(model)
    graph = export_onnx(model, tmp_path / "model.onnx", names)
    assert check_graph(model, graph, names) < 1e-4
    with torch.no_grad():
        model.classifier.out_proj.bias.add_(1.0)  # the model changes, the graph does not
    with pytest.raises(DistilbenchError, match="does not match PyTorch"):
        check_graph(model, graph, names)
