"""Peak memory of training with one method vs another (default: ``npo`` vs ``grad_diff``, both with a retain set).

Both methods train the same model (``--shape``, default ``medium``: ``tiny_llama(4096, hidden=512,
layers=8)``, 31.5M parameters, so weights, gradients and AdamW state dominate over the interpreter;
``1b`` is Llama-3.2-1B's shape; see ``bench/shapes.py``) in ``--dtype`` on ``--device`` on the same
synthetic data (``--forget`` rows of ``--seq`` tokens, a retain set of as many rows, batch ``--batch``)
for the same number of steps, through ``unlearnkit.train.train``. Each method runs in a fresh child
process (``python bench/memory_ratio.py --child METHOD ...``) so that neither inherits the other's
allocator state or high-water mark. The child reports:

* ``peak_rss``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end — the process's peak
  resident memory, interpreter and libraries included;
* ``rss_growth``: that peak minus the resident memory measured after the imports (and, on CUDA, after
  the CUDA context exists), before the model is built — the part the training run itself added;
* ``torch_peak``: the peak of live torch allocations. On CUDA ``torch.cuda.max_memory_allocated``
  (same child). On CPU the high-water mark of the running sum of the allocation/free events
  recorded by ``torch.profiler`` (``profile_memory=True``, started before the model is built).
  The profiler's event buffers add a few hundred MB of RSS, so this runs in *separate* children
  (one per method, after the RSS children; the value is deterministic, so it is not repeated)
  and never touches the ``peak_rss`` numbers. ``--no-torch-peak`` skips it.

On CUDA the headline ratio is ``torch_peak`` (``max_memory_allocated``); on CPU it is
``peak_rss``, and the other two ratios are printed next to it. ``peak_rss`` includes
a few hundred MB of interpreter + torch + transformers that both methods share, so it is pulled
towards 1; ``torch_peak`` and ``rss_growth`` are the sharper comparisons.

Why the default pair. ``npo`` and ``grad_diff`` have the same retain term (NLL on the retain batch,
weight 1: both are ``RetainRegularised``) and differ only in the forget term: GD's is ``-NLL``, NPO's
needs log π_ref(y|x) of each forget row under the frozen starting model. So with a retain set in both
runs the ratio isolates what the reference costs. Naively that is a second copy of the weights for the whole
run (+1× weights on top of weights + grads + 2× AdamW state ≈ +25%). But NPO needs only cached log-probs of the
fixed forget rows (``needs_reference() == "logprobs"``), which the trainer computes with the model itself before
the first step (``Reference.cached``): no copy at all. (With ``retain_loss: kl`` a frozen copy is needed and kept;
the ratio then grows by ≈ one set of weights.)
``--no-retain`` drops the retain set from both runs (compare e.g. ``npo`` with ``grad_ascent`` then).

    python bench/memory_ratio.py                           # npo vs grad_diff, both with a retain set
    python bench/memory_ratio.py --method npo --method-b grad_ascent --no-retain
    python bench/memory_ratio.py --method-args '{"retain_loss": "kl"}'   # control: the copy is kept
    python bench/memory_ratio.py --shape 1b --dtype bfloat16 --device cuda --batch 4 --seq 256
    python bench/memory_ratio.py --processes 2 --strategy fsdp2 # one method, 2 CPU processes

The control checks that the benchmark can see a kept reference copy: ``torch_peak`` rises by about
one set of weights, while ``peak_rss`` — diluted by the shared interpreter baseline and the
allocator's slack — moves much less. Read ``torch_peak`` (printed on the same line on CPU) before
trusting an RSS ratio near the target.

Several processes. ``--processes N --strategy {ddp,fsdp2,deepspeed-zero2,deepspeed-zero3}`` measures ONE method (``--method``) trained
data-parallel in N CPU processes (``torch.distributed.run``), the strategy passed through the environment
variables ``accelerate launch`` sets (``STRATEGY_ENV`` below; the caller's ``ACCELERATE_*``/``FSDP_*`` are
removed; ``OMP_NUM_THREADS=1``). Every rank reports ``peak_rss``, ``rss_growth``, ``torch_peak`` and whether
its weights were sharded after step 1. With FSDP2 / ZeRO-3 each rank holds about 1/N of the weights, gradients
and optimizer state, so its peak should fall below DDP's by about (1 − 1/N) of those, less what activations and
the engine's own buffers add. DeepSpeed frees storage in ways the CPU profiler does not see: read RSS there.

Cost: 2·repeats + 2 children, each ≈ 10–30 s on one shared core with the defaults (≈ 1.5–2 min).
``--processes 2``: two launches of 2 ranks (RSS, then profiled for ``torch_peak``; ``--no-torch-peak`` skips
the second), ≈ 25 s each on 2 cores.

Target: ``peak npo / grad_diff <= 1.05``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from shapes import DTYPES, SHAPES, build_llama, describe, shape_fields
from unlearnkit.train.strategy import LAUNCH_ENV

MARK = "MEMORY_RATIO_RESULT "
TARGET = 1.05
STRATEGY_ENV = LAUNCH_ENV  # what accelerate launch exports for each shipped config


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="npo", help="method A (numerator), default npo")
    p.add_argument("--method-b", default="grad_diff", help="method B (denominator), default grad_diff")
    p.add_argument("--method-args", default="{}", metavar="JSON",
                   help='fields for method A, e.g. \'{"retain_loss": "kl"}\'')
    p.add_argument("--method-b-args", default="{}", metavar="JSON", help="fields for method B")
    p.add_argument("--shape", choices=sorted(SHAPES), default="medium",
                   help="model shape from bench/shapes.py (medium: hidden 512, 8 layers, 31.5M; 1b: Llama-3.2-1B)")
    p.add_argument("--hidden", type=int, default=None, help="override the shape's hidden size (MLP = 3x)")
    p.add_argument("--layers", type=int, default=None, help="override the shape's layer count")
    p.add_argument("--heads", type=int, default=None, help="override the shape's heads (KV heads too)")
    p.add_argument("--vocab", type=int, default=None, help="override the shape's vocabulary")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="weights' dtype (the loss is float32 either way)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if _cuda_available() else "cpu",
                   help="on cuda the headline is torch.cuda.max_memory_allocated")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--forget", type=int, default=16, help="forget rows (default 2 batches)")
    p.add_argument("--retain", action=argparse.BooleanOptionalAction, default=True,
                   help="give both runs a retain set of --forget rows (default: yes)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--repeats", type=int, default=2,
                   help="RSS children per method, alternating A, B, B, A, ... (median)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each child (default 1)")
    p.add_argument("--no-torch-peak", action="store_true", help="CPU: skip the torch.profiler allocation peak")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--processes", type=int, default=1,
                   help="N > 1: train --method alone in N processes (torch.distributed.run) and report every rank")
    p.add_argument("--strategy", choices=sorted(STRATEGY_ENV), default="ddp",
                   help="with --processes: the data-parallel strategy, passed as accelerate launch would")
    p.add_argument("--timeout", type=float, default=600, help="seconds per child")
    p.add_argument("--child", metavar="METHOD", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ child


def _current_rss() -> int:
    """Resident set size now, bytes (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss()


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def _fields(args) -> dict:
    return shape_fields(args.shape, vocab=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                        default_vocab=4096)


def _examples(n: int, seq: int, vocab: int, seed: int):
    from unlearnkit.data.batch import IGNORE_INDEX, Example
    import torch

    gen = torch.Generator().manual_seed(seed)
    prompt = max(1, seq // 4)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (seq,), generator=gen).tolist()
        rows.append(Example(tuple(ids), tuple([IGNORE_INDEX] * prompt + ids[prompt:])))
    return rows


def _data(args, views):
    """Same data for every method: forget rows, optional retain rows, and every extra view either
    method asks for (same prompts, other answers), all of length --seq."""
    from unlearnkit.data.batch import Example
    from unlearnkit.data.pairing import UnlearnData

    vocab = _fields(args)["vocab_size"]
    forget = _examples(args.forget, args.seq, vocab, seed=1)
    retain = _examples(args.forget, args.seq, vocab, seed=2) if args.retain else None
    extra = {}
    for k, name in enumerate(sorted(views)):
        other = _examples(args.forget, args.seq, vocab, seed=10 + k)
        extra[name] = [Example(f.input_ids[: f.prompt_length] + o.input_ids[f.prompt_length:],
                               f.labels[: f.prompt_length] + o.labels[f.prompt_length:])
                       for f, o in zip(forget, other)]
    return UnlearnData(forget=forget, retain=retain, extra=extra, pad_id=0)


def _torch_peak_from_profiler(prof) -> int:
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type().name == "CPU"]
    current = peak = 0
    for _, nbytes in sorted(events):
        current += nbytes
        peak = max(peak, current)
    return peak


def _sharded(model) -> bool:
    """Whether the weights are sharded right now: FSDP2's ``fully_shard`` turns them into DTensors in place, and
    ZeRO-3 leaves each parameter empty outside its gathers (``ds_id``, numel 0). Checked after step 1 (the
    trainer hands back a consolidated, unsharded model at the end)."""
    return any(type(p).__name__ == "DTensor" or (hasattr(p, "ds_id") and p.numel() == 0) for p in model.parameters())


def child(args) -> int:
    import contextlib

    import torch

    torch.set_num_threads(args.threads)
    from unlearnkit.registry import METHODS
    from unlearnkit.train import TrainConfig, train
    for name in ("accelerate", "transformers"):  # imported by train(); in memory before the baseline
        importlib.import_module(name)

    cuda = args.device == "cuda"
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if cuda and world > 1 else args.device
    if cuda:
        torch.zeros(1, device=device)  # the CUDA context belongs to the baseline, not to training
    fields = json.loads(args.method_args if args.child == args.method else args.method_b_args)
    method = METHODS.build(args.child, **fields)
    views = set(METHODS.get(args.method).extra_views) | set(METHODS.get(args.method_b).extra_views)
    data = _data(args, views)
    baseline = _current_rss()

    profiler = contextlib.nullcontext()
    if not cuda and not args.no_torch_peak:
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with profiler as prof:
        model = build_llama(_fields(args), dtype=args.dtype, device=device, seed=0,
                            max_positions=max(256, args.seq), pad_id=0)
        n_params = sum(p.numel() for p in model.parameters())
        cfg = TrainConfig(steps=args.steps, lr=args.lr, batch_size=args.batch, max_grad_norm=1.0,
                          progress=False, device=device)
        seen: dict = {}
        result = train(model, method, data, cfg,
                       on_step=lambda step, record: seen.setdefault("sharded", _sharded(model)))
    seconds = time.perf_counter() - start
    if cuda:
        torch_peak = torch.cuda.max_memory_allocated(device)
    elif prof is not None:
        torch_peak = _torch_peak_from_profiler(prof)
    else:
        torch_peak = None
    peak = _peak_rss()
    line = MARK + json.dumps({
        "method": args.child, "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "rank": rank, "world_size": world, "sharded": seen.get("sharded"),
        "params": n_params, "steps": result.steps, "stopped": result.stopped,
        "seconds": seconds, "peak_rss": peak, "baseline_rss": baseline, "rss_growth": peak - baseline,
        "torch_peak": torch_peak,
    }) + "\n"
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line.encode())  # one write: the ranks of a distributed run share stdout
    return 0


# ----------------------------------------------------------------------------------- parent


def _child_argv(args, method: str, profile: bool) -> list[str]:
    argv = [os.path.abspath(__file__), "--child", method]
    for flag in ("method", "method_b", "method_args", "method_b_args", "shape", "hidden", "layers", "heads", "vocab",
                 "dtype", "device", "batch", "seq", "forget", "steps", "lr", "threads"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    argv.append("--retain" if args.retain else "--no-retain")
    if not profile:
        argv.append("--no-torch-peak")
    return argv


def _results(proc, what: str, expected: int = 1) -> list[dict]:
    found = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or len(found) < expected:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return sorted(found, key=lambda r: r["rank"])


def _run_child(args, method: str, profile: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run([sys.executable, *_child_argv(args, method, profile)], capture_output=True, text=True,
                          env=env, timeout=args.timeout)
    return _results(proc, f"child '{method}'")[0]


def _run_ranks(args, profile: bool = False) -> list[dict]:
    """--method trained in --processes ranks under torch.distributed.run, --strategy set as accelerate launch sets it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(STRATEGY_ENV[args.strategy], OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.processes),
           *_child_argv(args, args.method, profile=profile)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    return _results(proc, f"{args.processes} x '{args.method}' ({args.strategy})", expected=args.processes)


def _mb(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def processes_main(args) -> int:
    ranks = _run_ranks(args)
    if args.device == "cpu" and not args.no_torch_peak:  # each rank's torch allocation peak: a profiled run
        for r, p in zip(ranks, _run_ranks(args, profile=True)):
            r["torch_peak"] = p["torch_peak"]
    first = ranks[0]
    fields = _fields(args)
    key = "torch_peak" if args.device == "cuda" else "peak_rss"
    growth = [r["rss_growth"] for r in ranks]
    torch_peaks = [r["torch_peak"] for r in ranks if r["torch_peak"] is not None]
    summary = {
        "mode": "processes", "method": args.method, "strategy": args.strategy, "processes": args.processes,
        "device": first["device"], "dtype": args.dtype, "shape": args.shape, "params": first["params"],
        "batch_per_rank": args.batch, "seq": args.seq, "forget": args.forget, "retain": args.retain,
        "steps": args.steps, "ranks": ranks, "headline": key, "max_peak": max(r[key] for r in ranks),
        "max_rss_growth": max(growth), "rss_growth_max_over_min": max(growth) / max(min(growth), 1),
        "max_torch_peak": max(torch_peaks) if torch_peaks else None,
        "weights_bytes": first["params"] * DTYPES[args.dtype].itemsize,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.processes} processes, strategy={args.strategy}, method={args.method}: device={first['device']} "
          f"model: {args.shape} {describe(fields)} ({first['params'] / 1e6:.1f}M params, "
          f"{_mb(summary['weights_bytes'])} of {args.dtype} weights) batch={args.batch}x{args.seq} per rank "
          f"forget={args.forget} retain={'yes' if args.retain else 'no'} steps={args.steps}")
    for r in ranks:
        print(f"  rank {r['rank']}: peak_rss {_mb(r['peak_rss']):>12s}  rss_growth {_mb(r['rss_growth']):>12s}  "
              f"torch_peak {_mb(r['torch_peak']):>12s}  ({r['steps']} steps, {r['seconds']:.1f}s, "
              f"weights {'sharded' if r['sharded'] else 'whole'} during training)"
              f"{'  STOPPED: ' + r['stopped'] if r['stopped'] else ''}")
    weights, peak = summary["weights_bytes"], summary["max_torch_peak"]
    torch_part = "" if peak is None else f", torch_peak {_mb(peak)} (= {peak / weights:.2f}x the weights)"
    print(f"max over ranks: {key} {_mb(summary['max_peak'])}, rss_growth {_mb(summary['max_rss_growth'])} "
          f"(= {summary['max_rss_growth'] / weights:.2f}x the weights){torch_part}; "
          f"rss_growth max/min over ranks = {summary['rss_growth_max_over_min']:.3f}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.device == "cuda" and not _cuda_available():
        sys.exit("--device cuda, but no CUDA device is visible")
    if args.processes > 1:
        return processes_main(args)

    a, b = args.method, args.method_b
    runs: dict[str, list[dict]] = {a: [], b: []} if a != b else {a: []}
    profiled: dict[str, dict] = {}

    def report(m, res, what):
        if not args.json:
            print(f"  {m:12s} [{what}] peak_rss {_mb(res['peak_rss']):>12s}  rss_growth "
                  f"{_mb(res['rss_growth']):>12s}  torch_peak {_mb(res['torch_peak']):>12s}  "
                  f"({res['steps']} steps, {res['seconds']:.1f}s, threads={res['threads']})", flush=True)
        if res["stopped"]:
            print(f"warning: {m} stopped early: {res['stopped']}", file=sys.stderr)

    for r in range(args.repeats):  # RSS children (no profiler), alternating A, B, B, A, ...
        for m in ((a, b) if r % 2 == 0 else (b, a)):
            res = _run_child(args, m, profile=False)
            runs.setdefault(m, []).append(res)
            report(m, res, "rss")
    cuda = args.device == "cuda"
    if not cuda and not args.no_torch_peak:  # CPU torch-allocation peak: one profiled child each
        for m in (a, b):
            profiled[m] = _run_child(args, m, profile=True)
            report(m, profiled[m], "profiled")

    def median(m, key):
        if key == "torch_peak" and not cuda:
            return profiled[m]["torch_peak"] if m in profiled else None
        values = [r[key] for r in runs[m] if r[key] is not None]
        return statistics.median(values) if values else None

    first = runs[a][0]
    fields = _fields(args)
    keys = ("peak_rss", "rss_growth", "torch_peak")
    med = {m: {k: median(m, k) for k in keys} for m in (a, b)}
    ratios = {k: (med[a][k] / med[b][k] if med[a][k] and med[b][k] else None) for k in keys}
    headline = "torch_peak" if cuda else "peak_rss"
    ratio = ratios[headline]
    if args.json:
        print(json.dumps({
            "method": a, "method_b": b, "device": first["device"], "threads": first["threads"],
            "shape": args.shape, "dtype": args.dtype, "params": first["params"], "hidden": fields["hidden_size"],
            "layers": fields["num_hidden_layers"], "vocab": fields["vocab_size"],
            "batch": args.batch, "seq": args.seq, "forget": args.forget, "retain": args.retain,
            "steps": args.steps, "repeats": args.repeats, "runs": runs, "profiled": profiled, "median": med, "ratios": ratios,
            "headline": headline, "ratio": ratio, "target": TARGET, "ok": ratio is not None and ratio <= TARGET,
            "ok_torch_peak": None if ratios["torch_peak"] is None else ratios["torch_peak"] <= TARGET,
        }))
        return 0
    print(f"device={first['device']} threads={first['threads']} model: {args.shape} {describe(fields)} "
          f"({first['params'] / 1e6:.1f}M params, {_mb(first['params'] * DTYPES[args.dtype].itemsize)} of "
          f"{args.dtype} weights) "
          f"batch={args.batch}x{args.seq} forget={args.forget} retain={'yes' if args.retain else 'no'} "
          f"steps={args.steps} repeats={args.repeats}")
    for k in keys:
        if ratios[k] is not None:
            mark = "  <- headline" if k == headline else ""
            print(f"  {k:10s}: {a} {_mb(med[a][k])} / {b} {_mb(med[b][k])} = {ratios[k]:.3f}{mark}")
    what = "torch.cuda.max_memory_allocated" if cuda else "peak RSS"
    extra = ""
    if headline != "torch_peak" and ratios["torch_peak"] is not None:
        extra = (f"; torch allocations: {_mb(med[a]['torch_peak'])} vs {_mb(med[b]['torch_peak'])}"
                 f" = {ratios['torch_peak']:.3f}")
    print(f"peak {a} / {b} = {ratio:.3f} (target <= {TARGET}) [{what}: {_mb(med[a][headline])} vs "
          f"{_mb(med[b][headline])}{extra}] {'OK' if ratio <= TARGET else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
