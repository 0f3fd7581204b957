"""Evaluation throughput: the planned Evaluator against a per-metric evaluator and a bare forward.

    python bench/eval_throughput.py                                   # CPU: a 5.7M Llama, TOFU forget10
    python bench/eval_throughput.py --shape 1b --dtype bfloat16 --device cuda --max-new-tokens 50

The model is a Llama built from its config (random weights: every pass does its full work whatever the
weights) with a byte-level BPE tokenizer trained on the TOFU files; `--shape 1b` is Llama-3.2-1B's shape.
Data: ../shared/data/tofu, forget10 (forget, retain, real authors, world facts, holdout10).

(a) **ours vs per-metric**: the TOFU suite plus the privacy suite through `benchmarks.suite.evaluate`
    (one planned set of passes) against two evaluators in `per_metric.py` that run one pass per metric,
    re-tokenising each time, in batches of 32: per split the probability, the truth ratio's answers and a
    generation for ROUGE; then one pass per privacy metric (LOSS, ZLib, Min-K%, Min-K%++, extraction
    strength, exact memorisation) and the per-sample GradNorm. `openunlearning_style` batches rows in
    dataset order and takes a cross-entropy over the full logits, as OpenUnlearning does; `lean` uses our
    own length-sorted pass functions (what planning alone saves). Target: per-metric / ours ≥ 3. Ours runs
    the metrics the per-metric evaluators compute: TOFU's default set without the white-box probes (the logit
    lens and the linear probe, which they do not have); ``--white-box`` times those two alone, on top.
(b) **scoring tokens/s vs a bare forward**: the suite's teacher-forced passes against a plain loop over the
    same sequences — sorted batches, the model's forward and a float32 log-softmax gather of the labels.
    Target: ours / bare ≥ 0.8.
(c) **breakdown**: sequences and seconds per pass of ours.
(d) with ``--gradnorm N``: GradNorm on N forget rows, one backward per sample against the batched path.
    Target on a GPU: ≥ 5×.
(e) with ``--white-box``: an evaluation of `forget_logit_lens` and `forget_linear_probe` alone (one scoring
    pass over the forget answers with layer readouts, and the probe's L-BFGS fit).
``--skip-suite`` leaves out (a)–(c)'s suite run and times the scoring pass alone against the bare loop.

Prints one JSON line per measurement (`--json` for the summary only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from shapes import SHAPES  # bench/shapes.py: the one definition of the benchmark shapes


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearnkit.data.tofu import load_tofu
    from unlearnkit.world.tokenizer import train_world_tokenizer

    splits = load_tofu(args.split, args.data_dir)
    texts = [r[k] for name in ("forget", "retain", "real_authors", "world_facts") for r in getattr(splits, name)
             for k in ("question", "answer")]
    tokenizer = train_world_tokenizer(texts, vocab_size=args.vocab)
    shape = dict(SHAPES[args.shape])  # the tokenizer's ids must fit: small takes its size, 1b keeps 128256
    shape["vocab_size"] = max(len(tokenizer), shape.get("vocab_size", 0))
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model = model.to(getattr(torch, args.dtype)).eval()
    return model, tokenizer, splits


def ours(model, tokenizer, splits, fmt, args, white_box: bool = False):
    """(seconds, result) of the suite: the per-metric evaluators' metrics, or with `white_box` the two probes alone."""
    from unlearnkit.benchmarks.base import WHITE_BOX_METRICS, BenchmarkData
    from unlearnkit.benchmarks.suite import evaluate
    from unlearnkit.benchmarks.tofu import TofuBenchmark
    from unlearnkit.recipe import EvalSection

    component = TofuBenchmark()
    data = BenchmarkData("tofu", splits, splits.forget, splits.retain, component=component)
    cfg = EvalSection(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                      max_tokens_per_batch=args.max_tokens)
    metrics = [m for m in component.metric_names(data, cfg) if (m in WHITE_BOX_METRICS) == white_box]
    started = time.perf_counter()
    result = evaluate(model, tokenizer, data, fmt, cfg, progress=False, metrics=metrics)
    return time.perf_counter() - started, result


def teacher_forced(tokenizer, splits, fmt) -> list:
    """Every distinct teacher-forced sequence of the TOFU and privacy suites."""

    seqs = {}
    for name, paraphrased in (("forget", True), ("retain", True), ("real_authors", False), ("world_facts", False)):
        for r in getattr(splits, name):
            answers = [r["answer"]] + ([r["paraphrased_answer"]] if paraphrased else []) + list(r["perturbed_answer"])
            for a in answers:
                e = fmt.encode(tokenizer, r["question"], a)
                seqs[(e.input_ids, e.labels)] = e
    for r in splits.holdout:
        e = fmt.encode(tokenizer, r["question"], r["answer"])
        seqs[(e.input_ids, e.labels)] = e
    return list(seqs.values())


def bare(model, tokenizer, splits, fmt, args) -> tuple[float, int]:
    """The same teacher-forced sequences as ours, through a plain loop (after one warm-up batch): (seconds, tokens)."""
    from unlearnkit.benchmarks.passes import _length_batches
    from unlearnkit.data.batch import collate

    examples = teacher_forced(tokenizer, splits, fmt)
    tokens = sum(len(e.input_ids) for e in examples)
    device = next(model.parameters()).device
    batches = _length_batches([len(e.input_ids) for e in examples], args.batch_size, args.max_tokens)

    def forward(indices) -> None:
        batch = collate([examples[i] for i in indices], tokenizer.pad_token_id).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        logp.gather(-1, batch.labels[:, 1:].clamp(min=0).unsqueeze(-1)).sum().item()

    with torch.no_grad():
        forward(batches[0])  # warm-up: kernels, allocator
        started = time.perf_counter()
        for indices in batches:
            forward(indices)
    return time.perf_counter() - started, tokens


def scoring_alone(model, tokenizer, splits, fmt, args) -> float:
    from unlearnkit.benchmarks.passes import score_examples

    examples = teacher_forced(tokenizer, splits, fmt)
    score_examples(model, examples[:8], tokenizer.pad_token_id, args.batch_size, max_tokens=args.max_tokens)
    started = time.perf_counter()
    score_examples(model, examples, tokenizer.pad_token_id, args.batch_size, max_tokens=args.max_tokens)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def gradnorm_paths(model, tokenizer, splits, fmt, n: int) -> dict:
    from unlearnkit.benchmarks import gradnorm

    examples = [fmt.encode(tokenizer, r["question"], r["answer"]) for r in list(splits.forget)[:n]]
    timings, scores = {}, {}
    for name, size in (("one_by_one", 1), ("batched", 16)):
        gradnorm.gradnorm_scores(model, examples[:2], tokenizer.pad_token_id, batch_size=size)  # warm-up
        if next(model.parameters()).is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        scores[name] = gradnorm.gradnorm_scores(model, examples, tokenizer.pad_token_id, batch_size=size)
        if next(model.parameters()).is_cuda:
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - started
    diff = float(abs(scores["one_by_one"] - scores["batched"]).max() / max(abs(scores["one_by_one"]).max(), 1e-12))
    return {"rows": n, "one_by_one_s": round(timings["one_by_one"], 3), "batched_s": round(timings["batched"], 3),
            "speedup": round(timings["one_by_one"] / timings["batched"], 2), "max_relative_difference": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/tofu"))
    parser.add_argument("--split", default="forget10")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary trained on the TOFU text")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=None, help="token budget of a scoring batch (ours, bare)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-per-metric", action="store_true", help="only (b) and (c): the per-metric run is slow")
    parser.add_argument("--gradnorm", type=int, default=0, help="(d): compare GradNorm paths on this many rows")
    parser.add_argument("--white-box", action="store_true", help="(e): time the logit lens and linear probe alone")
    parser.add_argument("--skip-suite", action="store_true", help="time the scoring pass alone against the bare loop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from unlearnkit.data.formats import get_format

    model, tokenizer, splits = build(args)
    fmt = get_format("openunlearning")
    params = sum(p.numel() for p in model.parameters())
    summary = {"model_parameters": params, "dtype": args.dtype, "device": args.device, "threads": args.threads,
               "max_new_tokens": args.max_new_tokens}
    bare_s, tokens = bare(model, tokenizer, splits, fmt, args)
    summary.update(scoring_tokens=tokens, bare_tokens_per_s=round(tokens / bare_s))
    if args.skip_suite:
        scored = scoring_alone(model, tokenizer, splits, fmt, args)
        summary.update(ours_scoring_tokens_per_s=round(tokens / scored), scoring_ours_over_bare=round(bare_s / scored, 3))
    else:
        ours(model, tokenizer, SimpleNamespace(**{k: v[:4] for k, v in vars(splits).items() if isinstance(v, list)}),
             fmt, args)  # warm-up (kernels, allocator, tokenizer caches)
        ours_s, result = ours(model, tokenizer, splits, fmt, args)
        passes = result["passes"]
        scored = sum(passes["seconds"].get(k, 0.0) for k in ("score", "token_stats"))
        summary.update(ours_s=round(ours_s, 2), passes=passes, ours_scoring_tokens_per_s=round(tokens / scored),
                       scoring_ours_over_bare=round(bare_s / scored, 3))
        if not args.skip_per_metric:
            import per_metric

            for name in ("openunlearning_style", "lean"):
                per_s = getattr(per_metric, name)(model, tokenizer, splits, fmt, args.max_new_tokens)
                summary.update({f"per_metric_{name}_s": round(per_s, 2),
                                f"per_metric_{name}_over_ours": round(per_s / ours_s, 2)})
    print(json.dumps(summary), flush=True)
    if args.white_box:
        white_s, result = ours(model, tokenizer, splits, fmt, args, white_box=True)
        print(json.dumps({"white_box_s": round(white_s, 2), "passes": result["passes"]}), flush=True)
    if args.gradnorm:
        summary["gradnorm"] = gradnorm_paths(model, tokenizer, splits, fmt, args.gradnorm)
        print(json.dumps({"gradnorm": summary["gradnorm"]}), flush=True)


if __name__ == "__main__":
    main()
