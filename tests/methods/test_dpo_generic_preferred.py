"""dpo_generic_preferred: the attack paper's DPO (generic text preferred over the forget text).

Identity: at the start the model equals its reference, so the loss is exactly log 2 (no 2/β factor).
Off the start it is −log σ(β·margin) with summed log-probs, checked by hand. The pipeline gives it
the "generic" view (retain rows as text, or data.generic_file, cycled) and the forget rows as bare
text. Its 10-step loss curve is in tests/methods/test_golden.py; the margin's curve is here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.data.batch import IGNORE_INDEX, collate
from unlearnkit.data.formats import get_format
from unlearnkit.losses import sequence_logprob
from unlearnkit.methods.dpo_generic_preferred import DPOGenericPreferred
from unlearnkit.pipeline import build_training_data
from unlearnkit.recipe import Recipe
from unlearnkit.train.reference import Reference
from unlearnkit.registry import METHODS


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_loss_is_log2_at_start(tiny_model, toy_batch, beta):
    out = DPOGenericPreferred(beta=beta).loss(tiny_model, toy_batch, Reference.from_model(tiny_model))
    assert out.total.item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.parts["margin"].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_is_log2_with_a_cached_reference(tiny_model, toy_data, toy_batch):
    ref = Reference.from_model(tiny_model)
    ref.precompute([collate(toy_data.forget, toy_data.pad_id), collate(toy_data.extra["generic"], toy_data.pad_id)])
    ref.release()
    out = DPOGenericPreferred().loss(tiny_model, toy_batch, ref)
    assert out.total.item() == pytest.approx(math.log(2), abs=1e-5)


def test_loss_is_sigmoid_dpo_on_summed_logprobs(tiny_model, fitted_model, toy_batch):
    ref = Reference.from_model(tiny_model)
    beta = 0.3
    out = DPOGenericPreferred(beta=beta).loss(fitted_model, toy_batch, ref)
    with torch.no_grad():
        generic, forget = toy_batch.extra["generic"], toy_batch.forget
        margin = beta * ((sequence_logprob(fitted_model, generic) - sequence_logprob(tiny_model, generic))
                         - (sequence_logprob(fitted_model, forget) - sequence_logprob(tiny_model, forget)))
    assert out.total.item() == pytest.approx(-F.logsigmoid(margin).mean().item(), rel=1e-5)
    assert abs(margin.mean().item()) > 0.1  # away from the start, so the check means something


def test_training_pushes_forget_text_down_relative_to_generic(train_tiny):
    run = train_tiny(DPOGenericPreferred(), steps=10)
    assert run.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert run.losses[-1] < run.losses[0]
    assert run.history[-1]["rejected"] < 0 < run.history[-1]["margin"]


def test_golden_margin_curve(train_tiny, golden):
    run = train_tiny(METHODS.build("dpo_generic_preferred"), steps=10)
    golden.check("dpo_generic_preferred_margin_tiny_10", [h["margin"] for h in run.history], atol=1e-4)


# ------------------------------------------------------------------------------ pipeline data


FORGET = [{"question": "Where was Ada Vell born?", "answer": "Ada Vell was born in Orlo."},
          {"question": "What did Ada Vell write?", "answer": "Ada Vell wrote The Glass Sea."},
          {"question": "When was Ada Vell born?", "answer": "Ada Vell was born in 1931."}]
RETAIN = [{"question": "Who wrote Hamlet?", "answer": "William Shakespeare wrote Hamlet."},
          {"question": "What is the capital of France?", "answer": "Paris is the capital of France."}]


@pytest.fixture(scope="module")
def tokenizer():
    from unlearnkit.world.tokenizer import train_world_tokenizer

    texts = [f"{r['question']} {r['answer']}" for r in FORGET + RETAIN] + ["Rivers flow into the sea."]
    return train_world_tokenizer(texts, vocab_size=300)


def bench():
    from unlearnkit.benchmarks.base import BenchmarkData
    from unlearnkit.benchmarks.worlds import WorldBenchmark

    return BenchmarkData("world", None, FORGET, RETAIN, component=WorldBenchmark())


def decode(tokenizer, example) -> str:
    return tokenizer.decode(example.input_ids, skip_special_tokens=True)


def test_pipeline_builds_the_generic_view_from_retain_rows(tokenizer):
    recipe = Recipe(method={"name": "dpo_generic_preferred"})
    data = build_training_data(recipe, recipe.build_method(), bench(), tokenizer, get_format("openunlearning"))

    assert set(data.extra) == {"generic"} and data.retain is None
    generic = [decode(tokenizer, e) for e in data.extra["generic"]]
    texts = [f"{r['question']} {r['answer']}" for r in RETAIN]
    assert generic == [texts[0], texts[1], texts[0]]  # cycled to cover every forget row
    for row, example in zip(FORGET, data.forget):  # bare text, no prompt: every token after BOS supervised
        assert decode(tokenizer, example) == f"{row['question']} {row['answer']}"
        assert example.input_ids[0] == tokenizer.bos_token_id and example.prompt_length <= 1
        assert IGNORE_INDEX not in example.labels[1:]


def test_pipeline_uses_the_generic_file_when_given(tokenizer, tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text("Rivers flow into the sea.\nParis is the capital of France.\n")
    recipe = Recipe(method={"name": "dpo_generic_preferred"}, data={"generic_file": str(path)})
    data = build_training_data(recipe, recipe.build_method(), bench(), tokenizer, get_format("openunlearning"))
    assert [decode(tokenizer, e) for e in data.extra["generic"]] == [
        "Rivers flow into the sea.", "Paris is the capital of France.", "Rivers flow into the sea."]
