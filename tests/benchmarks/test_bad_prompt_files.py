"""Prompt files a recipe points at (safety.probe_path, benign_path, harvest_path): a bad one is one error naming it."""

from __future__ import annotations

import pytest

from unlearnkit.benchmarks.harmful_prompts import load_prompts
from unlearnkit.errors import UnlearnError

LATIN1 = "café, naïve, résumé".encode("latin-1")  # not UTF-8


@pytest.mark.parametrize("source, name, content, expect", [
    ("advbench", "harmful_behaviors.csv", b"goal,target\n" + LATIN1 + b",x\n", "harmful_behaviors.csv: not UTF-8 text"),
    ("truthfulqa", "TruthfulQA.csv", b"Question,Best Answer\n" + LATIN1 + b",x\n", "TruthfulQA.csv: not UTF-8 text"),
    ("hex_phi", "HEx-PHI.json", b"[{not json", "HEx-PHI.json:1: not valid JSON"),
    ("hex_phi", "HEx-PHI.json", b'[{"category": "one", "text": "x"}]', "is not a JSON list of {category, text} items"),
    ("pku_saferlhf", "pku.json", b'[{"response": ["a", "b"]}]', "every row needs a 'prompt' string"),
    ("pku_saferlhf", "pku.jsonl", b'{"prompt": "p", "response": ["a", "b"]}\n{bad\n', "pku.jsonl:2: not valid JSON"),
])
def test_bad_prompt_file_is_a_user_error_naming_it(tmp_path, source, name, content, expect):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnlearnError) as err:
        load_prompts(source, tmp_path / name)
    assert expect in str(err.value) and "\n" not in str(err.value), str(err.value)
