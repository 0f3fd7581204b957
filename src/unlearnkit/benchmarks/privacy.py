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
``retain_min_k_auc`` (the retain model's Min-K% AUC on the same sets), and without one with 0.5, as
OpenUnlearning does; ``privleak_reference`` records which. Extraction
strength keeps OpenUnlearning's 1/N floor and, like exact memorisation, is reported on the forget set.
ZLib compresses the row's answer string itself (OpenUnlearning decodes the answer tokens back to text,
which gives the same string unless a BPE merge straddles the prompt/answer boundary).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from unlearnkit.benchmarks.passes import token_statistics
from unlearnkit.data.batch import Example
from unlearnkit.data.pairing import encode_qa_rows
from unlearnkit.errors import UnlearnError
from unlearnkit.metrics import memorization, mia

AUC_KEYS = ("mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus")


def _encode(rows: list[dict], split: str, fmt: Any, tokenizer: Any) -> list[Example]:
    return encode_qa_rows(rows, tokenizer, fmt, split, "privacy metrics")


PRIVACY_METRICS = ("mia_loss", "mia_zlib", "mia_reference", "mia_gradnorm", "mia_min_k", "mia_min_k_plus_plus",
                   "privleak", "extraction_strength", "exact_memorization")
DEFAULT_RETAIN_AUC = 0.5  # privleak's reference without a retain model (OpenUnlearning's default)


def plan_privacy(ev, forget_rows: list[dict], holdout_rows: list[dict], fmt: Any, *,
                 retain_min_k_auc: float | None = None, k: float = 0.4,
                 metrics: Sequence[str] | None = None) -> Callable[[], dict[str, Any]]:
    """Ask `ev` (an `Evaluator`) for the passes of the wanted privacy metrics (default: all of them) and
    return the function that computes them once `ev.run()` has run; see `privacy_metrics` for the result.

    Every metric but GradNorm comes from one token-statistics pass over forget + holdout (which also
    serves any other metric scoring the same sequences, e.g. TOFU's forget probability); GradNorm adds
    the per-sample gradient pass, the reference attack one pass of the evaluator's reference model."""
    wanted = set(PRIVACY_METRICS if metrics is None else metrics)
    examples = {"forget": _encode(forget_rows, "forget", fmt, ev.tokenizer),
                "holdout": _encode(holdout_rows, "holdout", fmt, ev.tokenizer)}
    everything = examples["forget"] + examples["holdout"]
    n_forget = len(examples["forget"])
    stats_request = ev.token_stats(everything)
    grad_request = ev.gradnorm(everything) if "mia_gradnorm" in wanted else None
    reference_request = (ev.reference_score(everything) if "mia_reference" in wanted and ev.reference_model
                         is not None else None)

    def finish() -> dict[str, Any]:
        stats = stats_request.get()
        summed = np.array([s.logprobs.sum() for s in stats], dtype=np.float64)
        counts = np.array([s.logprobs.size for s in stats], dtype=np.int64)
        avg_loss = mia.loss_scores(summed, counts)
        columns: dict[str, np.ndarray] = {
            "loss": avg_loss,
            "zlib": mia.zlib_scores(avg_loss, [row["answer"] for row in forget_rows + holdout_rows]),
            # token-level attacks and memorisation leave out the final labelled token (the EOS)
            "min_k": np.array([mia.min_k_score(s.logprobs[:-1], k) for s in stats]),
            "min_k_plus_plus": np.array([mia.min_k_plus_plus_score(s.logprobs[:-1], s.mean[:-1], s.variance[:-1], k)
                                         for s in stats]),
            "extraction_strength": np.array([memorization.extraction_strength(s.predictions[:-1], s.targets[:-1])
                                             for s in stats]),
        }
        if grad_request is not None:
            columns["gradnorm"] = grad_request.get()
        exact = [memorization.exact_memorization(s.predictions[:-1], s.targets[:-1]) for s in stats]
        if reference_request is not None:
            ref_summed, ref_counts = reference_request.get()
            columns["reference"] = mia.reference_scores(avg_loss, mia.loss_scores(ref_summed, ref_counts))

        def auc_of(name: str) -> float | None:
            return mia.auc(columns[name][:n_forget], columns[name][n_forget:]) if name in columns else None

        reference_auc = DEFAULT_RETAIN_AUC if retain_min_k_auc is None else retain_min_k_auc
        report: dict[str, Any] = {
            "mia_loss": auc_of("loss"), "mia_zlib": auc_of("zlib"), "mia_reference": auc_of("reference"),
            "mia_gradnorm": auc_of("gradnorm"), "mia_min_k": auc_of("min_k"),
            "mia_min_k_plus_plus": auc_of("min_k_plus_plus")}
        report["privleak"] = mia.privleak(report["mia_min_k"], reference_auc)
        report["extraction_strength"] = float(np.mean(columns["extraction_strength"][:n_forget]))
        report["exact_memorization"] = memorization.mean_exact_memorization(exact[:n_forget])
        report = {key: value for key, value in report.items() if key in wanted}
        per_sample: dict[str, dict[str, list]] = {}
        for split, part in (("forget", slice(0, n_forget)), ("holdout", slice(n_forget, None))):
            per_sample[split] = {name: [float(v) for v in values[part]] for name, values in columns.items()}
            per_sample[split]["exact_memorization"] = exact[part]
        report["per_sample"] = per_sample
        report["privleak_reference"] = privleak_reference(retain_min_k_auc)
        return report

    return finish


def privleak_reference(retain_min_k_auc: float | None) -> dict[str, Any]:
    """Which Min-K% AUC privleak was computed against (recorded next to it)."""
    if retain_min_k_auc is None:
        return {"auc": DEFAULT_RETAIN_AUC, "source": "default (no retain model: OpenUnlearning's reference AUC 0.5)"}
    return {"auc": float(retain_min_k_auc), "source": "retain model"}


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
    mia_min_k_plus_plus, privleak, extraction_strength, exact_memorization, per_sample: {"forget": {...},
    "holdout": {...}}, privleak_reference: {auc, source}}``; privleak is against ``retain_min_k_auc`` (the
    retain model's Min-K% AUC on the same sets), or against 0.5 without it, as OpenUnlearning does. Each
    split's per-sample dict has the lists ``loss, zlib, reference (if a reference model), gradnorm, min_k,
    min_k_plus_plus, extraction_strength, exact_memorization`` in the rows' order.
    """
    from unlearnkit.benchmarks.evaluator import Evaluator

    ev = Evaluator(model, tokenizer, batch_size=batch_size, reference_model=reference_model)
    finish = plan_privacy(ev, forget_rows, holdout_rows, fmt, retain_min_k_auc=retain_min_k_auc, k=k)
    ev.run()
    return finish()


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
    privleak against `retain_auc` (the retain model's AUC on the same texts; without one, 0.5)."""

    def privacy_fn(model: Any, tokenizer: Any, texts: dict) -> dict:
        value = text_min_k_auc(model, tokenizer, list(texts["forget"]), list(texts["holdout"]), **options)
        return {"mia_min_k": value, "privleak": mia.privleak(value, privleak_reference(retain_auc)["auc"])}

    return privacy_fn
