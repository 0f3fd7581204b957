"""Does a training run's cost grow linearly with the forget set? Wall time of ``train()`` at 40, 200, 400 rows.

Each size trains a fresh model of ``--shape`` (default ``small``: ``tiny_llama(1024, hidden=256, layers=4)``,
see ``bench/shapes.py``) with ``--method`` (default ``npo``) on synthetic rows of ``--seq`` tokens (the first
quarter of each a prompt), with a retain set of as many rows (``--no-retain`` drops it), for a fixed number of
epochs: ``TrainConfig(epochs=E, batch_size=B)``, so a run takes E·rows/B optimizer steps and the steps are
proportional to the rows. What is timed is the whole call ``unlearnkit.train.train(model, method, data, cfg)``:
building the Accelerator, ``prepare``, and for a method with a reference (``npo``) the deep copy of the model,
the precomputation of the reference log-probs of every forget row and the release of the copy, then every step
(re-collating the batches, the reference cache lookups, the optimizer). Model construction and data synthesis
stay outside the timer.

If every part is linear in the rows, wall(400)/wall(40) ≤ 10, less by the fixed setup cost that does not grow
(≈ 10 × (1 − setup share of the 40-row run)). A part that grows faster — e.g. a reference cache looked up by a
scan of every row, a stream that re-sorts the whole forget set each batch, a precompute that keeps every batch's
logits — shows as a ratio above 10 and as a larger marginal cost per row from 200 to 400 rows than from 40 to 200
(printed as ``marginal per-row cost 200→400 / 40→200``, ≈ 1 when linear). Each run is also split into
``setup`` (from the call to the end of step 1, via ``train(..., on_step=...)``: Accelerator, reference copy,
precompute, first step) and the steady ``s/step`` after it, so a non-linear part can be placed.

An untimed warm-up run comes first (imports, first-call costs). ``--repeats R`` (default 2) runs every size R
times, the sizes in a rotated order each repeat, and reports medians. ``--threads`` (default 1) fixes
``torch.set_num_threads``: the machine this was written on has 2 shared cores.

    python bench/scaling.py                                  # npo, small shape, seq 64, 2 epochs, 2 repeats (≈ 2 min)
    python bench/scaling.py --method grad_diff --repeats 3 --json
    python bench/scaling.py --sizes 8,40,80 --epochs 1       # a quick check (≈ 15 s)

Cost with the defaults: 2 repeats × 2 epochs × (40 + 200 + 400)/8 = 320 steps of a 3.9M-parameter model at
8×64 tokens, each a forget and a retain forward/backward (≈ 0.3 s per step on one shared core), plus 2 × 640
reference rows scored: ≈ 2 minutes (one repeat: ≈ 1 minute).

Target: ``wall 400 / wall 40 <= 11`` (linear cost, 10× the rows; for other ``--sizes``, 1.1 × last/first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from shapes import DTYPES, SHAPES, build_llama, count_parameters, describe, shape_fields

SLACK = 1.1  # target: wall(last)/wall(first) <= 1.1 x rows(last)/rows(first), i.e. 11 for 400/40


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="npo", help="registered method name (default npo)")
    p.add_argument("--method-args", default="{}", metavar="JSON", help="method fields, e.g. '{\"beta\": 0.5}'")
    p.add_argument("--sizes", default="40,200,400",
                   help="forget rows per run, comma-separated; the ratio is last/first (default 40,200,400)")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the forget set (steps = epochs*rows/batch)")
    p.add_argument("--retain", action=argparse.BooleanOptionalAction, default=True,
                   help="a retain set of as many rows as the forget set (default: yes)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="small", help="model shape from bench/shapes.py")
    p.add_argument("--hidden", type=int, default=None, help="override the shape's hidden size (MLP = 3x)")
    p.add_argument("--layers", type=int, default=None, help="override the shape's layer count")
    p.add_argument("--heads", type=int, default=None, help="override the shape's heads (KV heads too)")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary (default: the shape's, 1024 for small)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64, help="tokens per row")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--repeats", type=int, default=2, help="runs per size, sizes rotated each repeat (median)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def _rows(n: int, seq: int, vocab: int, seed: int):
    from unlearnkit.data.batch import IGNORE_INDEX, Example

    gen = torch.Generator().manual_seed(seed)
    prompt = max(1, seq // 4)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (seq,), generator=gen).tolist()
        out.append(Example(tuple(ids), tuple([IGNORE_INDEX] * prompt + ids[prompt:])))
    return out


def make_data(n: int, args, vocab: int, views):
    """`n` forget rows, `n` retain rows (unless --no-retain), and any extra view the method reads (the forget
    prompts with other answers)."""
    from unlearnkit.data.batch import Example
    from unlearnkit.data.pairing import UnlearnData

    forget = _rows(n, args.seq, vocab, seed=1)
    retain = _rows(n, args.seq, vocab, seed=2) if args.retain else None
    extra = {}
    for k, name in enumerate(sorted(views)):
        other = _rows(n, args.seq, vocab, seed=10 + k)
        extra[name] = [Example(f.input_ids[: f.prompt_length] + o.input_ids[f.prompt_length:],
                               f.labels[: f.prompt_length] + o.labels[f.prompt_length:])
                       for f, o in zip(forget, other)]
    return UnlearnData(forget=forget, retain=retain, extra=extra, pad_id=0)


def run(args, fields: dict, n: int, epochs: float) -> dict:
    """One timed `train()` on `n` forget rows."""
    from unlearnkit.registry import METHODS
    from unlearnkit.train import TrainConfig, train

    method = METHODS.build(args.method, **json.loads(args.method_args))
    data = make_data(n, args, fields["vocab_size"], METHODS.get(args.method).extra_views)
    model = build_llama(fields, dtype=args.dtype, device=args.device, seed=0, max_positions=max(256, args.seq),
                        pad_id=0)
    cfg = TrainConfig(epochs=epochs, lr=args.lr, batch_size=args.batch, max_grad_norm=1.0, progress=False,
                      device=args.device)
    stamps: dict[int, float] = {}

    def on_step(step, record):
        if args.device == "cuda":
            torch.cuda.synchronize()
        stamps[step] = time.perf_counter()

    start = time.perf_counter()
    result = train(model, method, data, cfg, on_step=on_step)
    if args.device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    if result.stopped:
        print(f"warning: {n} rows stopped early: {result.stopped}", file=sys.stderr)
    steps = result.steps
    setup = stamps[1] - start if 1 in stamps else wall
    per_step = (stamps[steps] - stamps[1]) / (steps - 1) if steps > 1 else None
    return {"rows": n, "steps": steps, "wall_s": wall, "setup_s": setup, "s_per_step": per_step,
            "stopped": result.stopped}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda, but no CUDA device is visible")
    sizes = [int(s) for s in args.sizes.split(",")]
    if len(sizes) < 2:
        sys.exit("--sizes needs at least two sizes")
    fields = shape_fields(args.shape, vocab=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                          default_vocab=1024)
    if not args.json:
        print(f"method={args.method} retain={'yes' if args.retain else 'no'} device={args.device} "
              f"threads={torch.get_num_threads()} model: {args.shape} {describe(fields)} "
              f"({count_parameters(fields) / 1e6:.2f}M params, {args.dtype}) batch={args.batch}x{args.seq} "
              f"epochs={args.epochs:g} sizes={sizes} repeats={args.repeats}", flush=True)

    run(args, fields, min(sizes[0], args.batch), epochs=1.0)  # untimed warm-up: imports, first calls
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for r in range(args.repeats):
        order = sizes[r % len(sizes):] + sizes[: r % len(sizes)]  # rotate, so no size always runs first
        for n in order:
            res = run(args, fields, n, args.epochs)
            runs[n].append(res)
            if not args.json:
                step = f"{res['s_per_step']:.3f}" if res["s_per_step"] is not None else "n/a"
                print(f"  {n:5d} rows {res['steps']:4d} steps: wall {res['wall_s']:7.2f} s  setup (to end of "
                      f"step 1) {res['setup_s']:6.2f} s  {step} s/step", flush=True)

    def med(n, key):
        values = [r[key] for r in runs[n] if r[key] is not None]
        return statistics.median(values) if values else None

    wall = {n: med(n, "wall_s") for n in sizes}
    first, last = sizes[0], sizes[-1]
    ratio = wall[last] / wall[first]
    marginal = None
    if len(sizes) >= 3:  # cost per extra row in the upper interval over the lower one
        lo = (wall[sizes[1]] - wall[sizes[0]]) / (sizes[1] - sizes[0])
        hi = (wall[sizes[-1]] - wall[sizes[-2]]) / (sizes[-1] - sizes[-2])
        marginal = hi / lo if lo > 0 else None
    rows_ratio = last / first
    target = SLACK * rows_ratio
    if args.json:
        print(json.dumps({
            "method": args.method, "method_args": json.loads(args.method_args), "retain": args.retain,
            "device": args.device, "dtype": args.dtype, "threads": args.threads, "shape": args.shape,
            "fields": fields, "batch": args.batch, "seq": args.seq, "epochs": args.epochs, "sizes": sizes,
            "repeats": args.repeats, "runs": {str(n): v for n, v in runs.items()},
            "wall_median_s": {str(n): w for n, w in wall.items()},
            "setup_median_s": {str(n): med(n, "setup_s") for n in sizes},
            "s_per_step_median": {str(n): med(n, "s_per_step") for n in sizes},
            "rows_ratio": rows_ratio, "ratio": ratio, "marginal_cost_ratio": marginal,
            "target": target, "ok": ratio <= target,
        }))
        return 0
    print("  wall (median): " + ", ".join(f"{n} rows {wall[n]:.2f} s" for n in sizes))
    print("  s/step (median): " + ", ".join(
        f"{n} rows {med(n, 's_per_step'):.3f}" if med(n, "s_per_step") is not None else f"{n} rows n/a"
        for n in sizes))
    if marginal is not None:
        print(f"  marginal per-row cost {sizes[-2]}→{sizes[-1]} / {sizes[0]}→{sizes[1]} = {marginal:.3f} "
              f"(≈ 1 when linear)")
    print(f"wall {last} / {first} rows = {ratio:.2f} for {rows_ratio:g}x the rows and steps (target <= {target:g}) "
          f"{'OK' if ratio <= target else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
