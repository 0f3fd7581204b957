"""The paraphrase probe's rows: paraphrased questions swapped in, copies only, a clear error without them."""

from __future__ import annotations

import pytest

from unlearnkit.attacks.paraphrase import paraphrased_rows
from unlearnkit.errors import UnlearnError


def test_swaps_in_the_paraphrased_question():
    rows = [{"question": "Where was A born?", "paraphrased_question": "In which city was A born?", "answer": "X"},
            {"question": "Q2", "answer": "Y"}]
    out = paraphrased_rows(rows)
    assert out[0]["question"] == "In which city was A born?" and out[0]["original_question"] == "Where was A born?"
    assert out[0]["answer"] == "X"
    assert out[1] == {"question": "Q2", "answer": "Y"}  # no paraphrase: asked as is
    assert rows[0]["question"] == "Where was A born?"  # the input rows are not changed


def test_error_when_no_row_has_a_paraphrase():
    with pytest.raises(UnlearnError, match="paraphrased_question"):
        paraphrased_rows([{"question": "Q", "answer": "A"}])


def test_tiny_world_forget_rows_are_all_paraphrased():
    from unlearnkit.world.generator import generate_world

    forget = generate_world().forget
    out = paraphrased_rows(forget)
    assert len(out) == len(forget) > 0
    assert all(o["question"] == r["paraphrased_question"] != r["question"] for o, r in zip(out, forget))
