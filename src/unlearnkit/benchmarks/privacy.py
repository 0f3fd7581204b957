"""Privacy metrics of a forget set against a holdout set: six MIAs, privleak, extraction strength and
exact memorisation, with OpenUnlearning's definitions (formulas in ``unlearnkit.metrics.mia`` and
``unlearnkit.metrics.memorization``), from as few passes as the metrics allow:

* ONE teacher-forced pass over forget + holdout (``passes.token_statistics``) gives the per-token
  log-probs, the log-prob moments μ_t, σ_t² and the argmax predictions: LOSS, ZLib, Min-K%, Min-K%++,
  extraction strength and exact memorisation all come from it;
* one pass of the reference model (``passes.score_examples``), only when ``reference_model`` is given;
* one backward pass per sample for GradNorm (batch size 1 and ``train()`` mode, as in OpenUnlearning;
  dropout, if the model has any, is therefore active). Gradients are taken with ``torch.autograd.grad``,
  so the parameters' ``.grad`` are left untouched. When no parameter requires a gradient (a frozen model),
  all of them are made to for the pass and restored afterwards.

AUCs use OpenUnlearning's convention (holdout = positive class, scores are loss-like): 1 → the forget set
looks seen, 0.5 → indistinguishable. ``privleak`` compares this model's Min-K% AUC with
``retain_min_k_auc`` (the retain model's Min-K% AUC on the same sets) and is None without it
(OpenUnlearning would fall back to 0.5; pass ``retain_min_k_auc=0.5`` for that number). Extraction
strength keeps OpenUnlearning's 1/N floor and, like exact memorisation, is reported on the forget set.
ZLib compresses the row's answer string itself (OpenUnlearning decodes the answer tokens back to text,
which gives the same string unless a BPE merge straddles the prompt/answer boundary).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unlearnkit.benchmarks.passes import model_device, score_examples, token_statistics
from unlearnkit.data.batch import Example, collate
from unlearnkit.model.edits import edit_positions
from unlearnkit.errors import UnlearnError
from unlearnkit.model.hooks import prompt_end_positions
from unlearnkit.losses import logits_of, token_logprobs
from unlearnkit.metrics import memorization, mia

AUC_KEYS = ("mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus")


def _encode(rows: list[dict], split: str, fmt: Any, tokenizer: Any) -> list[Example]:
    if not rows:
        raise UnlearnError(f"privacy metrics need at least one {split} row; the {split} set is empty")
    examples = []
    for index, row in enumerate(rows):
        missing = [key for key in ("question", "answer") if key not in row]
        if missing:
            raise UnlearnError(f"{split} row {index}: missing {', '.join(missing)} (row has {', '.join(sorted(row))});"
                               " privacy metrics need TOFU-schema rows with 'question' and 'answer'")
        examples.append(fmt.encode(tokenizer, row["question"], row["answer"]))
    return examples


def gradnorm_scores(model: Any, examples: list[Example], pad_id: int, p: float = 2.0) -> np.ndarray:
    """GradNorm per example: one sample at a time in train mode, L = −mean token log-prob without the EOS,
    score = mean over parameter tensors of ‖∂L/∂W‖_p."""
    params = [param for param in model.parameters() if param.requires_grad]
    enabled: list[torch.nn.Parameter] = []
    if not params:
        enabled = list(model.parameters())
        for param in enabled:
            param.requires_grad_(True)
        params = enabled
    device, was_training = model_device(model), model.training
    scores = np.zeros(len(examples), dtype=np.float64)
    try:
        model.train()
        with torch.enable_grad():
            for index, example in enumerate(examples):
                batch = collate([example], pad_id).to(device)
                with edit_positions(model, prompt_end_positions(batch.labels)):
                    picked, mask = token_logprobs(logits_of(model, batch), batch.labels)
                positions = mask[0].nonzero().flatten()[:-1]  # drop the final labelled token (EOS)
                if positions.numel() == 0:
                    scores[index] = 0.0
                    continue
                loss = -picked[0, positions].mean()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                scores[index] = mia.gradnorm_score(grads, p=p)
    finally:
        model.train(was_training)
        for param in enabled:
            param.requires_grad_(False)
    return scores


def privacy_metrics(
    model: Any,
    tokenizer: Any,
    forget_rows: list[dict],
    holdout_rows: list[dict],
    fmt: Any,
    *,
    reference_model: Any = None,
    retain_min_k_auc: float | None = None,
    batch_size: int = 32,
    k: float = 0.4,
) -> dict[str, Any]:
    """The six MIA AUCs, privleak, extraction strength, exact memorisation, and ``per_sample`` scores.

    Returns ``{mia_loss, mia_zlib, mia_reference (None without reference_model), mia_gradnorm, mia_min_k,
    mia_min_k_plus_plus, privleak (None without retain_min_k_auc), extraction_strength, exact_memorization,
    per_sample: {"forget": {...}, "holdout": {...}}}``; each split's per-sample dict has the lists
    ``loss, zlib, reference (if a reference model), gradnorm, min_k, min_k_plus_plus,
    extraction_strength, exact_memorization`` in the rows' order.
    """
    examples = {"forget": _encode(forget_rows, "forget", fmt, tokenizer),
                "holdout": _encode(holdout_rows, "holdout", fmt, tokenizer)}
    everything = examples["forget"] + examples["holdout"]
    n_forget = len(examples["forget"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stats = token_statistics(model, everything, pad_id, batch_size=batch_size)

    summed = np.array([s.logprobs.sum() for s in stats], dtype=np.float64)
    counts = np.array([s.logprobs.size for s in stats], dtype=np.int64)
    avg_loss = mia.loss_scores(summed, counts)
    columns: dict[str, np.ndarray] = {
        "loss": avg_loss,
        "zlib": mia.zlib_scores(avg_loss, [row["answer"] for row in forget_rows + holdout_rows]),
        "gradnorm": gradnorm_scores(model, everything, pad_id),
        # token-level attacks and memorisation leave out the final labelled token (the EOS)
        "min_k": np.array([mia.min_k_score(s.logprobs[:-1], k) for s in stats]),
        "min_k_plus_plus": np.array([mia.min_k_plus_plus_score(s.logprobs[:-1], s.mean[:-1], s.variance[:-1], k)
                                     for s in stats]),
        "extraction_strength": np.array([memorization.extraction_strength(s.predictions[:-1], s.targets[:-1])
                                         for s in stats]),
    }
    exact = [memorization.exact_memorization(s.predictions[:-1], s.targets[:-1]) for s in stats]
    if reference_model is not None:
        ref_summed, ref_counts = score_examples(reference_model, everything, pad_id, batch_size=batch_size)
        columns["reference"] = mia.reference_scores(avg_loss, mia.loss_scores(ref_summed, ref_counts))

    def auc_of(name: str) -> float | None:
        if name not in columns:
            return None
        return mia.auc(columns[name][:n_forget], columns[name][n_forget:])

    report: dict[str, Any] = {
        "mia_loss": auc_of("loss"),
        "mia_zlib": auc_of("zlib"),
        "mia_reference": auc_of("reference"),
        "mia_gradnorm": auc_of("gradnorm"),
        "mia_min_k": auc_of("min_k"),
        "mia_min_k_plus_plus": auc_of("min_k_plus_plus"),
    }
    report["privleak"] = None if retain_min_k_auc is None else mia.privleak(report["mia_min_k"], retain_min_k_auc)
    report["extraction_strength"] = float(np.mean(columns["extraction_strength"][:n_forget]))
    report["exact_memorization"] = memorization.mean_exact_memorization(exact[:n_forget])

    per_sample: dict[str, dict[str, list]] = {}
    for split, part in (("forget", slice(0, n_forget)), ("holdout", slice(n_forget, None))):
        per_sample[split] = {name: [float(v) for v in values[part]] for name, values in columns.items()}
        per_sample[split]["exact_memorization"] = exact[part]
    report["per_sample"] = per_sample
    return report


def text_min_k_auc(model: Any, tokenizer: Any, forget_texts: list[str], holdout_texts: list[str], *,
                   k: float = 0.4, batch_size: int = 32, max_length: int | None = 512) -> float:
    """Min-K% AUC (forget vs holdout) on raw texts, every token scored (MUSE's privleak corpus)."""
    from unlearnkit.data.formats import encode_text

    if not forget_texts or not holdout_texts:
        raise UnlearnError("text privleak needs forget and holdout texts; one of them is empty")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = [encode_text(tokenizer, t, max_length=max_length) for t in [*forget_texts, *holdout_texts]]
    stats = token_statistics(model, examples, pad_id, batch_size)
    scores = np.array([mia.min_k_score(s.logprobs, k) for s in stats])
    return mia.auc(scores[: len(forget_texts)], scores[len(forget_texts):])


def muse_privleak(retain_auc: float | None = None, **options: Any):
    """A `muse_suite(privacy_fn=...)`: the unlearned model's Min-K% AUC on MUSE's privleak texts and
    privleak against `retain_auc` (the retain model's AUC on the same texts; None leaves privleak out)."""

    def privacy_fn(model: Any, tokenizer: Any, texts: dict) -> dict:
        value = text_min_k_auc(model, tokenizer, list(texts["forget"]), list(texts["holdout"]), **options)
        return {"mia_min_k": value, "privleak": None if retain_auc is None else mia.privleak(value, retain_auc)}

    return privacy_fn
