"""Bare-text unlearning data: rows as plain text, and pools of generic texts.

The attack paper's unlearning data is bare text — no prompt, no chat template, every token
supervised (specs/methods.md pitfall 1). A row is turned into text by `text_of`: its ``text``
field when it has one, else ``question + " " + answer``. `generic_view` pairs every forget row
with a generic text (the preferred side of the attack paper's DPO), cycling the pool as the seed
does with its 509 Wikipedia passages: pair i is (pool[i mod |pool|], forget_i).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from unlearnkit.data.batch import Example
from unlearnkit.data.formats import encode_text
from unlearnkit.errors import UnlearnError


def text_of(row: dict) -> str:
    for key in ("text", "request"):  # {"request": ...}: a crafted request (`unlearn craft`)
        if isinstance(row.get(key), str):
            return row[key]
    if "question" in row and "answer" in row:
        return f"{row['question']} {row['answer']}"
    raise UnlearnError(f"a row needs a 'text' (or 'request') field, or 'question' and 'answer' fields; got keys {sorted(row)}")


def encode_text_rows(rows: Sequence[dict], tokenizer: Any, max_length: int | None = None) -> list[Example]:
    return [encode_text(tokenizer, text_of(r), max_length=max_length) for r in rows]


def pretraining_chunks(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[dict]:
    """A corpus as ``max_length``-token pieces (OpenUnlearning's PretrainingDataset, used for MUSE's raw texts):
    the texts are joined with blank lines, tokenised once (no special tokens), cut into consecutive
    ``max_length``-token chunks (the last may be shorter) and decoded back to ``{"text": chunk}`` rows, which
    are re-tokenised per item like any bare-text row."""
    if max_length < 1:
        raise UnlearnError(f"data.max_length must be >= 1 to cut texts into chunks (got {max_length})")
    ids = list(tokenizer("\n\n".join(texts), add_special_tokens=False, verbose=False)["input_ids"])
    if not ids:
        raise UnlearnError("the training texts tokenise to nothing; give non-empty texts")
    return [{"text": tokenizer.decode(ids[i:i + max_length])} for i in range(0, len(ids), max_length)]


def load_texts(path: str | Path) -> list[str]:
    """Texts from a .txt (one per line), .json (a list of strings or of {"text": ...}) or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"text file {path} does not exist; give a .txt, .json or .jsonl file of texts")
    raw = path.read_text()
    if path.suffix == ".txt":
        texts = [line.strip() for line in raw.splitlines() if line.strip()]
    else:
        try:
            items = json.loads(raw) if path.suffix == ".json" else [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise UnlearnError(f"{path}: not valid JSON ({err}); give a list of strings or objects with 'text'") from None
        texts = [item if isinstance(item, str) else text_of(item) for item in items]
    if not texts:
        raise UnlearnError(f"{path} holds no texts")
    return texts


def generic_view(n_rows: int, pool: Sequence[str], tokenizer: Any, max_length: int | None = None) -> list[Example]:
    """`n_rows` generic texts, cycling `pool`, encoded as bare text."""
    if not pool:
        raise UnlearnError("the generic text pool is empty; give data.generic_file with texts")
    return [encode_text(tokenizer, pool[i % len(pool)], max_length=max_length) for i in range(n_rows)]


def load_rows(path: str | Path) -> list[dict]:
    """Unlearning requests from a .json list or .jsonl file: rows with "text" / "request" (bare text) or
    "question" + "answer"; a .txt file gives one {"text": line} per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"data.forget_file: {path} does not exist; give a .jsonl/.json/.txt file of requests")
    if path.suffix == ".txt":
        rows = [{"text": t} for t in load_texts(path)]
    else:
        raw = path.read_text()
        try:
            if path.suffix == ".json":
                rows = json.loads(raw)
            else:
                rows = []
                for number, line in enumerate(raw.splitlines(), 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise UnlearnError(f"{path}:{number}: not valid JSON ({err.msg}); one JSON object per line") from None
        except json.JSONDecodeError as err:
            raise UnlearnError(f"{path}: not valid JSON ({err}); give a list of objects") from None
    if not isinstance(rows, list) or not rows:
        raise UnlearnError(f"{path} holds no requests; give at least one row")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UnlearnError(f"{path}: row {number} is not an object; use {{\"text\": ...}}")
        text_of(row)  # every row must be usable as text (raises naming the keys it has)
    return rows
