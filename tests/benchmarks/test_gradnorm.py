"""GradNorm scores: many samples per backward (ghost norms for p = 2, torch.func otherwise) give the numbers of
one backward per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
        patch.setattr(gradnorm, "_ghost", lambda *a: None)  # torch.func's path
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


def _token_rows(pad: int) -> list:
    from unlearnkit.data.batch import Example

    rows = []
    for seed in range(7):
        length = 8 + 3 * seed
        ids = torch.randint(3, 90, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
        ids[length // 2] = pad  # the padding id inside an answer: that embedding row gets no gradient
        rows.append(Example(tuple(ids), tuple([-100] * (length // 3) + ids[length // 3:])))
    return rows + [Example((5, 6, 7), (-100, -100, -100))]  # nothing supervised: 0


def _llama(**extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, **extra))


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0))


def _lora():
    from unlearnkit.model import LoraSpec, wrap_lora

    return wrap_lora(_llama(), LoraSpec(r=4))


@pytest.mark.parametrize("build", [_llama, lambda: _llama(tie_word_embeddings=True), _qwen2, _lora],
                         ids=["llama", "tied-embeddings", "qwen2-biases", "lora"])
def test_ghost_norms_equal_one_backward_per_sample(build, monkeypatch):
    """p = 2 through Gram matrices (no per-sample gradient formed) gives one backward per sample's scores:
    linear layers, biases, embeddings (the padding row excluded), a table shared by input and output, norm
    scales, LoRA adapters only."""
    import unlearnkit.benchmarks.gradnorm as gradnorm

    net = build()
    examples = _token_rows(pad=0)
    one_by_one = gradnorm_scores(net, examples, 0, batch_size=1)
    ran = []
    original = gradnorm._ghost
    monkeypatch.setattr(gradnorm, "_ghost", lambda *a: ran.append(1) or original(*a))
    monkeypatch.setattr(gradnorm, "_one_by_one", lambda *a: (_ for _ in ()).throw(AssertionError("fell back")))
    ghost = gradnorm_scores(net, examples, 0, batch_size=3)
    assert ran and one_by_one[-1] == ghost[-1] == 0.0
    np.testing.assert_allclose(ghost, one_by_one, rtol=1e-5)
    assert all(p.grad is None for p in net.parameters())


def test_ghost_norms_decline_a_model_they_do_not_cover_and_a_disagreement(monkeypatch):
    """A parameter owned by another kind of module (GPT-2's Conv1D) means no ghost pass; so does a first-sample
    check that disagrees with autograd. Both fall back to one backward per sample."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import unlearnkit.benchmarks.gradnorm as gradnorm
    from unlearnkit.benchmarks import ghost_norms

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    assert ghost_norms.covered_modules(gpt2, list(gpt2.parameters())) is None
    examples = _token_rows(pad=0)[:3]
    np.testing.assert_allclose(gradnorm_scores(gpt2, examples, 0, batch_size=3),
                               gradnorm_scores(gpt2, examples, 0, batch_size=1), rtol=1e-6)
    net = _llama()
    wrong = ghost_norms.per_sample_norms
    monkeypatch.setattr(ghost_norms, "per_sample_norms", lambda *a: wrong(*a) * 1.01)
    assert gradnorm._ghost(net, examples, 0, list(net.named_parameters()), 3) is None
    empty_first = [_token_rows(pad=0)[-1], *examples]  # the check uses the first row with a token to score
    assert gradnorm._ghost(net, empty_first, 0, list(net.named_parameters()), 3) is None
    monkeypatch.setattr(ghost_norms, "per_sample_norms", wrong)
    assert gradnorm._ghost(net, examples, 0, list(net.named_parameters()), 3) is not None


def test_ghost_gram_of_ids_and_vectors_is_the_one_hot_product():
    """The embedding factor (token ids, one-hot) against itself and against dense vectors, as explicit one-hots."""
    from unlearnkit.benchmarks.ghost_norms import _gram

    ids = torch.tensor([[1, 3, 1], [0, 2, 2]])
    dense = torch.randn(2, 4, 5)
    hot = torch.nn.functional.one_hot(ids, 5).float()
    torch.testing.assert_close(_gram(("ids", ids, 5), ("ids", ids, 5)), hot @ hot.transpose(1, 2))
    torch.testing.assert_close(_gram(("ids", ids, 5), ("dense", dense, 5)), hot @ dense.transpose(1, 2))
    torch.testing.assert_close(_gram(("dense", dense, 5), ("ids", ids, 5)), dense @ hot.transpose(1, 2))
