"""White-box metrics (`benchmarks.white_box`): the logit lens and the linear probe read the decoder layers during
the forget answers' own scoring pass, and the probe fitted on the first model evaluated is applied to later ones."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearnkit.benchmarks.base import BenchmarkData
from unlearnkit.benchmarks.evaluator import Evaluator
from unlearnkit.benchmarks.suite import evaluate
from unlearnkit.benchmarks.tofu import TofuBenchmark
from unlearnkit.benchmarks.white_box import FITTED_EARLIER, FITTED_HERE, fit_forget_probe
from unlearnkit.recipe import EvalSection, validate_recipe

LENS = ["forget_prob", "forget_logit_lens"]
BOTH = ["forget_logit_lens", "forget_linear_probe"]


def _data(splits) -> BenchmarkData:
    """Fresh benchmark data (no probe fitted yet) over `splits`."""
    return BenchmarkData("tofu", splits, splits.forget, splits.retain, component=TofuBenchmark())


def _eval(model, tokenizer, fmt, data, metrics, **settings):
    return evaluate(model, tokenizer, data, fmt, EvalSection(max_new_tokens=2, batch_size=64, **settings),
                    progress=False, metrics=metrics)


def _three_layers(tokenizer, seed: int):
    from unlearnkit.model import tiny_llama

    return tiny_llama(len(tokenizer), hidden=32, layers=3, heads=2, seed=seed, bos_id=tokenizer.bos_token_id,
                      eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id).eval()


@pytest.fixture(scope="module")
def fitted(tokenizer, fmt, tiny_splits):
    """A 3-layer tiny Llama fine-tuned on the forget and retain answers: it knows what the metrics look for."""
    from unlearnkit.data.pairing import UnlearnData
    from unlearnkit.methods.finetune import Finetune
    from unlearnkit.train import TrainConfig, train

    model = _three_layers(tokenizer, seed=0)
    rows = tiny_splits.forget + tiny_splits.retain
    examples = [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows]
    data = UnlearnData(forget=examples, pad_id=tokenizer.pad_token_id)
    return train(model, Finetune(), data, TrainConfig(steps=40, lr=1e-2, batch_size=8, progress=False)).model.eval()


def test_the_last_layers_lens_is_the_models_own_answer_probability(fitted, tokenizer, fmt, tiny_splits):
    result = _eval(fitted, tokenizer, fmt, _data(tiny_splits), LENS)
    lens = result["per_sample"]["logit_lens"]
    by_layer = lens["forget_logit_lens_by_layer"]
    assert len(by_layer) == lens["layer"][-1] + 1 == 3  # one entry per decoder layer
    assert by_layer[-1] == pytest.approx(result["metrics"]["forget_prob"], abs=1e-5)
    np.testing.assert_allclose([row[-1] for row in lens["forget"]], result["per_sample"]["forget"]["prob"], atol=1e-5)
    assert result["metrics"]["forget_logit_lens"] == max(by_layer)
    assert lens["last_layer_gap"] < 1e-5
    assert abs(by_layer[0] - by_layer[-1]) > 1e-3  # the earlier layers are read through the lens, not copied


def _other_architecture(name: str):
    import transformers as T

    torch.manual_seed(0)
    small = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=32)
    if name == "gpt2":  # transformer.ln_f, lm_head
        return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=3, n_head=2))
    if name == "gpt_neox":  # gpt_neox.final_layer_norm, embed_out
        return T.GPTNeoXForCausalLM(T.GPTNeoXConfig(intermediate_size=64, **small))
    if name == "opt":  # model.decoder.final_layer_norm
        return T.OPTForCausalLM(T.OPTConfig(ffn_dim=64, word_embed_proj_dim=32, **small))
    # model.norm, and tanh soft-capping of the final logits (strong here, so leaving it out would show)
    return T.Gemma2ForCausalLM(T.Gemma2Config(num_key_value_heads=2, intermediate_size=64, head_dim=16,
                                              final_logit_softcapping=0.5, **small))


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "opt", "gemma2"])
def test_the_lens_is_the_models_output_on_other_architectures(name, toy_data):
    model = _other_architecture(name).eval()
    ev = Evaluator(model, toy_data.tokenizer, batch_size=4)
    lens, own = ev.logit_lens(toy_data.forget), ev.score(toy_data.forget)
    ev.run()
    summed, counts = lens.get()
    assert summed.shape == (len(toy_data.forget), 3)
    np.testing.assert_allclose(summed[:, -1], own.get()[0], rtol=1e-5, atol=1e-5)
    assert counts.tolist() == own.get()[1].tolist()


def test_the_layers_are_read_during_the_scoring_pass_not_in_another_forward(model, tokenizer, fmt, tiny_splits):
    rows_forwarded: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda _m, args, kwargs: rows_forwarded.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        splits = copy.copy(tiny_splits)
        splits.holdout = [{"question": "Who painted the fence?", "answer": "Tom painted the fence."}]
        for privacy in (False, True):  # the forget answers ride on the score pass, or on the token-statistics pass
            rows_forwarded.clear()
            _eval(model, tokenizer, fmt, _data(splits), ["forget_prob"], privacy=privacy)
            plain = sum(rows_forwarded)
            rows_forwarded.clear()
            result = _eval(model, tokenizer, fmt, _data(splits), ["forget_prob", *BOTH], privacy=privacy)
            assert sum(rows_forwarded) == plain
            assert "readout" in result["passes"]["seconds"]
        rows_forwarded.clear()
        _eval(model, tokenizer, fmt, _data(splits), BOTH)
        assert sum(rows_forwarded) == len(splits.forget)  # each forget answer once, for both metrics
    finally:
        handle.remove()


def test_the_probe_fitted_on_the_first_model_is_applied_to_later_ones(fitted, tokenizer, fmt, tiny_splits):
    data = _data(tiny_splits)
    start = _eval(fitted, tokenizer, fmt, data, BOTH)
    probe = start["per_sample"]["linear_probe"]
    assert probe["fitted_on"] == FITTED_HERE and probe["layer"] == 1  # the middle of 3 blocks
    assert start["metrics"]["forget_linear_probe"] >= 0.9
    fitted_probe = data.probes[1]

    random_weights = _three_layers(tokenizer, seed=1)  # same architecture, weights never trained
    other = _eval(random_weights, tokenizer, fmt, data, BOTH)
    assert other["per_sample"]["linear_probe"]["fitted_on"] == FITTED_EARLIER
    assert data.probes[1] is fitted_probe  # not refitted on the evaluated model
    assert other["metrics"]["forget_linear_probe"] < start["metrics"]["forget_linear_probe"] - 0.3

    own = _eval(random_weights, tokenizer, fmt, _data(tiny_splits), ["forget_linear_probe"])  # fitted on itself
    assert own["metrics"]["forget_linear_probe"] > other["metrics"]["forget_linear_probe"]


def test_fit_on_one_model_and_evaluate_another(fitted, tokenizer, fmt, tiny_splits):
    data = _data(tiny_splits)
    fit_forget_probe(fitted, tokenizer, data, fmt, EvalSection())
    same = _eval(fitted, tokenizer, fmt, data, ["forget_linear_probe"])
    assert same["per_sample"]["linear_probe"]["fitted_on"] == FITTED_EARLIER
    assert same["metrics"]["forget_linear_probe"] >= 0.9


def test_eval_metrics_selects_them_and_nothing_else_runs(model, tokenizer, fmt, tiny_splits):
    cfg = validate_recipe({"data": {"benchmark": "tofu", "forget_split": "forget01"}, "eval": {"metrics": BOTH, "max_new_tokens": 2}}, "t").eval
    data = _data(tiny_splits)
    result = evaluate(model, tokenizer, data, fmt, cfg, progress=False)
    assert list(result["metrics"]) == BOTH
    assert result["passes"]["sequences"] == {"score": len(tiny_splits.forget)}  # no generation, no other split
    assert set(result["per_sample"]) == {"logit_lens", "linear_probe"}
    assert {"forget_logit_lens", "forget_linear_probe"} <= set(TofuBenchmark().metric_names(data, cfg))


def test_a_cached_world_evaluation_still_fits_the_probe_on_the_world_model(cache_dir, isolated_env):
    from unlearnkit.benchmarks.suite import load_benchmark, world_model_eval
    from unlearnkit.data.formats import get_format

    recipe = validate_recipe({"data": {"benchmark": "world"}, "eval": {"metrics": ["forget_linear_probe"]},
                              "world": {"size": "small", "cache_dir": str(cache_dir)}}, "t")
    fmt = get_format(recipe.data.format)
    results = []
    for _ in range(2):  # computed, then read back from the cache
        data = load_benchmark(recipe.data, recipe.world, log=lambda m: None, progress=False)
        results.append(world_model_eval(data, "target", recipe, fmt, progress=False))
        assert list(data.probes) == [results[-1]["per_sample"]["linear_probe"]["layer"]]
    assert results[0] == results[1]
