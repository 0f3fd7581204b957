"""GradNorm scores: many samples per backward (torch.func) give the numbers of one backward per sample."""

from __future__ import annotations

import numpy as np

from unlearnkit.benchmarks.gradnorm import gradnorm_scores
from unlearnkit.metrics import mia


def test_batched_per_sample_gradients_equal_one_backward_per_sample(model, tokenizer, fmt, monkeypatch):
    import unlearnkit.benchmarks.gradnorm as gradnorm

    rows = [("Who wrote it?", "Ana Ruiz wrote it in Lima."), ("Where?", "Lima."), ("What genre?", "Crime novels, mostly."),
            ("When?", "In 1990"), ("Why?", "Because she could, and because the town needed a story.")]
    examples = [fmt.encode(tokenizer, q, a) for q, a in rows]
    one_by_one = gradnorm_scores(model, examples, tokenizer.pad_token_id, batch_size=1)
    with monkeypatch.context() as patch:  # the batched path must run, not fall back
        patch.setattr(gradnorm, "_one_by_one", lambda *a: (_ for _ in ()).throw(AssertionError("fell back")))
        batched = gradnorm_scores(model, examples, tokenizer.pad_token_id, batch_size=4, max_bytes=1 << 30)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    # the score of one sample is the mean over parameter tensors of the gradient's 2-norm
    import torch

    from unlearnkit.data.batch import collate
    from unlearnkit.losses import token_logprobs

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    batch = collate([examples[0]], tokenizer.pad_token_id)
    model.train()
    picked, mask = token_logprobs(model(input_ids=batch.input_ids).logits, batch.labels)
    positions = mask[0].nonzero().flatten()[:-1]
    grads = torch.autograd.grad(-picked[0, positions].mean(), params, allow_unused=True)
    model.eval()
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)
    assert abs(batched[0] - mia.gradnorm_score(grads)) < 1e-5


def test_a_model_with_edits_falls_back_to_one_backward_per_sample(model, tokenizer, fmt):
    import copy

    from unlearnkit.model.edits import add_edit

    edited = copy.deepcopy(model)
    add_edit(edited, [0], rank=2)
    examples = [fmt.encode(tokenizer, q, a) for q, a in (("Who?", "Ana."), ("Where?", "Lima, Peru."))]
    scores = gradnorm_scores(edited, examples, tokenizer.pad_token_id, batch_size=4, max_bytes=1 << 30)
    assert scores.shape == (2,) and np.all(scores > 0)
    np.testing.assert_allclose(scores, gradnorm_scores(edited, examples, tokenizer.pad_token_id, batch_size=1))
