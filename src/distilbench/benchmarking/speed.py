"""Speed and size measurement: the protocol behind `distilbench bench` and the speed columns of `compare`.

Protocol: every (model, backend) pair is warmed up, then measured in rounds; within a round the pairs
run one after another, so slow drift of the machine (heat, other processes) hits all of them alike.
Reported: median with min and max over rounds, latency percentiles at batch 1, the machine's own
measured matrix-product peak for MFU, and where the numbers were taken (CPU, threads, versions).

torch is imported only for what needs it (checkpoints, hub names, arch:NAME): an exported bundle or a tfidf,
static or cascade model of those is measured, memory probe included, without torch or transformers.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError
from distilbench.models.ladder import MANIFEST
from distilbench.runtime.bundle import BundleConfig, is_exported_model

log = logging.getLogger(__name__)
ARCHITECTURES = ("bert-base-uncased", "distilbert-base-uncased", "bert-large-uncased")


def dir_size_mb(directory: str | Path, pattern: str = "*.safetensors") -> float:
    """Size of the weight files in a checkpoint directory, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in Path(directory).glob(pattern)) / 1e6


# Encoders whose forward pass does exactly the matrix products flops_per_sample counts (checked against torch's
# FLOP counter in tests/test_flops.py). MPNet's relative-position bias is a table look-up, no product; DeBERTa's
# disentangled attention adds products over relative positions that the formula does not count: no FLOPs there.
FLOP_FORMULA_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "mpnet")


def _encoder_config(config):
    """The encoder's own config (the thesis head keeps it as a dict; a bundle's, read as JSON without
    transformers)."""
    encoder = getattr(config, "encoder", None)
    if isinstance(encoder, dict) and encoder:
        if isinstance(config, BundleConfig):
            return BundleConfig(encoder)
        from transformers import AutoConfig

        return AutoConfig.for_model(**encoder)
    return config


def encoder_shape(config) -> dict:
    """Layers, hidden and intermediate sizes of a BERT-family config (BERT, DistilBERT, thesis head)."""
    config = _encoder_config(config)
    return {
        "layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers"),
        "hidden": getattr(config, "hidden_size", None) or getattr(config, "dim"),
        "intermediate": getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim"),
    }


def flops_per_sample(config, tokens: float, first_token_only: bool = False) -> float | None:
    """Forward FLOPs of the encoder for one text of `tokens` tokens (matrix products only); None for an
    encoder outside FLOP_FORMULA_TYPES, whose products the formula would miscount.

    Per layer and token: Q, K, V and output projections 4·2H², feed-forward 2·2·H·I, and attention
    scores and weighted sum 2·2·S·H; ELECTRA with embeddings narrower than H adds their projection 2·E·H.
    Embedding look-ups and the small head are left out.
    `first_token_only`: the last layer produces the first token alone (the fused torch-bf16 backend
    for heads that read only it): there it needs K and V for every token, and the rest for one.
    """
    encoder = _encoder_config(config)
    if getattr(encoder, "model_type", None) not in FLOP_FORMULA_TYPES:
        return None
    shape = encoder_shape(encoder)
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    embedding = getattr(encoder, "embedding_size", h) if encoder.model_type == "electra" else h
    projection = 2 * embedding * h * tokens if embedding != h else 0
    per_token = 8 * h * h + 4 * h * i + 4 * tokens * h
    if not first_token_only:
        return float(layers * per_token * tokens + projection)
    last = 4 * h * h * tokens + per_token - 4 * h * h
    return float((layers - 1) * per_token * tokens + last + projection)


def flops_note(config) -> str | None:
    """Why a model has no FLOPs and MFU in bench.json (None where it has them)."""
    model_type = getattr(_encoder_config(config), "model_type", None)
    if model_type in FLOP_FORMULA_TYPES:
        return None
    return f"FLOPs and MFU not counted: the formula covers {', '.join(FLOP_FORMULA_TYPES)} encoders, not {model_type}"


@dataclass
class BenchModel:
    """A model to measure: what it is, how to build it, and what it was trained for (if anything)."""

    name: str
    model: object
    tokenizer: object
    size_mb: float
    task: str | None = None
    label_names: list[str] | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)
    cache_key: str | None = None  # the checkpoint's key (cache.checkpoint_key): ONNX graphs built once, cached
    exported: object | None = None  # an exported ONNX directory (onnx_export.ExportedModel); model is None then
    text_model: object | None = None  # a tfidf, static or cascade model (runtime.light); model is None then

    @property
    def config(self):
        return self.exported.config if self.exported is not None else self.model.config

    def parameter_counts(self) -> dict:
        """models.count_parameters of the model (of an exported one: as recorded at export)."""
        if self.text_model is not None:
            return {"total": self.extra.get("params") or 0}
        if self.exported is not None:
            return self.exported.info.get("params") or {"total": 0}
        from distilbench.models.registry import count_parameters

        return count_parameters(self.model)

    def load_backend(self, name: str, work_dir: str | Path | None = None):
        """The model in backend `name` (an exported model: its own graph in a backend that runs it, without
        torch)."""
        if self.text_model is not None:
            from distilbench.runtime.light import TextBatchBackend

            return TextBatchBackend(self.text_model)
        if self.exported is not None:
            from distilbench.runtime.onnx_backend import load_exported

            return load_exported(self.exported.path, name)[0]
        from distilbench.runtime.backends import load_backend

        return load_backend(self.model, name, work_dir=work_dir, cache_key=self.cache_key)


def build_architecture(name: str, num_labels: int = 2):
    """`arch:NAME`: a standard architecture with random weights (speed does not depend on values)."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(0)
    if name == "bert-base-uncased":
        model = BertForSequenceClassification(BertConfig(num_labels=num_labels))
    elif name == "bert-large-uncased":
        model = BertForSequenceClassification(
            BertConfig(
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                intermediate_size=4096,
                num_labels=num_labels,
            )
        )
    elif name == "distilbert-base-uncased":
        model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=num_labels))
    else:
        raise DistilbenchError(
            f"unknown architecture arch:{name}; known: " + ", ".join(f"arch:{a}" for a in ARCHITECTURES)
        )
    return model.eval()


def resolve_bench_models(specs: list[str]) -> list[BenchModel]:
    """Run directories (each best checkpoint), checkpoint directories, exported ONNX directories, arch:NAME,
    aliases and hub names, in the order given."""
    return [bench_model for spec in specs for bench_model in resolve_bench_model(spec)]


def resolve_bench_model(spec: str) -> list[BenchModel]:
    """The model(s) one spec names: a run directory gives one per trained model, anything else one."""
    from distilbench.runtime.light import is_text_model

    path = Path(spec)
    if is_text_model(path):
        return [_text_bench_model(spec)]
    if is_exported_model(path):
        return [_exported_bench_model(spec)]
    if spec.startswith("arch:"):
        return [_architecture_bench_model(spec)]
    if _is_run_directory(path):
        return _run_bench_models(spec)
    if path.is_dir() and (path / "config.json").is_file():
        return [_checkpoint_bench_model(spec)]
    return [_hub_bench_model(spec)]


def _is_run_directory(path: Path) -> bool:
    return path.is_dir() and (path / "models").is_dir() and not (path / "config.json").exists()


def runs_without_torch(spec: str) -> bool:
    """Whether bench measures `spec` without torch: an exported bundle, a tfidf or static model, a cascade of such
    models, or a run directory whose trained models are all such. Reads files only, loads no model."""
    from distilbench.runtime.light import is_text_model

    path = Path(spec)
    if is_exported_model(path):
        return True
    if is_text_model(path):
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            return True  # a damaged manifest: loading the model says so, and what to do
        if manifest.get("kind") != "cascade":
            return True
        from distilbench.runtime.cascade import stage_paths

        return all(runs_without_torch(str(stage)) for stage in stage_paths(path, manifest))
    bests = sorted((path / "models").glob("*/best")) if _is_run_directory(path) else []
    return bool(bests) and all(runs_without_torch(str(best)) for best in bests)


def _text_bench_model(spec: str, name: str | None = None, run: str | None = None) -> BenchModel:
    """A tfidf, static or cascade model directory: the model itself, which takes texts, not tokens."""
    from distilbench.runtime.light import load_text_model, model_size_mb

    model = load_text_model(spec)
    extra = {"params": getattr(model, "params", None), **({"run": run} if run else {})}
    return BenchModel(
        name or spec, None, None, model_size_mb(spec), model.task, model.label_names, spec, extra, text_model=model
    )


def _exported_bench_model(spec: str) -> BenchModel:
    """An exported ONNX directory: its graph, tokenizer and task, and no PyTorch model."""
    from distilbench.runtime.bundle import read_exported

    exported = read_exported(Path(spec))
    return BenchModel(
        spec,
        None,
        exported.tokenizer,
        dir_size_mb(spec, "model.onnx*"),  # the graph and its external weights
        exported.task,
        exported.label_names,
        source=spec,
        exported=exported,
    )


def _architecture_bench_model(spec: str) -> BenchModel:
    """`arch:NAME`: random weights with the packaged MiniLM's tokenizer (the same uncased BERT vocabulary)."""
    from distilbench.models.registry import load_tokenizer, packaged_minilm_path

    model = build_architecture(spec[len("arch:") :])
    tokenizer = load_tokenizer(packaged_minilm_path())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        size = dir_size_mb(tmp)
    return BenchModel(spec, model, tokenizer, size, source="random weights")


def _run_bench_models(spec: str) -> list[BenchModel]:
    """A run directory: the best checkpoint of every model trained in it, each knowing its run (its test split)."""
    from distilbench.core.cache import checkpoint_key
    from distilbench.models.registry import load_trained

    path = Path(spec)
    bests = sorted(p for p in (path / "models").glob("*/best") if p.exists())
    if not bests:
        raise DistilbenchError(f"run directory {spec} has no trained models yet (no models/*/best)")
    from distilbench.runtime.light import is_text_model

    found = []
    for best in bests:
        if is_text_model(best):
            found.append(_text_bench_model(str(best), best.parent.name, str(path)))
            continue
        model, tokenizer, task, labels = load_trained(best)
        found.append(
            BenchModel(
                best.parent.name,
                model,
                tokenizer,
                dir_size_mb(best),
                task,
                labels,
                source=str(best),
                extra={"run": str(path)},
                cache_key=checkpoint_key(best),
            )
        )
    return found


def _checkpoint_bench_model(spec: str) -> BenchModel:
    """A checkpoint directory: a trained classifier with its task and labels, else a plain two-label model."""
    from transformers import AutoModelForSequenceClassification

    from distilbench.core.cache import checkpoint_key
    from distilbench.models.registry import _from_pretrained, load_tokenizer, load_trained

    try:
        model, tokenizer, task, labels = load_trained(Path(spec))
    except DistilbenchError:
        model = _from_pretrained(AutoModelForSequenceClassification, spec, num_labels=2)
        tokenizer, task, labels = load_tokenizer(spec), None, None
    return BenchModel(
        spec, model, tokenizer, dir_size_mb(spec), task, labels, source=spec, cache_key=checkpoint_key(Path(spec))
    )


def _hub_bench_model(spec: str) -> BenchModel:
    """An alias or hub name: a two-label model; its size from the weight files where they are local, else from
    the parameters."""
    from transformers import AutoModelForSequenceClassification

    from distilbench.core.cache import checkpoint_key
    from distilbench.models.registry import _from_pretrained, load_tokenizer, resolve_model_path

    model = _from_pretrained(AutoModelForSequenceClassification, spec, num_labels=2)
    tokenizer = load_tokenizer(spec)
    local = resolve_model_path(spec)
    size = (
        dir_size_mb(local)
        if os.path.isdir(local)
        else sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    )
    return BenchModel(
        spec,
        model.eval(),
        tokenizer,
        size,
        source=local,
        cache_key=checkpoint_key(local) if os.path.isdir(local) else None,
    )


def percentiles(values: list[float]) -> dict:
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def peak_rss_of(
    spec: str, backend: str, texts_file: str, batch_size: int, max_length: int | None, device: str = "cpu"
) -> dict:
    """Peak memory of a fresh process that loads `spec`, builds `backend` on `device` and predicts:
    {"peak_rss_mb": resident, and on CUDA "peak_gpu_mb": the most the GPU held}, None where it failed."""
    command = [
        sys.executable,
        "-m",
        "distilbench.benchmarking.speed",
        spec,
        backend,
        texts_file,
        str(batch_size),
        str(max_length or 0),
        device,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        log.warning("memory probe of %s / %s failed: %s", spec, backend, result.stderr.strip()[-500:])
        return {"peak_rss_mb": None}


def _memory_probe(argv: list[str]) -> None:
    """Child process of peak_rss_of: load, build the backend, predict the texts once, print peak memory."""
    spec, backend_name, texts_file, batch_size, max_length, device = argv
    from distilbench.runtime.batching import backend_logits

    bench_model = resolve_bench_models([spec])[0]
    texts = json.loads(Path(texts_file).read_text())
    if bench_model.model is not None:
        bench_model.model.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        backend = bench_model.load_backend(backend_name, work_dir=tmp)
        if bench_model.text_model is not None:
            backend.probabilities(texts, int(batch_size))
        else:
            backend_logits(
                backend, bench_model.tokenizer, texts, batch_size=int(batch_size), max_length=int(max_length) or None
            )
    peaks = {"peak_rss_mb": own_peak_rss_mb()}
    if device.startswith("cuda"):
        import torch

        peaks["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
    print(json.dumps(peaks))


def own_peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: ru_maxrss survives execve on Linux,
    so a child started from a big parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    _memory_probe(sys.argv[1:])
