"""Every method on real TOFU rows (../shared/data/tofu) with a model loaded by `from_pretrained` from a
local directory (the small world's target stands in for a TOFU-finetuned model), through the public
`unlearnkit.unlearn` API — the path a recipe pointing at a hub model takes, minus the download."""

from __future__ import annotations

import math

import pytest
import torch

import unlearnkit
from unlearnkit.registry import METHODS

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture(scope="module")
def tofu_rows():
    from unlearnkit.data.tofu import load_split, shared_tofu_dir

    tofu = shared_tofu_dir()
    if tofu is None or not (tofu / "forget01.json").is_file():
        pytest.skip("shared/data/tofu is not present")
    return load_split("forget01", tofu)[:16], load_split("retain99", tofu)[:16]


@pytest.fixture(scope="module")
def model_dir(cache_dir):
    from unlearnkit.world.build import ensure_world

    return str(ensure_world(cache_dir, size="small", progress=False, log=lambda message: None).target_dir)


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_method_trains_on_tofu_rows_with_a_pretrained_model(name, tofu_rows, model_dir, tmp_path):
    from unlearnkit.model import load_model, load_tokenizer

    forget, retain = tofu_rows
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = unlearnkit.unlearn(model, tokenizer, forget, retain, name, steps=2, batch_size=4, lr=1e-4,
                                progress=False, generic_texts=[r["answer"] for r in retain])
    assert result.steps == 2 and result.stopped is None
    assert all(math.isfinite(v) for v in result.losses)
    changed = [n for n, p in result.model.named_parameters() if n not in start or not torch.equal(p, start[n])]
    assert changed and 0 < result.trainable_params <= result.total_params
