"""SURE (`train.sure_percentile`): only the weight tensors with the largest forget-gradient norms train; the
rest stay exactly as they were — with three bases."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.data.batch import collate
from unlearnkit.losses import nll
from unlearnkit.registry import METHODS


def forget_gradient_norms(model, data) -> dict[str, float]:
    """Norms of the gradient of the chunk-weighted forget NLL (4 rows per chunk, as the trainer takes it)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows = data.forget[:32]
    loss = sum(nll(model, collate(rows[i:i + 4], data.pad_id)) * len(rows[i:i + 4]) / len(rows)
               for i in range(0, len(rows), 4))
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: 0.0 if g is None else float(g.norm()) for (n, _), g in zip(named, grads)}


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "npo"])
def test_only_the_most_salient_tensors_train(name, tiny_model, toy_data, train_tiny):
    norms = forget_gradient_norms(tiny_model, toy_data)
    threshold = torch.quantile(torch.tensor(list(norms.values())), 0.75)
    salient = {n for n, v in norms.items() if v >= threshold and v > 0}
    run = train_tiny(METHODS.build(name), 3, sure_percentile=75)
    assert set(run.trained_names) == salient and 0 < len(salient) < len(norms) / 2
    start = dict(tiny_model.named_parameters())
    for n, p in run.model.named_parameters():
        changed = not torch.equal(p, start[n])
        assert changed == (n in salient), n
    assert run.trainable_params == sum(start[n].numel() for n in salient)


def test_percentile_zero_is_off(train_tiny):
    plain, sure = train_tiny(METHODS.build("grad_diff"), 2), train_tiny(METHODS.build("grad_diff"), 2, sure_percentile=0)
    assert plain.losses == sure.losses and plain.trained_names == sure.trained_names


def test_sure_percentile_is_a_recipe_field_with_a_range():
    from unlearnkit.errors import UnlearnError
    from unlearnkit.recipe import load_recipe

    assert load_recipe("default", ["train.sure_percentile=90"]).train.sure_percentile == 90
    with pytest.raises(UnlearnError, match="sure_percentile"):
        load_recipe("default", ["train.sure_percentile=100"])
