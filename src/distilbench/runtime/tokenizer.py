"""A bundle's tokenizer without transformers: `tokenizer.json` through the `tokenizers` library, with the
truncation side, padding side and id, special tokens and length limit that transformers reads from
tokenizer_config.json and special_tokens_map.json beside it.

`BundleTokenizer` answers the few calls the one inference loop makes of a transformers tokenizer
(batching.tokenize_texts, padded_batches), so an exported bundle predicts with the ids its checkpoint's
tokenizer gives, in a process that never imports transformers (or torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distilbench.core.console import DistilbenchError

TOKENIZER_FILE = "tokenizer.json"
NO_LIMIT = int(1e30)  # transformers' VERY_LARGE_INTEGER: a tokenizer that names no length limit
# transformers' tokenizer classes (without "Fast") whose model_input_names leave out token_type_ids
WITHOUT_TOKEN_TYPES = (
    "RobertaTokenizer",
    "XLMRobertaTokenizer",
    "CamembertTokenizer",
    "MPNetTokenizer",
    "DistilBertTokenizer",
    "BartTokenizer",
    "LongformerTokenizer",
    "GPT2Tokenizer",
    "T5Tokenizer",
)


class Encoded(dict):
    """What a transformers tokenizer returns for a batch: lists by input name, and the `encodings`
    (tokenizers.Encoding, whose `overflowing` tells what truncation cut off)."""

    def __init__(self, values: dict, encodings: list):
        super().__init__(values)
        self.encodings = encodings


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise DistilbenchError(f"cannot read {path}: {exc}; copy or export the bundle again") from None


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class BundleTokenizer:
    """`tokenizer.json` in the `tokenizers` library, called like a transformers fast tokenizer."""

    def __init__(self, directory: str | Path):
        from tokenizers import Tokenizer

        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise DistilbenchError(
                f"{directory} has no {TOKENIZER_FILE}: export the model again with this distilbench "
                "(it saves the fast tokenizer's file)"
            )
        settings = {
            **_read_json(directory / "special_tokens_map.json"),
            **_read_json(directory / "tokenizer_config.json"),
        }
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()  # batches are padded by the inference loop, each to its own longest text
        self.padding_side = settings.get("padding_side", "right")
        self.truncation_side = settings.get("truncation_side", "right")
        self.model_max_length = int(settings.get("model_max_length") or NO_LIMIT)
        self.pad_token = _token_text(settings.get("pad_token"))
        self.pad_token_id = self._tokenizer.token_to_id(self.pad_token) if self.pad_token is not None else None
        self.model_input_names = list(settings.get("model_input_names") or _input_names(settings))
        self._truncation: int | None = None  # the max_length truncation is set for (None: off)

    def __call__(
        self,
        texts: list[str],
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool = False,
        return_token_type_ids: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> Encoded:
        """Token ids, attention masks and (where asked or the model takes them) token type ids of `texts`,
        cut at `max_length` tokens with `truncation`, as a transformers tokenizer gives them: unpadded lists (what
        the inference loop takes), or with `padding` padded to the longest text; `return_tensors="np"`: arrays."""
        if return_tensors not in (None, "np"):
            raise DistilbenchError(
                f"BundleTokenizer gives lists or numpy arrays, not return_tensors={return_tensors!r}"
            )
        if truncation and max_length is None and self.model_max_length < NO_LIMIT:
            max_length = self.model_max_length  # as transformers: the tokenizer's own limit
        self._set_truncation(max_length if truncation else None)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        values = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_token_type_ids:
            values["token_type_ids"] = [e.type_ids for e in encodings]
        ordered = {name: values[name] for name in ("input_ids", "token_type_ids", "attention_mask") if name in values}
        if padding:
            ordered = {name: self._padded(name, rows) for name, rows in ordered.items()}
        if return_tensors == "np":
            ordered = {name: np.asarray(rows, dtype=np.int64) for name, rows in ordered.items()}
        return Encoded(ordered, encodings)

    def _padded(self, name: str, rows: list[list[int]]) -> list[list[int]]:
        """`rows` padded to the longest on the padding side: the pad id for input ids, zeros for the rest."""
        width = max((len(row) for row in rows), default=0)
        fill = (self.pad_token_id or 0) if name == "input_ids" else 0
        if self.padding_side == "left":
            return [[fill] * (width - len(row)) + list(row) for row in rows]
        return [list(row) + [fill] * (width - len(row)) for row in rows]

    def _set_truncation(self, max_length: int | None) -> None:
        if max_length == self._truncation:
            return
        if max_length is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction=self.truncation_side
            )
        self._truncation = max_length

    def __repr__(self) -> str:
        return f"BundleTokenizer(max_length={self.model_max_length}, padding_side={self.padding_side!r})"


def _input_names(settings: dict) -> list[str]:
    """The inputs a tokenizer class gives by default (transformers' model_input_names)."""
    name = str(settings.get("tokenizer_class") or "").removesuffix("Fast")
    if name in WITHOUT_TOKEN_TYPES:
        return ["input_ids", "attention_mask"]
    return ["input_ids", "token_type_ids", "attention_mask"]
