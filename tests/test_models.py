from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from distilbench.core.console import DistilbenchError
from distilbench.models.registry import (
    build_student,
    count_parameters,
    describe,
    load_classifier,
    packaged_minilm_path,
    resolve_model_path,
)


def test_minilm_alias_points_at_the_packaged_weights():
    path = resolve_model_path("minilm-l6")
    assert path == packaged_minilm_path()
    assert (Path(path) / "model.safetensors").is_file()


def test_student_takes_every_other_layer_and_keeps_hidden_size(tiny_bert_dir):
    student = build_student(str(tiny_bert_dir), "multiclass", ["a", "b", "c"])
    assert student.config.model_type == "distilbert"
    assert student.config.n_layers == 2
    assert student.config.dim == 32
    assert student.config.distilbench["teacher_layers"] == [0, 2]
    assert student.config.num_labels == 3
    assert student.config.problem_type == "single_label_classification"


def test_student_embeddings_equal_the_teachers(tiny_bert_dir, minilm_tokenizer):
    teacher = AutoModel.from_pretrained(tiny_bert_dir).eval()
    student = build_student(str(tiny_bert_dir), "multiclass", ["a", "b"]).eval()
    ids = minilm_tokenizer(
        ["a short sentence", "another one, a bit longer than that"], padding=True, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        expected = teacher.embeddings(input_ids=ids)  # token type 0 everywhere, as in classification
        got = student.distilbert.embeddings(ids)
    torch.testing.assert_close(got, expected)
    assert not hasattr(student.distilbert.embeddings, "token_type_embeddings")


@pytest.mark.parametrize("student_index, teacher_index", [(0, 0), (1, 2)])
def test_copied_layers_compute_the_same_function(tiny_bert_dir, student_index, teacher_index):
    teacher = AutoModel.from_pretrained(tiny_bert_dir).eval()
    student = build_student(str(tiny_bert_dir), "multiclass", ["a", "b"]).eval()
    torch.manual_seed(1)
    hidden = torch.randn(2, 7, 32)
    keep = torch.ones(2, 7)
    keep[1, 5:] = 0
    additive = (1.0 - keep[:, None, None, :]) * torch.finfo(torch.float32).min  # the same mask for both
    with torch.no_grad():
        expected = teacher.encoder.layer[teacher_index](hidden, attention_mask=additive)
        got = student.distilbert.transformer.layer[student_index](hidden, attention_mask=additive)
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = got[0] if isinstance(got, tuple) else got
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_student_differs_from_a_random_model_of_the_same_shape(tiny_bert_dir):
    """Guards the test above: a layer that was not copied does not match."""
    teacher = AutoModel.from_pretrained(tiny_bert_dir).eval()
    student = build_student(str(tiny_bert_dir), "multiclass", ["a", "b"]).eval()
    hidden = torch.randn(1, 5, 32)
    with torch.no_grad():
        other = teacher.encoder.layer[1](hidden)
        got = student.distilbert.transformer.layer[1](hidden)
    other = other[0] if isinstance(other, tuple) else other
    got = got[0] if isinstance(got, tuple) else got
    assert not torch.allclose(got, other, atol=1e-3)


def test_student_of_a_non_bert_teacher_keeps_the_teachers_architecture(tiny_distilbert_dir):
    """Only BERT teachers give DistilBERT students; others are cut in their own architecture (test_students.py)."""
    student = build_student(str(tiny_distilbert_dir), "multiclass", ["a", "b"])
    assert student.config.model_type == "distilbert" and student.config.n_layers == 1
    assert student.config.distilbench["teacher_layers"] == [0]


def test_classifier_heads_carry_labels_and_problem_type(tiny_bert_dir, tiny_distilbert_dir):
    model, tokenizer = load_classifier(str(tiny_bert_dir), "multilabel", ["x", "y", "z"])
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == {0: "x", 1: "y", 2: "z"}
    student, student_tokenizer = load_classifier(f"student:{tiny_bert_dir}", "multiclass", ["a", "b"])
    assert "token_type_ids" not in student_tokenizer("hello")
    model, _ = load_classifier(str(tiny_distilbert_dir), "multiclass", ["a", "b"])
    assert model.config.model_type == "distilbert"


def test_parameter_counts_add_up(tiny_bert_dir):
    model, _ = load_classifier(str(tiny_bert_dir), "multiclass", ["a", "b"])
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embeddings"] == sum(p.numel() for p in model.bert.embeddings.parameters())
    assert counts["head"] == 32 * 2 + 2
    assert counts["encoder"] > 0


@pytest.mark.parametrize(
    "name, message",
    [
        ("no-such-org/no-such-model-xyz", "Hugging Face Hub"),
        ("./missing/model/dir", "not found"),
        ("student:", "needs a teacher"),
    ],
)
def test_unknown_models_fail_with_a_clear_message(name, message):
    with pytest.raises(DistilbenchError, match=message):
        load_classifier(name, "multiclass", ["a", "b"])


@pytest.mark.parametrize(
    "name, meant",
    [
        ("minlm-l6", "did you mean minilm-l6?"),
        ("student:minlm-l6", "did you mean minilm-l6?"),  # the teacher of a student spec
        ("studnet:minilm-l6", "did you mean student:minilm-l6?"),
        ("mpnet_base", "did you mean mpnet-base?"),
        ("MiniLM-L6", "did you mean minilm-l6?"),
        ("bert-base-uncase", "did you mean bert-base-uncased, distilbert-base-uncased or roberta-base?"),
    ],
)
def test_a_misspelt_alias_names_the_closest_known_ones(monkeypatch, name, meant):
    from distilbench.models.registry import closest_model_names

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DistilbenchError) as error:
        load_classifier(name, "multiclass", ["a", "b"])
    assert meant in str(error.value) and "known aliases" not in str(error.value)
    with pytest.raises(DistilbenchError) as error:  # a name like none of them: the whole list
        load_classifier("no-such-org/no-such-model-xyz", "multiclass", ["a", "b"])
    assert "known aliases: minilm-l6 (offline), mpnet-base" in str(error.value)
    assert closest_model_names("roberta-base") == []  # a known hub model that did not load: no other one meant


def test_a_run_directory_given_as_a_checkpoint_names_the_checkpoints_inside(tmp_path):
    from distilbench.models.registry import read_task_labels

    run = tmp_path / "run"
    for slug in ("minilm-l6", "student-minilm-l6"):
        (run / "models" / slug / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("task: multiclass\n")
    with pytest.raises(DistilbenchError) as error:
        read_task_labels(run)
    assert str(error.value) == (
        f"{run} is a run directory, not a checkpoint; pass the best checkpoint of one of its models: "
        f"{run}/models/minilm-l6/best, {run}/models/student-minilm-l6/best"
    )
    with pytest.raises(DistilbenchError, match=f"is a model's folder in a run directory, not a checkpoint; pass {run}"):
        read_task_labels(run / "models" / "minilm-l6")
    with pytest.raises(DistilbenchError, match="not a saved model directory"):
        read_task_labels(tmp_path)


@pytest.mark.parametrize("spec", ["bert", "student"])
def test_thesis_head_round_trips_and_opens_in_pipeline(tmp_path, tiny_bert_dir, spec):
    from transformers import AutoModelForSequenceClassification, pipeline

    name = str(tiny_bert_dir) if spec == "bert" else f"student:{tiny_bert_dir}"
    model, tokenizer = load_classifier(name, "multiclass", ["a", "b", "c"], head="thesis")
    head = model.head
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert head[0].out_features == 50 and head[2].p == 0.2 and head[3].out_features == 3
    teacher_like = AutoModel.from_pretrained(tiny_bert_dir)
    torch.testing.assert_close(
        model.encoder.embeddings.word_embeddings.weight, teacher_like.embeddings.word_embeddings.weight
    )
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = tokenizer(["a test sentence"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model.eval()(**inputs).logits)
    classifier = pipeline("text-classification", model=str(tmp_path), trust_remote_code=True, top_k=None)
    scores = classifier(["a test sentence"])[0]
    with torch.no_grad():
        probs = torch.softmax(model(**inputs).logits, dim=-1)[0]
    by_label = {s["label"]: s["score"] for s in scores}
    for i, label in enumerate(["a", "b", "c"]):
        assert by_label[label] == pytest.approx(float(probs[i]), abs=1e-5)


@pytest.mark.parametrize("spec", ["bert", "student"])
def test_mean_head_pools_over_real_tokens_and_opens_in_pipeline(tmp_path, tiny_bert_dir, spec):
    from transformers import AutoModelForSequenceClassification, pipeline

    name = str(tiny_bert_dir) if spec == "bert" else f"student:{tiny_bert_dir}"
    model, tokenizer = load_classifier(name, "multilabel", ["a", "b"], head="mean")
    assert model.config.pooling == "mean" and [type(m).__name__ for m in model.head] == ["Dropout", "Linear"]
    model.eval()
    texts = ["a test sentence that is longer than the other", "short"]
    padded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        batch_logits = model(**padded).logits
        alone = model(**tokenizer(texts[1:], return_tensors="pt")).logits
        states = model.encoder(**tokenizer(texts[1:], return_tensors="pt")).last_hidden_state
    # padding does not change a text's logits: the mean runs over its real tokens only
    torch.testing.assert_close(batch_logits[1:], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone, model.head(states.mean(1)), atol=1e-5, rtol=1e-4)
    assert describe(model.config)["head"] == "mean"
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**padded).logits, batch_logits)
    classifier = pipeline(
        "text-classification", model=str(tmp_path), trust_remote_code=True, top_k=None, function_to_apply="sigmoid"
    )
    by_label = {s["label"]: s["score"] for s in classifier(texts[:1])[0]}
    probs = torch.sigmoid(batch_logits[0])
    assert by_label == pytest.approx({"a": float(probs[0]), "b": float(probs[1])}, abs=1e-5)


@pytest.mark.parametrize(
    "strategy, n_layers, expected",
    [
        ("every-other", 6, [0, 2, 4]),
        ("every-other", 12, [0, 2, 4, 6, 8, 10]),
        ("distilbert", 12, [0, 2, 4, 7, 9, 11]),
        ("first-3", 6, [0, 1, 2]),
        ("last-2", 6, [4, 5]),
        ("0,3,5", 6, [0, 3, 5]),
    ],
)
def test_layer_strategies(strategy, n_layers, expected):
    from distilbench.models.registry import student_layers

    assert student_layers(strategy, n_layers) == expected


@pytest.mark.parametrize("strategy, n_layers", [("first-7", 6), ("0,9", 6), ("distilbert", 6), ("1,1", 6)])
def test_layer_strategies_that_do_not_fit(strategy, n_layers):
    from distilbench.models.registry import student_layers

    with pytest.raises(DistilbenchError):
        student_layers(strategy, n_layers)


def test_student_specs_parse():
    from distilbench.models.registry import parse_student_spec

    assert parse_student_spec("minilm-l6") is None
    assert parse_student_spec("hf-org/model") is None
    spec = parse_student_spec("student:minilm-l6")
    assert (spec.kind, spec.teacher, spec.strategy) == ("student", "minilm-l6", "every-other")
    spec = parse_student_spec("student-bert:/tmp/a:b/teacher:first-2")
    assert (spec.kind, spec.teacher, spec.strategy) == ("student-bert", "/tmp/a:b/teacher", "first-2")
    assert parse_student_spec("scratch:bert-base-uncased:distilbert").strategy == "distilbert"


def test_same_architecture_student_copies_chosen_layers(tiny_bert_dir):
    teacher = AutoModel.from_pretrained(tiny_bert_dir).eval()
    student = build_student(str(tiny_bert_dir), "multiclass", ["a", "b"], "last-2", kind="student-bert").eval()
    assert student.config.model_type == "bert" and student.config.num_hidden_layers == 2
    for i, t in enumerate([2, 3]):
        for (name, got), (_, want) in zip(
            student.bert.encoder.layer[i].named_parameters(), teacher.encoder.layer[t].named_parameters()
        ):
            torch.testing.assert_close(got, want, msg=name)
    torch.testing.assert_close(student.bert.pooler.dense.weight, teacher.pooler.dense.weight)


def test_scratch_student_has_the_shape_but_not_the_weights(tiny_bert_dir):
    copied = build_student(str(tiny_bert_dir), "multiclass", ["a", "b"])
    scratch = build_student(str(tiny_bert_dir), "multiclass", ["a", "b"], kind="scratch")
    assert scratch.config.n_layers == copied.config.n_layers and scratch.config.dim == copied.config.dim
    assert not torch.allclose(
        scratch.distilbert.embeddings.word_embeddings.weight, copied.distilbert.embeddings.word_embeddings.weight
    )


def _with_pooling(source, target, modes: dict) -> str:
    """A copy of a model directory laid out as sentence-transformers saves it, with the given pooling modes."""
    import json
    import shutil

    shutil.copytree(source, target)
    (target / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    return str(target)


def test_head_auto_follows_the_pooling_a_checkpoint_was_pretrained_with_the_default_does_not(tmp_path, tiny_bert_dir):
    from distilbench.models.registry import pretrained_pooling, resolve_head

    mean = _with_pooling(
        tiny_bert_dir, tmp_path / "mean", {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    )
    cls = _with_pooling(
        tiny_bert_dir, tmp_path / "cls", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    )
    assert pretrained_pooling(str(tiny_bert_dir)) is None  # a plain transformers checkpoint
    assert (pretrained_pooling(mean), pretrained_pooling(cls)) == ("mean", "cls")
    assert pretrained_pooling(f"student:{mean}:first-1") == "mean"  # a student answers for its teacher
    assert pretrained_pooling("minilm-l6") == "mean"  # the packaged all-MiniLM-L6-v2
    assert [resolve_head(s, "auto") for s in (mean, cls, str(tiny_bert_dir), f"student:{mean}")] == [
        "mean",
        "standard",
        "standard",
        "mean",
    ]
    assert resolve_head(mean, "standard") == "standard"  # an explicit head wins
    assert resolve_head(mean) == "standard"  # the default: the architecture's own head, whatever the pretraining
    model, _ = load_classifier(mean, "multiclass", ["a", "b"], head="auto")
    assert model.config.pooling == "mean"
    model, _ = load_classifier(mean, "multiclass", ["a", "b"])  # opens in transformers.pipeline as it is
    assert type(model).__name__ == "BertForSequenceClassification"
    model, _ = load_classifier(cls, "multiclass", ["a", "b"])
    assert type(model).__name__ == "BertForSequenceClassification"
    # a saved student (e.g. distill-general's output) names its teacher: it answers for it too
    student, tokenizer = load_classifier(f"student:{mean}", "multiclass", ["a", "b"], head="standard")
    student.save_pretrained(tmp_path / "saved-student")
    assert pretrained_pooling(str(tmp_path / "saved-student")) == "mean"


def test_own_heads_return_hidden_states_and_attentions_when_asked(tiny_bert_dir):
    """Distillation's intermediate losses read them, as from the architectures' own heads."""
    for head in ("mean", "thesis"):
        model, tokenizer = load_classifier(f"student:{tiny_bert_dir}", "multiclass", ["a", "b"], head=head)
        for module in model.modules():  # attention maps come from the eager kernel only
            if getattr(module, "config", None) is not None:
                module.config._attn_implementation = "eager"
        inputs = tokenizer(["a short text", "a longer text here"], padding=True, return_tensors="pt")
        out = model.eval()(**inputs, output_hidden_states=True, output_attentions=True)
        layers = model.encoder.config.num_hidden_layers
        assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
        assert model(**inputs).hidden_states is None
