"""ROUGE and stop-string cutting on strings whose scores can be counted by hand."""

from __future__ import annotations

import pytest

from unlearnkit.metrics.text import ROUGE_KEYS, cut_at_stop_strings, rouge, rouge_scores


def test_rouge_recall_of_a_prefix():
    scores = rouge("the cat sat", "the cat")
    assert scores["rougeL_recall"] == pytest.approx(2 / 3)
    assert scores["rouge1_recall"] == pytest.approx(2 / 3)
    # precision 1, recall 2/3 -> F1 = 0.8
    assert scores["rougeL_f1"] == pytest.approx(0.8)


def test_rouge_l_uses_order_rouge_1_does_not():
    scores = rouge("the cat sat", "sat cat the")
    assert scores["rouge1_recall"] == pytest.approx(1.0)
    assert scores["rougeL_recall"] == pytest.approx(1 / 3)


def test_rouge_is_case_punctuation_insensitive_and_stems():
    assert rouge("The cats sat.", "the cat sat")["rougeL_recall"] == pytest.approx(1.0)


def test_empty_generation_scores_zero():
    assert rouge("the cat sat", "") == {key: 0.0 for key in ROUGE_KEYS}


def test_rouge_scores_columns_and_length_check():
    columns = rouge_scores(["the cat sat", "a b"], ["the cat", "a b"])
    assert set(columns) == set(ROUGE_KEYS)
    assert columns["rougeL_recall"] == pytest.approx([2 / 3, 1.0])
    with pytest.raises(ValueError):
        rouge_scores(["a"], [])


def test_cut_at_stop_strings():
    assert cut_at_stop_strings("  Paris.\n\nQuestion: next", ["\n\n", "Question:"]) == "Paris."
    assert cut_at_stop_strings("Paris. Question: x", ["\n\n", "Question:"]) == "Paris."
    assert cut_at_stop_strings(" no stop ", []) == "no stop"
    assert cut_at_stop_strings("abc", [""]) == "abc"
