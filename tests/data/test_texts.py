"""Bare-text rows, generic pools and request files (data/texts.py)."""

from __future__ import annotations

import json

import pytest

from unlearnkit.data.texts import generic_view, load_rows, load_texts, text_of
from unlearnkit.errors import UnlearnError


def test_text_of_prefers_text_then_request_then_question_answer():
    assert text_of({"text": "a", "request": "b"}) == "a"
    assert text_of({"request": "b"}) == "b"
    assert text_of({"question": "Q?", "answer": "A."}) == "Q? A."
    with pytest.raises(UnlearnError, match="got keys \\['prompt'\\]"):
        text_of({"prompt": "x"})


def test_load_rows_reads_jsonl_json_and_txt(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"text": "one"}\n\n{"request": "two"}\n')
    (tmp_path / "r.json").write_text(json.dumps([{"question": "Q?", "answer": "A."}]))
    (tmp_path / "r.txt").write_text("first\n\nsecond\n")
    assert [text_of(r) for r in load_rows(tmp_path / "r.jsonl")] == ["one", "two"]
    assert load_rows(tmp_path / "r.json") == [{"question": "Q?", "answer": "A."}]
    assert load_rows(tmp_path / "r.txt") == [{"text": "first"}, {"text": "second"}]


@pytest.mark.parametrize("content, message", [('{"text": "ok"}\n{bad\n', "r.jsonl:2: not valid JSON"),
                                              ("", "holds no requests"), ('{"prompt": 1}\n', "got keys")])
def test_load_rows_names_the_problem(tmp_path, content, message):
    (tmp_path / "r.jsonl").write_text(content)
    with pytest.raises(UnlearnError, match=message):
        load_rows(tmp_path / "r.jsonl")
    with pytest.raises(UnlearnError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl")


def test_generic_view_cycles_the_pool(tmp_path):
    class Tok:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1, *[ord(c) for c in text]]}

        eos_token_id = 2

    view = generic_view(5, ["ab", "c"], Tok())
    assert [len(e.input_ids) for e in view] == [4, 3, 4, 3, 4]  # BOS + text + EOS, pool cycled
    assert all(e.prompt_length == 0 or e.labels[0] == -100 for e in view)
    (tmp_path / "g.json").write_text(json.dumps(["x", {"text": "y"}]))
    assert load_texts(tmp_path / "g.json") == ["x", "y"]
