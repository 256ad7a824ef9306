"""`--backend auto`: the fastest backend that agrees with fp32, measured on this machine with this model.

Which runtime is fastest depends on the CPU far more than on anything else: on a CPU with native bf16
the fused torch-bf16 path wins by 3-4x, on an AVX2-only CPU bf16 is emulated (25x slower than fp32) and
only int8 kernels beat fp32 (but dynamic int8 gives a text a label that depends on its batch mates, so `auto`
leaves it out and measures static int8 instead, calibrated on the same texts). So `auto` does not guess from
flags alone:

- candidates: the backends this machine runs well (`candidate_backends`);
- calibration: each candidate predicts the same texts (the run's validation split, or a held sample of
  the input for a checkpoint without one) in alternating rounds; the fastest round counts;
- guard: a candidate whose predictions differ from torch-fp32's on more than 1 % of those texts, or whose
  primary metric (where labels are known) is more than 0.5 points below fp32's, is not chosen;
- the choice, every candidate's speed and agreement, and the reason are returned for the results files,
  and cached per checkpoint, machine and settings, so `predict` and `serve` do not calibrate on every start.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from distilbench.core.console import DistilbenchError, say
from distilbench.runtime.inference import backend_logits, logits_to_probs
from distilbench.runtime.machine import machine_fingerprint, native_precisions, pick_device
from distilbench.runtime.options import ChoiceSettings
from distilbench.runtime.static_quant import StaticCalibration, static_record

log = logging.getLogger(__name__)

CALIBRATION_TEXTS = 512  # enough for a stable rate and a 1 % agreement check; seconds per candidate
CHOICE_FORMAT = 3  # bumped when the cached record changes meaning (2: onnx-int8-static may be chosen; 3: OpenVINO)
CALIBRATED = ("onnx-int8-static", "openvino-int8")  # candidates built from the calibration texts


def choice_settings(config) -> ChoiceSettings:
    """The guard's settings from an ExperimentConfig (compare, train, distill, evaluate)."""
    return ChoiceSettings(config.min_agreement, config.max_metric_drop, config.recalibrate).validate()


def candidate_backends(device: torch.device | str = "auto", with_texts: bool = False) -> list[str]:
    """The backends worth measuring on this device: never one that runs emulated kernels here, and never one whose
    labels depend on a text's batch mates.

    CUDA: torch-fp32 and, where the GPU has it, torch-bf16. CPU: torch-fp32 and ONNX Runtime fp32, plus
    torch-bf16 where bf16 is measured fast (machine.cpu_fast_bf16). The dynamically quantized int8 backends
    (backends.BATCH_DEPENDENT) are left out: they scale activations per batch, so the same text could get another
    label in another batch, order or worker; static int8 (onnx-int8-static, activation scales fixed from the
    calibration texts, partly fp32 where it would fail the guard) takes their place for a caller with texts to
    calibrate it on (`with_texts`: `auto` itself; not `bench`, which measures without calibrating).
    Where openvino is installed: openvino-fp32, openvino-bf16 (CPUs with native bf16 only) and, with texts and nncf,
    openvino-int8 (NNCF's static int8, calibrated on them like onnx-int8-static).
    torch-bf16-compiled is left out: its compilation takes tens of seconds, longer than a calibration may."""
    device = pick_device(device) if isinstance(device, str) else device
    bf16 = "bf16" in native_precisions(device)
    if device.type == "cuda":
        return ["torch-fp32"] + (["torch-bf16"] if bf16 else [])
    names = ["torch-fp32"] + (["torch-bf16"] if bf16 else [])
    try:
        import onnxruntime  # noqa: F401

        names += ["onnx-fp32"] + (["onnx-int8-static"] if with_texts else [])
    except ImportError:
        log.info("onnxruntime not installed: ONNX backends are not candidates for auto")
        return names
    return names + _openvino_candidates(with_texts)


def _openvino_candidates(with_texts: bool) -> list[str]:
    """The OpenVINO backends worth measuring here: none without openvino; bf16 only on a CPU with native bf16;
    int8 only with texts to calibrate on and nncf to quantize."""
    from distilbench.runtime.machine import cpu_native_bf16
    from distilbench.runtime.openvino_backend import openvino_available

    if not openvino_available():
        log.info("openvino not installed: OpenVINO backends are not candidates for auto")
        return []
    names = ["openvino-fp32"] + (["openvino-bf16"] if cpu_native_bf16() else [])
    return names + (["openvino-int8"] if with_texts and openvino_available(int8=True) else [])


def validation_texts(model_dir: str | Path | None) -> tuple[list[str], np.ndarray | None, str] | None:
    """The validation split of the run a checkpoint belongs to (RUN/models/<model>/<epoch or best>), with
    labels, or None for a checkpoint outside a run."""
    if model_dir is None:
        return None
    from distilbench.data.datasets import load_split
    from distilbench.evaluation.metrics import label_array
    from distilbench.models.registry import read_task_labels

    directory = Path(model_dir).resolve()
    val = directory.parent.parent.parent / "data" / "val.csv"
    if directory.parent.parent.name != "models" or not val.is_file():
        return None
    try:
        task, label_names = read_task_labels(directory)
        frame = load_split(val, task, label_names)
        return frame["text"].tolist(), label_array(frame, task, label_names), "validation split"
    except (DistilbenchError, OSError, KeyError, ValueError) as exc:
        log.info("no validation split for the backend choice: %s", exc)
        return None


def builtin_sample_texts() -> list[str]:
    """A held sample where the caller has no texts of its own (serve): built-in BBC News titles."""
    from distilbench.data.datasets import read_source

    frame = read_source("builtin:bbc-news")
    return frame["title"].astype(str).tolist()[:CALIBRATION_TEXTS]


def _cache_path(
    model_dir: str | Path, device: torch.device, batch_size: int, max_length: int | None, settings: ChoiceSettings
) -> Path:
    from distilbench.core.cache import cache_dir, checkpoint_key

    key = (
        f"{checkpoint_key(model_dir)}-{machine_fingerprint()}-{device.type}-b{batch_size}-l{max_length or 0}"
        f"-a{settings.min_agreement:g}-m{settings.max_metric_drop:g}-v{CHOICE_FORMAT}"
    )
    return cache_dir() / "backend-choice" / f"{key}.json"


def cached_choice(
    model_dir: str | Path | None,
    device: torch.device | str,
    batch_size: int,
    max_length: int | None,
    settings: ChoiceSettings,
) -> dict | None:
    """The choice made earlier for this checkpoint on this machine with these settings, or None."""
    if model_dir is None or settings.recalibrate:
        return None
    device = pick_device(device) if isinstance(device, str) else device
    try:
        path = _cache_path(model_dir, device, batch_size, max_length, settings)
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, DistilbenchError):  # nothing cached, or no checkpoint: said later
        return None
    if record.get("chosen") not in candidate_backends(device, with_texts=True):  # e.g. onnxruntime uninstalled since
        return None
    return {**record, "cached": True, "cache_file": str(path)}


def calibrate(
    model,
    tokenizer,
    *,
    task: str,
    label_names: list[str],
    guard: tuple[list[str], np.ndarray | None, str],
    model_dir: str | Path | None = None,
    device: torch.device | str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
    settings: ChoiceSettings | None = None,
    show: bool = True,
) -> tuple[object, dict]:
    """Measure every candidate on the guard's texts, refuse those that disagree with fp32, keep the fastest.

    `guard`: (texts, their labels or None, where they come from, for messages). Returns the chosen backend
    (built) and the record of the choice; caches the record for `model_dir`."""
    settings = (settings or ChoiceSettings()).validate()
    device = pick_device(device) if isinstance(device, str) else device
    started = time.perf_counter()
    candidates = candidate_backends(device, with_texts=True)
    if device.type != "cpu":  # a model on a GPU stays there; CPU-only backends are no candidates
        model.to(device)
    texts, labels, guard_source = guard
    texts = list(texts[:CALIBRATION_TEXTS])
    if labels is not None:
        labels = labels[: len(texts)]
    if not texts:
        raise DistilbenchError("no texts to choose a backend on: pass --backend explicitly")
    if show:
        say(f"choosing a backend: {', '.join(candidates)} on {len(texts)} {guard_source} texts ...")
    calibration = StaticCalibration(
        texts, tokenizer, max_length, guard_source, settings.min_agreement, multilabel=task == "multilabel"
    )
    built, failed = _build_candidates(model, candidates, model_dir, calibration)
    seconds, logits = _time_candidates(built, tokenizer, texts, batch_size, max_length)
    measured = _judge_candidates(task, label_names, labels, logits, seconds, len(texts), settings)
    for name, backend in built.items():  # static int8: calibration size, products kept fp32, its own agreement
        quantized = _quantization_record(backend)
        if quantized is not None:
            measured[name]["static"] = {k: v for k, v in quantized.items() if k != "tried"}
    for name, error in failed.items():
        measured[name] = {"valid": False, "refused": f"could not be built: {error}"}
    valid = [name for name in built if measured[name]["valid"]]
    chosen = max(valid, key=lambda name: measured[name]["samples_per_s"])
    fp32_rate = measured["torch-fp32"]["samples_per_s"]
    rate = measured[chosen]["samples_per_s"]
    reason = (
        f"fastest of {len(valid)} candidate(s) agreeing with torch-fp32 on {len(texts)} {guard_source} texts: "
        f"{rate:.0f} samples/s, {rate / fp32_rate:.2f}x torch-fp32"
    )
    record = {
        "chosen": chosen,
        "reason": reason,
        "candidates": measured,
        "guard": {"texts": len(texts), "source": guard_source, "labels": labels is not None, **asdict(settings)},
        "device": str(device),
        "batch_size": batch_size,
        "max_length": max_length,
        "machine": machine_fingerprint(),
        "calibration_s": time.perf_counter() - started,
        "cached": False,
    }
    record["guard"].pop("recalibrate")
    if model_dir is not None:
        from distilbench.runs import write_json_atomic

        path = _cache_path(model_dir, device, batch_size, max_length, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    if show:
        say(f"backend: {chosen} ({reason})")
    return built[chosen], record


def _quantization_record(backend) -> dict | None:
    """The record of a static int8 backend (onnx-int8-static, openvino-int8), or None for another one."""
    from distilbench.runtime.openvino_backend import openvino_record

    path = getattr(backend, "path", None)
    if path is None:
        return None
    return static_record(path) if backend.name == "onnx-int8-static" else openvino_record(path)


def _build_candidates(
    model, candidates: list[str], model_dir: str | Path | None, calibration: StaticCalibration
) -> tuple[dict, dict[str, str]]:
    """({name: built backend}, {name: why it could not be built}) for the candidate backends; a static int8 graph
    is calibrated on `calibration`."""
    from distilbench.runtime.backends import load_backend

    built, failed = {}, {}
    for name in candidates:
        extra = {"calibration": calibration} if name in CALIBRATED else {}
        try:
            built[name] = load_backend(model, name, cache_key=_checkpoint_key(model_dir), **extra)
        except DistilbenchError as exc:
            failed[name] = str(exc)
    return built, failed


def _time_candidates(
    built: dict, tokenizer, texts: list[str], batch_size: int, max_length: int | None
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """({name: seconds of each round}, {name: logits on the texts}) for every built backend: a warm-up (first
    calls pay for allocation and kernel choice), then two alternating rounds over the texts."""
    for backend in built.values():
        backend_logits(backend, tokenizer, texts[: batch_size * 2], batch_size=batch_size, max_length=max_length)
    seconds: dict[str, list[float]] = {name: [] for name in built}
    logits: dict[str, np.ndarray] = {}
    for _ in range(2):
        for name, backend in built.items():
            start = time.perf_counter()
            logits[name], _ = backend_logits(backend, tokenizer, texts, batch_size=batch_size, max_length=max_length)
            seconds[name].append(time.perf_counter() - start)
    return seconds, logits


def _judge_candidates(
    task: str,
    label_names: list[str],
    labels: np.ndarray | None,
    logits: dict[str, np.ndarray],
    seconds: dict[str, list[float]],
    texts: int,
    settings: ChoiceSettings,
) -> dict[str, dict]:
    """Each measured backend's rate, agreement with torch-fp32's predictions and (with labels) its primary metric's
    difference to fp32's, and whether the guard of `settings` lets it be chosen (fp32 itself always may)."""
    from distilbench.evaluation.metrics import compute_metrics, primary_metric

    def predicted(values: np.ndarray) -> np.ndarray:
        probs = logits_to_probs(task, values)
        return probs.argmax(axis=1) if task == "multiclass" else probs >= 0.5

    reference = predicted(logits["torch-fp32"])
    metric = primary_metric(task)
    reference_value = (
        compute_metrics(task, labels, logits_to_probs(task, logits["torch-fp32"]), label_names)[metric]
        if labels is not None
        else None
    )
    measured = {}
    for name in logits:
        same = predicted(logits[name]) == reference
        agreement = float((same if same.ndim == 1 else same.all(axis=1)).mean())
        entry = {"samples_per_s": texts / min(seconds[name]), "agreement_with_fp32": agreement}
        refused = []
        if agreement < settings.min_agreement:
            refused.append(f"agrees with fp32 on {agreement:.1%} of texts (< {settings.min_agreement:.0%})")
        if reference_value is not None:
            value = compute_metrics(task, labels, logits_to_probs(task, logits[name]), label_names)[metric]
            entry[f"{metric}_delta_points"] = 100 * (value - reference_value)
            if 100 * (reference_value - value) > settings.max_metric_drop:
                refused.append(
                    f"{metric} {100 * (reference_value - value):.2f} points below fp32's "
                    f"(> {settings.max_metric_drop:g})"
                )
        entry["valid"] = not refused or name == "torch-fp32"
        if refused and name != "torch-fp32":
            entry["refused"] = "; ".join(refused)
        measured[name] = entry
    return measured


def _checkpoint_key(model_dir: str | Path | None) -> str | None:
    if model_dir is None:
        return None
    from distilbench.core.cache import checkpoint_key

    return checkpoint_key(model_dir)


def _known_choice(
    model_dir: str | Path,
    device: torch.device,
    batch_size: int,
    max_length: int | None,
    settings: ChoiceSettings,
    show: bool,
) -> dict | None:
    """A choice that needs no measurement: the only candidate, or one cached for this checkpoint."""
    candidates = candidate_backends(device)
    if len(candidates) == 1:
        return {
            "chosen": candidates[0],
            "reason": "the only candidate on this device",
            "candidates": {},
            "cached": False,
        }
    record = cached_choice(model_dir, device, batch_size, max_length, settings)
    if record is not None and show:
        say(f"backend: {record['chosen']} (chosen earlier on this machine; --recalibrate measures again)")
    return record


def resolve_backend(
    model_dir: str | Path,
    backend: str,
    *,
    device: torch.device | str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
    held_texts: list[str] | Callable[[], list[str]] | None = None,
    guard: tuple[list[str], np.ndarray | None, str] | None = None,
    settings: ChoiceSettings | None = None,
    show: bool = True,
) -> tuple[str, dict | None]:
    """The backend name for a checkpoint: `backend` itself, or for 'auto' the cached choice or a new
    calibration (guarded on `guard`, else the run's validation split, else `held_texts`). Returns (name, record).
    For callers that load the model later themselves (predict's workers, serve, the actors of a Ray run). An
    exported ONNX directory runs only its own graph's backend."""
    from distilbench.runtime.backends import check_backend

    backend = check_backend(backend, model_dir)
    if backend != "auto":
        return backend, None
    settings = (settings or ChoiceSettings()).validate()
    device = pick_device(device) if isinstance(device, str) else device
    record = _known_choice(model_dir, device, batch_size, max_length, settings, show)
    if record is None:
        _, record = choose_for_checkpoint(
            model_dir,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            held_texts=held_texts,
            guard=guard,
            settings=settings,
            show=show,
        )
    return record["chosen"], record


def build_backend(
    model,
    tokenizer,
    model_dir: str | Path,
    backend: str,
    *,
    device: torch.device | str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
    guard: tuple[list[str], np.ndarray | None, str] | None = None,
    held_texts: list[str] | None = None,
    settings: ChoiceSettings | None = None,
    show: bool = True,
) -> tuple[object, dict | None]:
    """A loaded checkpoint in `backend`; for 'auto' in the cached choice or a newly calibrated one.
    Returns (backend, record of the choice or None)."""
    from distilbench.runtime.backends import load_backend

    if backend != "auto":
        return load_backend(model, backend, cache_key=_checkpoint_key(model_dir)), None
    settings = (settings or ChoiceSettings()).validate()
    device = pick_device(device) if isinstance(device, str) else device
    record = _known_choice(model_dir, device, batch_size, max_length, settings, show)
    if record is not None:
        return load_backend(model, record["chosen"], cache_key=_checkpoint_key(model_dir)), record
    return choose_for_checkpoint(
        model_dir,
        model=model,
        tokenizer=tokenizer,
        device=device,
        batch_size=batch_size,
        max_length=max_length,
        guard=guard,
        held_texts=held_texts,
        settings=settings,
        show=show,
    )


def choose_for_checkpoint(
    model_dir: str | Path,
    *,
    model=None,
    tokenizer=None,
    device: torch.device | str = "auto",
    batch_size: int = 32,
    max_length: int | None = None,
    held_texts: list[str] | Callable[[], list[str]] | None = None,
    guard: tuple[list[str], np.ndarray | None, str] | None = None,
    settings: ChoiceSettings | None = None,
    show: bool = True,
) -> tuple[object, dict]:
    """Calibrate for a saved checkpoint (loaded here unless given): the guard is `guard`, else the run's
    validation split, else `held_texts` (agreement only)."""
    from distilbench.models.registry import load_trained, read_task_labels

    task, label_names = read_task_labels(model_dir)
    if model is None:
        model, tokenizer, task, label_names = load_trained(model_dir)
    guard = guard or validation_texts(model_dir)
    if guard is None:
        if callable(held_texts):  # read only when needed (predict's first input chunk)
            held_texts = held_texts()
        if not held_texts:
            raise DistilbenchError(
                "--backend auto needs texts to calibrate on: this checkpoint is not in a run "
                "directory with a validation split; pass --backend explicitly"
            )
        guard = (list(held_texts), None, "held sample (input)")
    return calibrate(
        model,
        tokenizer,
        task=task,
        label_names=label_names,
        guard=guard,
        model_dir=model_dir,
        device=device,
        batch_size=batch_size,
        max_length=max_length,
        settings=settings,
        show=show,
    )
