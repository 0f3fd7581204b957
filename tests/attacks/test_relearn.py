"""The relearning attack: a seeded fine-tune of a copy (the original is untouched, GRUN edits are
kept and trained at the prompt's end), and `forgetting_kept`'s definition."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.attacks.relearn import RelearnObjective, forgetting_kept, relearn
from unlearnkit.model.edits import add_edit, has_edits


class IdFormat:
    """Rows whose question/answer are token-id lists (the toy vocabulary): prompt unlabelled."""

    def encode(self, tokenizer, question, answer, max_length=None):
        return self.make(list(question), list(answer))


class Tok:
    pad_token_id = 0
    eos_token_id = 2


@pytest.fixture
def id_format(make_example):
    fmt = IdFormat()
    fmt.make = make_example
    return fmt


def _rows(toy_data):
    rows = []
    for ex in toy_data.forget:
        labelled = [i for i, label in enumerate(ex.labels) if label != -100]
        rows.append({"question": ex.input_ids[1:labelled[0]], "answer": ex.input_ids[labelled[0]:-1]})
    return rows


def _forget_nll(model, toy_data):
    from unlearnkit.data.batch import collate
    from unlearnkit.losses import nll

    with torch.no_grad():
        return float(nll(model, collate(toy_data.forget, toy_data.pad_id)))


def test_relearn_trains_a_copy_and_lowers_forget_loss(tiny_model, toy_data, id_format):
    original = copy.deepcopy(tiny_model.state_dict())
    for p in tiny_model.parameters():  # as after unlearning a subset: relearning must unfreeze
        p.requires_grad_(False)
    before = _forget_nll(tiny_model, toy_data)
    relearned = relearn(tiny_model, Tok(), _rows(toy_data), id_format, n_samples=8, steps=15, lr=1e-2,
                        batch_size=4, seed=0)
    assert relearned is not tiny_model
    assert _forget_nll(relearned, toy_data) < before - 0.5
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert not any(p.requires_grad for p in tiny_model.parameters())


def test_relearn_is_seeded(tiny_model, toy_data, id_format):
    kwargs = dict(n_samples=3, steps=3, lr=1e-2, batch_size=2)
    a = relearn(tiny_model, Tok(), _rows(toy_data), id_format, seed=1, **kwargs)
    b = relearn(tiny_model, Tok(), _rows(toy_data), id_format, seed=1, **kwargs)
    c = relearn(tiny_model, Tok(), _rows(toy_data), id_format, seed=2, **kwargs)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_relearn_keeps_grun_edits_and_trains_them_unless_told(tiny_model, toy_data, id_format):
    add_edit(tiny_model, layers=[1], rank=2)
    edit = {n: p.clone() for n, p in tiny_model.named_parameters() if "unlearn_edits" in n}
    kwargs = dict(n_samples=8, steps=3, lr=1e-2, batch_size=4, seed=0)
    trained = relearn(tiny_model, Tok(), _rows(toy_data), id_format, **kwargs)
    assert has_edits(trained)
    after = dict(trained.named_parameters())
    assert any(not torch.equal(after[n], edit[n]) for n in edit)
    frozen = relearn(tiny_model, Tok(), _rows(toy_data), id_format, train_edits=False, **kwargs)
    after = dict(frozen.named_parameters())
    assert all(torch.equal(after[n], edit[n]) for n in edit)
    assert any(not torch.equal(p, dict(tiny_model.named_parameters())[n]) for n, p in after.items() if n not in edit)


def test_relearn_objective_puts_edits_at_the_prompt_end(tiny_model, toy_batch):
    from unlearnkit.model.edits import edit_stack

    add_edit(tiny_model, layers=[1], rank=2)
    seen = []
    stack = edit_stack(tiny_model)
    original = stack._after_block

    def spy(layer, module, args, output):
        seen.append(stack.positions.clone())
        return original(layer, module, args, output)

    stack._after_block = spy
    stack.attach(tiny_model)
    RelearnObjective().loss(tiny_model, toy_batch, None)
    from unlearnkit.model.hooks import prompt_end_positions

    assert seen and torch.equal(seen[0], prompt_end_positions(toy_batch.forget.labels))


def test_relearn_rejects_empty_rows(tiny_model, id_format):
    from unlearnkit.errors import UnlearnError

    with pytest.raises(UnlearnError, match="forget"):
        relearn(tiny_model, Tok(), [], id_format)


def test_forgetting_kept_definition():
    before, unlearned = {"forget_prob": 0.9}, {"forget_prob": 0.1}
    assert forgetting_kept(before, unlearned, {"forget_prob": 0.1}) == pytest.approx(1.0)  # nothing recovered
    assert forgetting_kept(before, unlearned, {"forget_prob": 0.9}) == pytest.approx(0.0)  # fully recovered
    assert forgetting_kept(before, unlearned, {"forget_prob": 0.7}) == pytest.approx(0.25)
    assert forgetting_kept(before, unlearned, {"forget_prob": 0.05}) == 1.0  # clipped
    assert forgetting_kept(before, unlearned, {"forget_prob": 0.95}) == 0.0  # clipped
    assert forgetting_kept(before, {"forget_prob": 0.9}, {"forget_prob": 0.5}) is None  # no effect to keep
    assert forgetting_kept(before, {"forget_prob": 0.95}, {"forget_prob": 0.5}) is None  # unlearning raised it
    assert forgetting_kept(None, unlearned, {"forget_prob": 0.5}) is None  # before not evaluated
    assert forgetting_kept(before, unlearned, {"forget_prob": float("nan")}) is None
    higher = dict(key="forget_loss", lower_is_forgotten=False)
    assert forgetting_kept({"forget_loss": 1.0}, {"forget_loss": 3.0}, {"forget_loss": 2.5}, **higher) == pytest.approx(0.75)
    assert forgetting_kept({"forget_loss": 1.0}, {"forget_loss": 0.5}, {"forget_loss": 2.5}, **higher) is None
