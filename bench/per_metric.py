"""Two per-metric evaluators for `eval_throughput.py`: what evaluators that compute each metric on its own do.

`openunlearning_style` follows OpenUnlearning's TOFU evaluation as ../shared/specs/openunlearning.md describes
it: metrics one after another, each re-tokenising its dataset and running its own pass in fixed batches of 32
rows in dataset order (right-padded for likelihoods, left-padded for generation), the loss a cross-entropy
over the full B×T×V logits, HF `generate` for the ROUGE sets, GradNorm one sample per backward; dependent
metrics (truth ratio, model utility) reuse their parents' results as its `pre_compute` does, so nothing is
computed twice that OpenUnlearning would not compute twice.

`lean` is the same list of passes through unlearnkit's own pass functions (length-sorted batches, the
float32 log-softmax over supervised positions only): it isolates what planning and deduplication save.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

PASSES = (("forget", True), ("retain", True), ("real_authors", False), ("world_facts", False))


def _batches(examples: list, size: int):
    for start in range(0, len(examples), size):
        yield examples[start:start + size]


@torch.no_grad()
def _sequence_nll(model, examples, pad_id: int, size: int = 32) -> None:
    """OpenUnlearning's probability pass: full-logit cross-entropy summed over the answer tokens."""
    from unlearnkit.data.batch import collate

    device = next(model.parameters()).device
    for chunk in _batches(examples, size):
        batch = collate(chunk, pad_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch.labels[:, 1:], ignore_index=-100,
                               reduction="none")
        loss.sum(-1).tolist()


@torch.no_grad()
def _token_attack(model, examples, pad_id: int, kind: str, size: int = 32) -> None:
    """One MIA / memorisation metric's own pass over the full log-softmax (Min-K%++ needs its moments)."""
    from unlearnkit.data.batch import collate

    device = next(model.parameters()).device
    for chunk in _batches(examples, size):
        batch = collate(chunk, pad_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        labels = batch.labels[:, 1:]
        if kind in ("extraction_strength", "exact_memorization"):
            (logits.argmax(-1) == labels).tolist()
            continue
        logp = torch.log_softmax(logits.float(), -1)
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        if kind == "min_k_plus_plus":
            probs = logp.exp()
            mu = (probs * logp).sum(-1)
            sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=1e-6).sqrt()
            picked = (picked - mu) / sigma
        picked.masked_fill(labels == -100, 0.0).tolist()


@torch.no_grad()
def _generate(model, prompts: list[list[int]], pad_id: int, max_new_tokens: int, size: int = 32) -> None:
    from unlearnkit.data.batch import collate_prompts

    device = next(model.parameters()).device
    for chunk in _batches(prompts, size):
        ids, mask = collate_prompts(chunk, pad_id)
        model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                       do_sample=False, pad_token_id=pad_id)


def openunlearning_style(model, tokenizer, splits, fmt, max_new_tokens: int) -> float:
    from unlearnkit.benchmarks.gradnorm import gradnorm_scores

    pad = tokenizer.pad_token_id
    started = time.perf_counter()
    for name, paraphrased in PASSES:
        rows = getattr(splits, name)
        _sequence_nll(model, [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows], pad)  # Q_A_Prob
        if paraphrased:  # Q_A_PARA_Prob
            _sequence_nll(model, [fmt.encode(tokenizer, r["question"], r["paraphrased_answer"]) for r in rows], pad)
        _sequence_nll(model, [fmt.encode(tokenizer, r["question"], a) for r in rows for a in r["perturbed_answer"]],
                      pad)  # Q_A_PERT_Prob (truth ratio and the normalised probability reuse these)
        _generate(model, [fmt.prompt_ids(tokenizer, r["question"]) for r in rows], pad, max_new_tokens)  # ROUGE
    rows = list(splits.forget) + list(splits.holdout)
    for kind in ("loss", "zlib", "min_k", "min_k_plus_plus", "extraction_strength", "exact_memorization"):
        examples = [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows]
        if kind in ("loss", "zlib"):
            _sequence_nll(model, examples, pad)
        else:
            _token_attack(model, examples, pad, kind)
    gradnorm_scores(model, [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows], pad, batch_size=1)
    return time.perf_counter() - started


def lean(model, tokenizer, splits, fmt, max_new_tokens: int) -> float:
    from unlearnkit.benchmarks.generation import generate_greedy
    from unlearnkit.benchmarks.gradnorm import gradnorm_scores
    from unlearnkit.benchmarks.passes import score_examples, token_statistics

    pad = tokenizer.pad_token_id
    started = time.perf_counter()
    for name, paraphrased in PASSES:
        rows = getattr(splits, name)
        score_examples(model, [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows], pad, 32)  # prob
        truth = [fmt.encode(tokenizer, r["question"], a) for r in rows
                 for a in ([r["paraphrased_answer"]] if paraphrased else [r["answer"]]) + list(r["perturbed_answer"])]
        score_examples(model, truth, pad, 32)  # truth ratio
        generate_greedy(model, tokenizer, [fmt.prompt_ids(tokenizer, r["question"]) for r in rows],
                        max_new_tokens=max_new_tokens, batch_size=32)  # ROUGE
    rows = list(splits.forget) + list(splits.holdout)
    for _ in ("loss", "zlib"):
        score_examples(model, [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows], pad, 32)
    for _ in ("min_k", "min_k_plus_plus", "extraction_strength", "exact_memorization"):
        token_statistics(model, [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows], pad, 32)
    gradnorm_scores(model, [fmt.encode(tokenizer, r["question"], r["answer"]) for r in rows], pad, batch_size=1)
    return time.perf_counter() - started
