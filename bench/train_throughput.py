"""Step throughput of unlearnkit's training loop vs a bare PyTorch loop doing the same work.

Both loops train the same model (a Llama of ``--shape``, fresh from the same seed for every run; the
default ``small`` is ``tiny_llama(1024, hidden=256, layers=4)``, ``1b`` is Llama-3.2-1B's shape, see
``bench/shapes.py``; weights in ``--dtype``, built directly on ``--device``) with
the same loss — gradient ascent, ``−nll`` (token-weighted mean NLL of the answer tokens, via
``unlearnkit.losses.nll``) — on the same fixed batch of synthetic ``Example``s (``--batch`` rows
× ``--seq`` tokens, every row the same length, the first quarter of each row a prompt with label
−100), with AdamW at the same lr and gradient-norm clipping at 1.0. The loss is computed in float32
whatever the weights' dtype (``unlearnkit.losses`` upcasts the logits), and neither loop uses autocast
(``TrainConfig.mixed_precision="no"``): ``--dtype bfloat16`` trains bf16 weights with a bf16 AdamW state in
both. What differs is only the loop:

* **ours**: ``unlearnkit.train.train(model, GradAscent(), data, TrainConfig(steps=..., lr=...,
  batch_size=B, max_grad_norm=1.0, progress=False, device=...))``. The forget set holds exactly B examples, so
  every step sees one full batch (the stream re-collates it from the ``Example``s each step, as it
  would in real training: that cost is part of what we measure), plus everything else the trainer
  does per step (accelerate's ``backward``/``clip_grad_norm_``, the LR scheduler, the finite-loss
  and finite-norm guards, logging each loss part as a Python float, the history record).
* **bare**: ``zero_grad → forward → -nll → backward → clip_grad_norm_ → AdamW.step`` on one
  pre-collated batch.

As a check that both loops compute the same thing, the step-1 losses of the untimed warm-up runs
are printed side by side (same weights, same rows: they must agree).

Timing only the steady state. ``train()`` has setup costs that do not grow with the number of
steps (building the ``Accelerator``, ``accelerator.prepare``, seeding, the optimizer and
scheduler, and the first steps, which are slower: allocator warm-up and AdamW's lazy state). One
way to cancel them is to time two runs with different step counts and divide the difference by
the number of extra steps. We get the same quantity more cheaply (one run instead of two) by
timestamping *inside* the loop with ``train(..., on_step=...)``: the trainer calls ``on_step``
right after it finishes each optimizer step, so the time between the call for step ``w`` and the
call for step ``w + n`` is exactly ``n`` complete iterations of the loop — setup and the first ``w``
(warm-up) steps fall outside the window, just as they cancel in the two-run difference. The bare
loop is timed over the same window (steps ``w+1 .. w+n``). On CUDA both loops synchronise the device
before each of their two timestamps, so neither window ends with queued kernels.

Noise. The machine this was written on has 2 cores shared with other processes, and PyTorch's
OpenMP threads slow down enormously when another process holds a core; so ``--threads`` (default
1) fixes ``torch.set_num_threads``, and the measurements alternate between the two loops with
the order swapped every repeat (ours, bare, bare, ours, ours, bare, ...) so that background load
and drift hit both equally. We report the median steps/s of each and their ratio.

    python bench/train_throughput.py                      # defaults: small shape, float32, 8×128, CPU
    python bench/train_throughput.py --steps 50 --repeats 7 --json
    python bench/train_throughput.py --shape 1b --dtype bfloat16 --device cuda --batch 8 --seq 512 \
        --steps 10 --repeats 3                            # Llama-3.2-1B shape on a GPU (bench/gpu_check.sh)

Cost: 2·repeats·(warmup + steps) + 4 training steps of a ≈4M-parameter model. At ≈0.25–0.5 s per
step on one (shared) core, the defaults (20 timed steps, 5 repeats) take ≈1–2 minutes; 50 steps
take ≈2.5–4.5 minutes for a lower-variance number. Every run builds a fresh model, so with ``--shape 1b``
add 2·repeats + 2 model initialisations (about a second each on a GPU).

Target: ``ratio ours/bare >= 0.9`` — the trainer's bookkeeping costs at most ~10% of a step.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from shapes import DTYPES, SHAPES, build_llama, count_parameters, describe, shape_fields


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="small",
                   help="model shape from bench/shapes.py (small: hidden 256, 4 layers; 1b: Llama-3.2-1B)")
    p.add_argument("--hidden", type=int, default=None, help="override the shape's hidden size (MLP = 3x)")
    p.add_argument("--layers", type=int, default=None, help="override the shape's layer count")
    p.add_argument("--heads", type=int, default=None, help="override the shape's heads (KV heads too)")
    p.add_argument("--vocab", type=int, default=None,
                   help="vocabulary (default: the shape's, 1024 for small); rows are random ids below it")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="weights' dtype (the loss is float32 either way)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8, help="rows per step")
    p.add_argument("--seq", type=int, default=128, help="tokens per row")
    p.add_argument("--steps", type=int, default=20,
                   help="timed steps per run (default 20 keeps the default run under 2 min on 1 shared core)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every run (>= 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each loop (alternating)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def make_examples(n: int, seq: int, vocab: int, seed: int):
    from unlearnkit.data.batch import IGNORE_INDEX, Example

    gen = torch.Generator().manual_seed(seed)
    prompt = max(1, seq // 4)
    examples = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (seq,), generator=gen).tolist()
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        examples.append(Example(tuple(ids), tuple(labels)))
    return examples


def fields_of(args) -> dict:
    return shape_fields(args.shape, vocab=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                        default_vocab=1024)


def build_model(args):
    return build_llama(fields_of(args), dtype=args.dtype, device=args.device, seed=args.seed,
                       max_positions=max(256, args.seq), pad_id=0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: str) -> None:
    """Free the finished run's model and optimizer state before the next run builds its own."""
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def run_ours(args, examples, steps: int, warmup: int) -> tuple[float, float]:
    """(steps/s of `train()` over steps warmup+1 .. warmup+steps, loss of step 1)."""
    from unlearnkit.data.pairing import UnlearnData
    from unlearnkit.methods.grad_ascent import GradAscent
    from unlearnkit.train import TrainConfig, train

    model = build_model(args)
    data = UnlearnData(forget=list(examples), pad_id=0)
    cfg = TrainConfig(steps=warmup + steps, lr=args.lr, batch_size=args.batch, max_grad_norm=1.0,
                      progress=False, seed=args.seed, device=args.device)
    device = torch.device(args.device)
    stamps: dict[int, float] = {}

    def on_step(step, record):
        if step in (warmup, warmup + steps):
            _sync(device)
            stamps[step] = time.perf_counter()

    result = train(model, GradAscent(), data, cfg, on_step=on_step)
    if result.stopped or result.steps != warmup + steps:
        raise RuntimeError(f"our loop stopped early: {result.stopped}")
    return steps / (stamps[warmup + steps] - stamps[warmup]), result.history[0]["loss"]


def run_bare(args, examples, steps: int, warmup: int) -> tuple[float, float]:
    """(steps/s of a plain PyTorch loop over steps warmup+1 .. warmup+steps, loss of step 1)."""
    from unlearnkit.data.batch import collate
    from unlearnkit.losses import nll

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = build_model(args)
    model.train()
    batch = collate(list(examples), 0).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    start = None
    for step in range(1, warmup + steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = -nll(model, batch)
        loss.backward()
        if step == 1:
            first_loss = float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
    _sync(device)
    return steps / (time.perf_counter() - start), first_loss


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.warmup < 1:
        sys.exit("--warmup must be >= 1 (the timing window starts after a finished step)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda, but no CUDA device is visible")
    fields = fields_of(args)
    examples = make_examples(args.batch, args.seq, fields["vocab_size"], args.seed)
    device = args.device
    n_params = count_parameters(fields)
    header = (f"device={device} threads={torch.get_num_threads()} model: {args.shape} {describe(fields)} "
              f"({n_params / 1e6:.2f}M params, {args.dtype}) "
              f"batch={args.batch}x{args.seq} steps={args.steps} (+{args.warmup} warm-up) "
              f"repeats={args.repeats}")
    if not args.json:
        print(header, flush=True)

    # One untimed pass of each first: import/first-call costs (accelerate, transformers' get_scheduler,
    # allocator growth) would otherwise land on whichever loop runs first.
    # Both start from the same weights on the same rows, so their first losses must agree.
    first = {"ours": run_ours(args, examples, steps=1, warmup=1)[1]}
    _release(device)
    first["bare"] = run_bare(args, examples, steps=1, warmup=1)[1]
    _release(device)
    same_loss = math.isclose(first["ours"], first["bare"], rel_tol=1e-4, abs_tol=1e-5)
    if not args.json:
        print(f"step-1 loss: ours {first['ours']:.6f}  bare {first['bare']:.6f}"
              f"{'' if same_loss else '  MISMATCH: the loops do not compute the same thing'}", flush=True)

    runners = {"ours": run_ours, "bare": run_bare}
    rates: dict[str, list[float]] = {"ours": [], "bare": []}
    for r in range(args.repeats):
        order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
        for name in order:
            rates[name].append(runners[name](args, examples, args.steps, args.warmup)[0])
            _release(device)
            if not args.json:
                print(f"  repeat {r + 1}/{args.repeats} {name:4s}: {rates[name][-1]:8.2f} steps/s", flush=True)
    threads_after = torch.get_num_threads()

    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["ours"] / med["bare"]
    paired = statistics.median(o / b for o, b in zip(rates["ours"], rates["bare"]))
    if args.json:
        print(json.dumps({
            "device": device, "threads": args.threads, "threads_after": threads_after,
            "shape": args.shape, "dtype": args.dtype, "hidden": fields["hidden_size"],
            "layers": fields["num_hidden_layers"], "vocab": fields["vocab_size"], "params": n_params,
            "batch": args.batch, "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
            "repeats": args.repeats, "lr": args.lr,
            "ours_steps_per_s": rates["ours"], "bare_steps_per_s": rates["bare"],
            "ours_median": med["ours"], "bare_median": med["bare"],
            "ratio": ratio, "paired_ratio_median": paired, "target": 0.9, "ok": ratio >= 0.9,
            "first_loss": first, "same_loss": same_loss,
        }))
    else:
        if threads_after != args.threads:
            print(f"warning: torch threads changed to {threads_after} during the run")
        print(f"ours: median {med['ours']:.2f} steps/s   bare: median {med['bare']:.2f} steps/s   "
              f"(median of paired ratios {paired:.3f})")
        print(f"ratio ours/bare = {ratio:.3f} (target >= 0.9) {'OK' if ratio >= 0.9 else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
