"""The public Python API on the small tiny world: unlearn(), evaluate(), run(), list_components()."""

from __future__ import annotations

import pytest

import unlearnkit


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    import torch

    from unlearnkit.world.build import ensure_world

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache = tmp_path_factory.getbasetemp() / "unlearnkit-cache"  # the session cache (conftest: cache_dir)
    yield ensure_world(cache, size="small", progress=False, log=lambda message: None), cache
    torch.set_num_threads(threads)


def test_unlearn_then_evaluate_lowers_forget_probability(small_world):
    from unlearnkit.model import load_model, load_tokenizer

    art, _ = small_world
    model, tokenizer = load_model(str(art.target_dir)), load_tokenizer(str(art.target_dir))
    before = unlearnkit.evaluate(model, tokenizer, art.world, max_new_tokens=8)
    result = unlearnkit.unlearn(model, tokenizer, art.world.forget, art.world.retain,
                                method={"name": "npo", "beta": 0.1}, steps=10, lr=5e-4, batch_size=4, progress=False)
    after = unlearnkit.evaluate(result.model, tokenizer, art.world, max_new_tokens=8)
    assert result.steps == 10 and result.trainable_params == result.total_params
    assert after["metrics"]["forget_prob"] < before["metrics"]["forget_prob"]
    assert len(after["forget_truth_ratios"]) == len(art.world.forget)


def test_unlearn_needs_retain_rows_for_retain_methods(small_world):
    from unlearnkit.model import load_model, load_tokenizer

    art, _ = small_world
    model, tokenizer = load_model(str(art.target_dir)), load_tokenizer(str(art.target_dir))
    with pytest.raises(unlearnkit.UnlearnError, match="retain"):
        unlearnkit.unlearn(model, tokenizer, art.world.forget, None, method="grad_diff", steps=1)
    result = unlearnkit.unlearn(model, tokenizer, art.world.forget, None, method="grad_ascent", steps=2,
                                batch_size=4, progress=False)
    assert result.steps == 2


def test_run_and_list_components(small_world, tmp_path, monkeypatch):
    _, cache = small_world
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(cache))
    report = unlearnkit.run("default", ["world.size=small", "train.steps=2", "eval.before=false"],
                            out_dir=str(tmp_path / "run"), progress=False)
    assert report["after"]["forget_prob"] >= 0 and (tmp_path / "run" / "report.json").is_file()
    assert "npo" in unlearnkit.list_components("methods")
    assert "default" in unlearnkit.list_components("recipes")
    assert "openunlearning" in unlearnkit.list_components("formats")
    with pytest.raises(unlearnkit.UnlearnError, match="did you mean 'methods'"):
        unlearnkit.list_components("method")
