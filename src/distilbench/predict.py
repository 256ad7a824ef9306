"""`distilbench predict`: texts in (a file or stdin), one JSON line per text out, streamed in chunks."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .console import DistilbenchError, say

CHUNK_ROWS = 4096


def iter_text_chunks(source: str, text_column: str = "text", chunk_rows: int = CHUNK_ROWS) -> Iterator[list[str]]:
    """Texts in chunks, never the whole input in memory: '-' (stdin) and .txt are one text per line;
    .csv/.tsv/.jsonl/.parquet are read chunk by chunk."""
    if source == "-" or source.endswith(".txt"):
        handle = sys.stdin if source == "-" else _open_text(source)
        chunk: list[str] = []
        for line in handle:
            chunk.append(line.rstrip("\n"))
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    import pandas as pd

    path = Path(source)
    if not path.is_file():
        raise DistilbenchError(f"input file not found: {source}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            reader = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", chunksize=chunk_rows,
                                 usecols=lambda c: c == text_column, dtype=str, keep_default_na=False)
            frames = reader
        elif suffix in (".jsonl", ".json"):
            frames = pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(chunk_rows, columns=[text_column])
            frames = (batch.to_pandas() for batch in batches)
        else:
            raise DistilbenchError(f"unsupported input {source}: use .txt (one text per line), .csv, .tsv, "
                                   ".jsonl or .parquet, or - for stdin")
        for frame in frames:
            if text_column not in frame.columns:
                raise DistilbenchError(f"text column '{text_column}' not found in {source}; use --text-column")
            yield ["" if v is None else str(v) for v in frame[text_column].tolist()]
    except DistilbenchError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DistilbenchError(f"could not read {source}: {str(exc).splitlines()[0]}") from None


def _open_text(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise DistilbenchError(f"cannot read {path}: {exc.strerror}") from None


def stored_thresholds(config, label_names: list[str]) -> np.ndarray:
    """Per-label decision thresholds saved with a multilabel model (0.5 where none were tuned)."""
    saved = (config.to_dict().get("distilbench") or {}).get("thresholds") or {}
    return np.array([float(saved.get(name, 0.5)) for name in label_names])


def prediction_records(task: str, label_names: list[str], probs: np.ndarray, thresholds: np.ndarray) -> list[dict]:
    """One dict per text: the predicted label (multiclass) or labels (multilabel) and every probability."""
    records = []
    for row in probs:
        scores = {name: round(float(p), 6) for name, p in zip(label_names, row)}
        if task == "multiclass":
            records.append({"label": label_names[int(row.argmax())], "probabilities": scores})
        else:
            records.append({"labels": [n for n, p, t in zip(label_names, row, thresholds) if p >= t],
                            "probabilities": scores})
    return records


def predict(model_dir: str, source: str = "-", output: str | None = None, *, text_column: str = "text",
            backend: str = "auto", batch_size: int = 32, max_length: int | None = None, device: str = "auto",
            progress: bool = True) -> int:
    """Predict every text of `source`, writing JSON lines to `output` (stdout when None); returns the count."""
    from tqdm.auto import tqdm

    from .backends import auto_backend, backend_logits, load_backend
    from .inference import logits_to_probs, pick_device
    from .models import load_trained

    model, tokenizer, task, label_names = load_trained(model_dir)
    device_ = pick_device(device)
    model.to(device_)
    name = auto_backend(device_) if backend == "auto" else backend
    runtime = load_backend(model, name)
    thresholds = stored_thresholds(model.config, label_names)
    out_path = Path(output) if output else None
    tmp_path = out_path.with_name(out_path.name + ".partial") if out_path else None
    handle = open(tmp_path, "w", encoding="utf-8") if tmp_path else sys.stdout
    count = 0
    try:
        with tqdm(desc="predict", unit="text", disable=not progress, file=sys.stderr) as bar:
            for texts in iter_text_chunks(source, text_column):
                logits, _ = backend_logits(runtime, tokenizer, texts, batch_size=batch_size, max_length=max_length)
                for record in prediction_records(task, label_names, logits_to_probs(task, logits), thresholds):
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += len(texts)
                bar.update(len(texts))
        if tmp_path:
            handle.close()
            tmp_path.replace(out_path)  # the output appears whole or not at all
    finally:
        if tmp_path and not handle.closed:
            handle.close()
            tmp_path.unlink(missing_ok=True)
    if out_path:
        say(f"{count} predictions ({name}) -> {out_path}")
    return count
