"""The Evaluator: each distinct sequence is run once per evaluation, whatever metrics and splits ask for it,
and every request gets exactly what a pass of its own would have given."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import unlearnkit.benchmarks.evaluator as evaluator_module
from unlearnkit.benchmarks.base import BenchmarkData
from unlearnkit.benchmarks.suite import evaluate
from unlearnkit.benchmarks.tofu import TofuBenchmark
from unlearnkit.benchmarks.evaluator import Evaluator
from unlearnkit.benchmarks.generation import Decoding, generate_greedy
from unlearnkit.benchmarks.passes import score_examples, token_statistics
from unlearnkit.recipe import EvalSection


@pytest.fixture
def counted(monkeypatch):
    """Every sequence the teacher-forced passes run (the passes wrapped to count what they are given)."""
    seen: list[tuple] = []

    def wrap(fn):
        def counting(model_, examples, *args, **kwargs):
            seen.extend((tuple(e.input_ids), tuple(e.labels)) for e in examples)
            return fn(model_, examples, *args, **kwargs)
        return counting

    monkeypatch.setattr(evaluator_module, "score_examples", wrap(score_examples))
    monkeypatch.setattr(evaluator_module, "token_statistics", wrap(token_statistics))
    return seen


def test_each_distinct_sequence_is_scored_once_across_tofu_and_privacy(model, tokenizer, fmt, tiny_splits, counted):
    seen = counted
    splits = copy.copy(tiny_splits)
    splits.holdout = [{"question": "Who painted the fence?", "answer": "Tom painted the fence."}]
    bench = BenchmarkData("tofu", splits, splits.forget, splits.retain, component=TofuBenchmark())
    result = evaluate(model, tokenizer, bench, fmt, EvalSection(max_new_tokens=2, batch_size=64), progress=False)
    assert len(seen) == len(set(seen))  # nothing scored twice
    # the forget answers serve TOFU's forget_prob and the privacy suite: one token-statistics pass for both
    distinct_tofu = 10 + 12 + 8 + 3
    assert len(seen) == distinct_tofu + len(splits.holdout)
    passes = result["passes"]["sequences"]
    assert passes["token_stats"] == len(splits.forget) + len(splits.holdout)
    assert passes["score"] == distinct_tofu - len(splits.forget)
    assert {"forget_prob", "mia_min_k", "privleak", "model_utility"} <= set(result["metrics"])


def test_requests_get_what_their_own_pass_gives(model, tokenizer, fmt, tiny_splits):
    examples = [fmt.encode(tokenizer, r["question"], r["answer"]) for r in tiny_splits.forget + tiny_splits.retain]
    ev = Evaluator(model, tokenizer, batch_size=3)
    scores = ev.score(examples)
    stats = ev.token_stats(examples[:2])  # the first two are also scored: their scores come from these
    again = ev.score(list(reversed(examples)))
    prompts = [fmt.prompt_ids(tokenizer, r["question"]) for r in tiny_splits.forget]
    texts = ev.generation(prompts * 2, Decoding(max_new_tokens=3))
    with pytest.raises(RuntimeError, match="Evaluator.run"):
        scores.get()
    ev.run()
    direct, counts = score_examples(model, examples, tokenizer.pad_token_id, batch_size=len(examples))
    np.testing.assert_allclose(scores.get()[0], direct, rtol=1e-5, atol=1e-5)
    assert scores.get()[1].tolist() == counts.tolist()
    np.testing.assert_allclose(again.get()[0], direct[::-1], rtol=1e-5, atol=1e-5)
    assert [s.logprobs.size for s in stats.get()] == counts[:2].tolist()
    assert texts.get() == generate_greedy(model, tokenizer, prompts, max_new_tokens=3) * 2
    assert ev.counts["generation"] == len(prompts)  # repeated prompts generated once


def test_under_several_processes_a_prompts_sequences_stay_on_one_rank():
    """Sharding the teacher-forced passes by prompt keeps a question's answers together (each rank runs the
    prompt once, `prefix`); every sequence runs on exactly one rank, and the shares stay balanced."""
    from unlearnkit.benchmarks.evaluator import _prompt, _shares

    keys = []
    for question in range(5):
        prompt = [1, 10 + question, 20 + question]
        for answer in range(question % 3 + 1):
            ids = prompt + [30 + answer, 40 + answer]
            keys.append((tuple(ids), tuple([-100] * 3 + ids[3:])))
    keys.append(((1, 2), (-100, -100)))  # nothing supervised: a group of its own
    shares = _shares(keys, 2, _prompt)
    assert sorted(i for share in shares for i in share) == list(range(len(keys)))
    for share in shares:
        prompts = {_prompt(keys[i]) for i in share}
        assert all(_prompt(key) not in prompts for other in shares if other is not share for key in
                   (keys[i] for i in other))
    assert [len(s) for s in shares] == [5, 5]
    assert _shares(keys, 2) == [list(range(len(keys)))[0::2], list(range(len(keys)))[1::2]]
