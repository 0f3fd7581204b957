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
from unlearnkit.data.files import blank_field, describe_blank, read_text, row_label
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
    if path.suffix == ".txt":
        texts = [line.strip() for line in read_text(path, "text file").splitlines() if line.strip()]
    else:
        texts = []
        for index, (item, line) in enumerate(zip(*_json_rows(path, "texts")), 1):
            if not isinstance(item, (str, dict)):
                raise UnlearnError(f"{row_label(str(path), index, line)} is a {type(item).__name__}; give a string"
                                   " or an object with 'text'")
            text = item if isinstance(item, str) else _row_text(item, path, index, line)
            if not text.strip():
                raise UnlearnError(f"{row_label(str(path), index, line)} is an empty text; fix or remove it")
            texts.append(text)
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
    "question" + "answer"; a .txt file gives one {"text": line} per non-empty line. A row whose text,
    question or answer is empty is refused, naming the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"data.forget_file: {path} does not exist; give a .jsonl/.json/.txt file of requests")
    if path.suffix == ".txt":
        return [{"text": t} for t in load_texts(path)]
    rows, lines = _json_rows(path, "requests")
    if not rows:
        raise UnlearnError(f"{path} holds no requests; give at least one row")
    for index, (row, line) in enumerate(zip(rows, lines), 1):
        if not isinstance(row, dict):
            raise UnlearnError(f"{row_label(str(path), index, line)} is not an object; use {{\"text\": ...}}")
        _row_text(row, path, index, line)
    return rows


def _json_rows(path: Path, what: str) -> tuple[list, list[int | None]]:
    """Items of a JSON list (.json) or JSON Lines file, with their line numbers."""
    if path.suffix == ".json":
        try:
            items = json.loads(read_text(path, "data file"))
        except json.JSONDecodeError as err:
            raise UnlearnError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); give a JSON list of {what}") from None
        if not isinstance(items, list):
            raise UnlearnError(f"{path}: expected a JSON list of {what}, got a {type(items).__name__}")
        return items, [None] * len(items)
    rows, lines = [], []
    for number, line in enumerate(read_text(path, "data file").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UnlearnError(f"{path}:{number}: not valid JSON ({err.msg}); one JSON object per line") from None
            lines.append(number)
    return rows, lines


def _row_text(row: dict, path: Path, index: int, line: int | None) -> str:
    """A row's text (see `text_of`); an empty text, question or answer is an error naming the row."""
    where = row_label(str(path), index, line)
    for key in ("text", "request"):
        if key in row:
            if blank_field(row, [key]) is not None:
                raise UnlearnError(f"{where} has {describe_blank(row, key)}; fix or remove the row")
            return row[key]
    if "question" not in row or "answer" not in row:
        raise UnlearnError(f"{where} needs a 'text' (or 'request') field, or 'question' and 'answer' fields;"
                           f" got keys {sorted(map(str, row))}")
    if (key := blank_field(row, ["question", "answer"])) is not None:
        raise UnlearnError(f"{where} has {describe_blank(row, key)}; every request needs a non-empty question and"
                           " answer: fix or remove the row")
    return text_of(row)
