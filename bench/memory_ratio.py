"""Peak memory of training with one method vs another (default: `npo` vs `grad_ascent`).

Both methods train the same model (``tiny_llama``, default hidden 512 × 8 layers, vocab 4096:
≈ 30M parameters, so weights, gradients and AdamW state dominate over the interpreter) on the
same synthetic data (``--forget`` rows of ``--seq`` tokens, batch ``--batch``) for the same
number of steps, through ``unlearnkit.train.train``. Each method runs in a fresh child process
(``python bench/memory_ratio.py --child METHOD ...``) so that neither inherits the other's
allocator state or high-water mark. The child reports:

* ``peak_rss``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end — the process's peak
  resident memory, interpreter and libraries included;
* ``rss_growth``: that peak minus the resident memory measured after the imports, before the
  model is built — the part the training run itself added;
* ``torch_peak``: the peak of live torch allocations. On CUDA ``torch.cuda.max_memory_allocated``
  (same child). On CPU the high-water mark of the running sum of the allocation/free events
  recorded by ``torch.profiler`` (``profile_memory=True``, started before the model is built).
  The profiler's event buffers add a few hundred MB of RSS, so this runs in *separate* children
  (one per method, after the RSS children; the value is deterministic, so it is not repeated)
  and never touches the ``peak_rss`` numbers. ``--no-torch-peak`` skips it.

On CUDA the headline ratio is ``torch_peak`` (``max_memory_allocated``); on CPU it is
``peak_rss`` as required, and the other two ratios are printed next to it. ``peak_rss`` includes
a few hundred MB of interpreter + torch + transformers that both methods share, so it is pulled
towards 1; ``torch_peak`` and ``rss_growth`` are the sharper comparisons.

Why NPO's ratio can be ≈ 1. NPO's loss needs log π_ref(y|x) of each forget row under the frozen
starting model. Naively that means keeping a second copy of the weights for the whole run
(+1× weights on top of GA's weights + grads + 2× AdamW state ≈ +25%). But NPO declares
``needs_reference() == "logprobs"`` and the forget set is fixed, so the trainer (see
``unlearnkit/train/reference.py`` and ``train/loop.py``) deep-copies the model, precomputes the reference
sequence log-probs of every forget/extra row once — before the optimizer state exists — caches
them by row content, and *releases* the copy. During training NPO then reads the cache and holds
nothing GA does not. (With ``retain_loss: kl`` the copy must stay; the ratio then grows by ≈ one
set of weights.)

Retain data. By default the data has no retain set, so NPO's retain term is 0 and the comparison
isolates the cost of the reference. With ``--retain`` both runs get a retain set; NPO (like every
retain-regularised method) then also runs a forward/backward on the retain batch each step, whose
activations coexist with the forget batch's, so its peak grows by the activations of one more
batch — a cost of the objective, not of the reference.

    python bench/memory_ratio.py                           # npo vs grad_ascent, defaults
    python bench/memory_ratio.py --retain                  # with a retain set
    python bench/memory_ratio.py --method npo --method-b grad_diff --retain --hidden 256 --layers 4
    python bench/memory_ratio.py --method-args '{"retain_loss": "kl"}'   # control: the copy is kept

The last one is a check that the benchmark can see a kept reference copy: ``torch_peak`` rises by
about one set of weights (ratio ≈ 1.19 here), while ``peak_rss`` — diluted by the shared
interpreter baseline and the allocator's slack — moves much less (≈ 1.07). Read ``torch_peak``
(printed on the same line on CPU) before trusting an RSS ratio near the target.

Cost: 2·repeats + 2 children, each ≈ 8–25 s on one shared core with the defaults (≈ 1–1.5 min).

Target: ``peak npo / grad_ascent <= 1.1``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MARK = "MEMORY_RATIO_RESULT "


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="npo", help="method A (numerator), default npo")
    p.add_argument("--method-b", default="grad_ascent", help="method B (denominator), default grad_ascent")
    p.add_argument("--method-args", default="{}", metavar="JSON",
                   help='fields for method A, e.g. \'{"retain_loss": "kl"}\'')
    p.add_argument("--method-b-args", default="{}", metavar="JSON", help="fields for method B")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--forget", type=int, default=16, help="forget rows (default 2 batches)")
    p.add_argument("--retain", action="store_true", help="give both runs a retain set (see docstring)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--repeats", type=int, default=2,
                   help="RSS children per method, alternating A, B, B, A, ... (median)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each child (default 1)")
    p.add_argument("--no-torch-peak", action="store_true", help="CPU: skip the torch.profiler allocation peak")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
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

    forget = _examples(args.forget, args.seq, args.vocab, seed=1)
    retain = _examples(args.forget, args.seq, args.vocab, seed=2) if args.retain else None
    extra = {}
    for k, name in enumerate(sorted(views)):
        other = _examples(args.forget, args.seq, args.vocab, seed=10 + k)
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


def child(args) -> int:
    import contextlib

    import torch

    torch.set_num_threads(args.threads)
    from unlearnkit.model import tiny_llama
    from unlearnkit.registry import METHODS
    from unlearnkit.train import TrainConfig, train
    import accelerate  # noqa: F401  (imported by train(); load it before the baseline)
    import transformers  # noqa: F401

    cuda = torch.cuda.is_available()
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
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with profiler as prof:
        model = tiny_llama(args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                           max_positions=max(256, args.seq), seed=0, pad_id=0)
        n_params = sum(p.numel() for p in model.parameters())
        cfg = TrainConfig(steps=args.steps, lr=args.lr, batch_size=args.batch, max_grad_norm=1.0,
                          progress=False)
        result = train(model, method, data, cfg)
    seconds = time.perf_counter() - start
    if cuda:
        torch_peak = torch.cuda.max_memory_allocated()
    elif prof is not None:
        torch_peak = _torch_peak_from_profiler(prof)
    else:
        torch_peak = None
    peak = _peak_rss()
    print(MARK + json.dumps({
        "method": args.child, "device": "cuda" if cuda else "cpu", "threads": torch.get_num_threads(),
        "params": n_params, "steps": result.steps, "stopped": result.stopped, "seconds": seconds,
        "peak_rss": peak, "baseline_rss": baseline, "rss_growth": peak - baseline, "torch_peak": torch_peak,
    }), flush=True)
    return 0


# ----------------------------------------------------------------------------------- parent


def _run_child(args, method: str, profile: bool) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--child", method]
    for flag in ("method", "method_b", "method_args", "method_b_args", "hidden", "layers", "heads", "vocab", "batch", "seq", "forget",
                 "steps", "lr", "threads"):
        argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.retain:
        argv.append("--retain")
    if not profile:
        argv.append("--no-torch-peak")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"child '{method}' failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                       f"{proc.stderr[-3000:]}")


def _mb(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)

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
    cuda = runs[a][0]["device"] == "cuda"
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
    keys = ("peak_rss", "rss_growth", "torch_peak")
    med = {m: {k: median(m, k) for k in keys} for m in (a, b)}
    ratios = {k: (med[a][k] / med[b][k] if med[a][k] and med[b][k] else None) for k in keys}
    headline = "torch_peak" if cuda else "peak_rss"
    ratio = ratios[headline]
    if args.json:
        print(json.dumps({
            "method": a, "method_b": b, "device": first["device"], "threads": first["threads"],
            "params": first["params"], "hidden": args.hidden, "layers": args.layers, "vocab": args.vocab,
            "batch": args.batch, "seq": args.seq, "forget": args.forget, "retain": args.retain,
            "steps": args.steps, "repeats": args.repeats, "runs": runs, "profiled": profiled, "median": med, "ratios": ratios,
            "headline": headline, "ratio": ratio, "target": 1.1, "ok": ratio is not None and ratio <= 1.1,
            "ok_torch_peak": None if ratios["torch_peak"] is None else ratios["torch_peak"] <= 1.1,
        }))
        return 0
    print(f"device={first['device']} threads={first['threads']} model: hidden={args.hidden} layers={args.layers} "
          f"vocab={args.vocab} ({first['params'] / 1e6:.1f}M params, {_mb(first['params'] * 4)} of fp32 weights) "
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
    print(f"peak {a} / {b} = {ratio:.3f} (target <= 1.1) [{what}: {_mb(med[a][headline])} vs "
          f"{_mb(med[b][headline])}{extra}] {'OK' if ratio <= 1.1 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
