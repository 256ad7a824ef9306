"""The one inference loop's numpy part: tokenize once, sort by length, pad each batch to its own longest text,
run a backend, and turn logits into probabilities. Imports no torch, so an exported bundle runs without it
(inference.py adds the torch parts: precision, autocast, losses)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from distilbench.core.console import warn
from distilbench.models.inputs import MODEL_INPUTS

_warned_truncation: set[int] = set()  # token limits already warned about in this process
_warned_cap: set[tuple[int, int]] = set()
# encoders whose position ids start after the padding index (RoBERTa's create_position_ids_from_input_ids)
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "mpnet")


def max_positions(config) -> int | None:
    """How many tokens the encoder of `config` can take: its position embeddings, less the padding offset of
    RoBERTa-style models (the thesis head keeps its encoder's config as a dict)."""
    values = config if isinstance(config, dict) else config.to_dict()
    if isinstance(values.get("encoder"), dict):
        values = values["encoder"]
    positions = values.get("max_position_embeddings")
    if not positions:
        return None
    if values.get("model_type") in PADDING_OFFSET_TYPES:
        positions -= (values.get("pad_token_id") or 0) + 1
    return int(positions)


def token_limit(tokenizer, max_length: int | None = None, positions: int | None = None) -> int:
    """The tokens a text keeps: --max-length, else 512; never more than the tokenizer allows or the encoder has
    positions for (a longer input would crash the model). The one place every command takes it from."""
    ceilings = [n for n in (getattr(tokenizer, "model_max_length", None), positions) if n and n < 1_000_000]
    if max_length is None:
        return min([512, *ceilings])
    limit = min([max_length, *ceilings])
    if limit < max_length and (max_length, limit) not in _warned_cap:
        _warned_cap.add((max_length, limit))
        warn(f"--max-length {max_length} is more than this model takes; texts are cut at {limit} tokens.")
    return limit


def tokenize_texts(tokenizer, texts: list[str], max_length: int | None, positions: int | None = None) -> dict:
    """Tokenize once, without padding (batches are padded to their own longest text), at most `token_limit`
    tokens per text (`positions`: the encoder's, from `max_positions`).

    Texts longer than the limit are truncated, with one warning per limit and process: training, testing,
    speed rounds and streamed predictions tokenize again and again, and the user needs to hear it once."""
    limit = token_limit(tokenizer, max_length, positions)
    texts = list(texts)
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=limit,
        padding=False,
        return_token_type_ids="token_type_ids" in tokenizer.model_input_names,
    )
    if limit not in _warned_truncation:
        truncated = _count_truncated(tokenizer, texts, encoded, limit)
        if truncated:
            _warned_truncation.add(limit)
            cause = f"to {limit} (--max-length)" if max_length else "(the model's limit; see --max-length)"
            warn(f"{truncated} of {len(texts)} texts are longer than {limit} tokens and were truncated {cause}.")
    return encoded


def _count_truncated(tokenizer, texts: list[str], encoded, limit: int) -> int:
    """How many texts tokenization cut at `limit` tokens. Only texts that reached the limit can have been cut;
    a fast tokenizer keeps what it cut off (Encoding.overflowing), a slow one tokenizes those texts again."""
    at_limit = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) >= limit]
    if not at_limit:
        return 0
    encodings = getattr(encoded, "encodings", None)
    if encodings:
        return sum(1 for i in at_limit if encodings[i].overflowing)
    full = tokenizer([texts[i] for i in at_limit], truncation=False, padding=False, verbose=False)
    return sum(1 for ids in full["input_ids"] if len(ids) > limit)


def padded_batches(
    tokenizer,
    texts: list[str],
    batch_size: int,
    max_length: int | None,
    input_names=None,
    positions: int | None = None,
    multiple: int = 1,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The one inference loop's batching: tokenize once, sort by length, pad each batch to its own longest text
    (rounded up to a `multiple` of tokens, within `positions`: fewer shapes for a backend that builds kernels per
    shape).

    Yields (positions of the batch's texts in `texts`, int64 arrays by input name). `input_names` picks the
    arrays (token_type_ids are zeros where a model wants them and the tokenizer gives none)."""
    if not texts:  # the tokenizers refuse an empty list
        return
    encoded = tokenize_texts(tokenizer, texts, max_length, positions)
    ids = encoded["input_ids"]
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")
    names = list(input_names) if input_names is not None else [k for k in MODEL_INPUTS if k in encoded]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for begin in range(0, len(texts), batch_size):
        index = order[begin : begin + batch_size]
        width = _rounded_up(int(lengths[index].max()), multiple, positions)
        batch = {}
        for name in names:
            fill = pad_id if name == "input_ids" else 0
            array = np.full((len(index), width), fill, dtype=np.int64)
            rows = encoded[name] if name in encoded else None
            for row_number, i in enumerate(index):
                n = int(lengths[i])
                values = rows[i] if rows is not None else (1 if name == "attention_mask" else 0)
                if left:
                    array[row_number, width - n :] = values
                else:
                    array[row_number, :n] = values
            batch[name] = array
        yield index, batch


def _rounded_up(width: int, multiple: int, positions: int | None) -> int:
    """`width` rounded up to a multiple of `multiple`, but never past `positions` (what the encoder can take)."""
    rounded = -(-width // multiple) * multiple
    return width if positions is not None and rounded > positions else rounded


def backend_logits(
    backend,
    tokenizer,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, float]:
    """Logits for `texts` in input order through a backend (backends.Backend: input_names, num_labels, a call
    from int64 arrays to logits), and the seconds spent in backend calls. Used by evaluate, predict, serve,
    bench and compare alike."""
    outputs = np.zeros((len(texts), backend.num_labels), dtype=np.float32)
    seconds = 0.0
    batches = padded_batches(
        tokenizer,
        texts,
        batch_size,
        max_length,
        backend.input_names,
        getattr(backend, "max_positions", None),
        getattr(backend, "pad_multiple", 1),
    )
    if progress:  # tqdm is imported only to be shown: a cold start without a progress bar skips its 25 ms
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(texts) // batch_size), desc=desc, unit="batch", leave=False)
    for index, batch in batches:
        start = time.perf_counter()
        outputs[index] = backend(batch)
        seconds += time.perf_counter() - start
    return outputs, seconds


def logits_to_probs(task: str, logits: np.ndarray) -> np.ndarray:
    """Softmax for multiclass, sigmoid per label for multilabel."""
    if task == "multiclass":
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def loss_from_logits(task: str, logits: np.ndarray, labels: np.ndarray) -> float:
    """The training losses, in numpy (so a bundle's evaluate needs no torch): cross-entropy (multiclass) or
    BCE-with-logits (multilabel), means over the texts (and labels)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "multiclass":
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())
    targets = np.asarray(labels, dtype=np.float64)
    losses = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return float(losses.mean())
