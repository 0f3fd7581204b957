"""The reproducibility-and-safety checks of a run, on an accelerator at real size (prints one JSON line each).

Run on a machine with a GPU (or on the CPU with a small --shape for a dry run):

    python bench/gpu_trust_check.py --out /tmp/trust                  # Llama-3.2-1B shape, bf16, CUDA
    python bench/gpu_trust_check.py --shape tiny --device cpu --out /tmp/trust

1. digest: SHA-256 of the model's weights as the manifest records them, cold and then remembered.
2. grun_kv: a GRUN edit on the 1B shape (float32, so argmax ties are not a dtype effect): greedy
   generation with the KV cache equals full recomputation, and the edit reaches decoded tokens.
3. watch: cost of the divergence guard's per-forward logits check, as ours/without (train() steps on
   the 1B shape in bf16, batch 4 x 256).
4. resume: `unlearn run` on the small tiny world on this device, uninterrupted twice and interrupted at
   step 3 then `--resume`: max |Δ| of the final weights (deterministic algorithms on), and the manifest's
   device record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from shapes import SHAPES  # bench/shapes.py: the one definition of the benchmark shapes (1b, tiny, ...)


def emit(name: str, **values) -> None:
    print(json.dumps({"check": name, **values}), flush=True)


def build(shape: str, dtype: torch.dtype, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def check_digest(model, out: Path) -> None:
    from unlearnkit.cache import file_digest

    folder = out / "model"
    model.save_pretrained(folder, safe_serialization=True)
    files = sorted(folder.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    start = time.perf_counter()
    digests = [file_digest(f, out / "cache") for f in files]
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = [file_digest(f, out / "cache") for f in files]
    warm = time.perf_counter() - start
    emit("digest", gigabytes=round(size / 1e9, 2), cold_s=round(cold, 2), remembered_s=round(warm, 4),
         gb_per_s=round(size / 1e9 / cold, 2), same=digests == again)


def check_grun_kv(shape: str, device: str) -> None:
    from unlearnkit.model.edits import add_edit, edit_positions, edits_disabled

    model = build(shape, torch.float32, device)
    edit = add_edit(model, [len(model.model.layers) // 2], rank=4)
    with torch.no_grad():
        for module in edit.per_layer.values():
            module.gate.weight.zero_()
            module.gate.bias.fill_(2.0)  # gate ~0.88: the edit acts
            module.source.weight.normal_(0, 1.0)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, model.config.vocab_size, (4, 12), generator=generator).to(device)
    new = 16
    with torch.no_grad():
        start = time.perf_counter()
        cached = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                do_sample=False, pad_token_id=0)
        cached_s = time.perf_counter() - start
        seq = prompt
        for _ in range(new):
            with edit_positions(model, torch.full((prompt.shape[0],), prompt.shape[1] - 1, device=device)):
                step = model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, step], dim=1)
        with edits_disabled(model):
            plain = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                   do_sample=False, pad_token_id=0)
    emit("grun_kv", equal=bool(torch.equal(cached, seq)), edit_reaches_decoding=not torch.equal(cached, plain),
         generate_s=round(cached_s, 3))


def check_watch(shape: str, device: str, steps: int) -> None:
    import unlearnkit.train.loop as trainer
    from unlearnkit.data.batch import Example
    from unlearnkit.data.pairing import UnlearnData
    from unlearnkit.methods.grad_ascent import GradAscent

    vocab = SHAPES[shape]["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(32):
        ids = torch.randint(10, vocab, (256,), generator=generator).tolist()
        rows.append(Example(tuple(ids), tuple([-100] * 32 + ids[32:])))
    data = UnlearnData(forget=rows, pad_id=0)

    def timed(watch: bool) -> float:
        model = build(shape, torch.bfloat16, device)
        cfg = trainer.TrainConfig(steps=steps, lr=1e-6, batch_size=4, progress=False, max_grad_norm=None)
        saved = trainer._logits_watch
        if not watch:
            trainer._logits_watch = lambda m: contextlib.nullcontext({"finite": None})
        try:
            start = time.perf_counter()
            result = trainer.train(model, GradAscent(), data, cfg)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        finally:
            trainer._logits_watch = saved
        assert result.steps == steps, result.stopped
        del model, result
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        return seconds

    timed(True)  # warm-up (kernels, allocator)
    with_watch, without = [], []
    for _ in range(2):
        with_watch.append(timed(True))
        without.append(timed(False))
    emit("watch", steps=steps, with_s=round(min(with_watch), 3), without_s=round(min(without), 3),
         ours_over_without=round(min(with_watch) / min(without), 4))


def check_resume(out: Path) -> None:
    from safetensors.torch import load_file

    env = {**os.environ, "UNLEARNKIT_CACHE": str(out / "cache"), "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
           "UNLEARNKIT_DETERMINISTIC": "1", "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, str(Path(__file__).with_name("gpu_trust_run.py")), "run", "world.size=small",
            "train.steps=6", "attacks.relearn.enabled=false", "eval.before=false", "-q"]
    runs = {}
    for name in ("a", "b"):
        done = subprocess.run([*base, "--out", str(out / name)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = load_file(str(out / name / "model" / "model.safetensors"))
    interrupted = subprocess.run([*base, "--out", str(out / "c")], env={**env, "UNLEARNKIT_CHECK_SIGINT_AT": "3"},
                                 capture_output=True, text=True)
    resumed = subprocess.run([*base, "--out", str(out / "c"), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    runs["c"] = load_file(str(out / "c" / "model" / "model.safetensors"))

    def gap(x, y):
        return max(float((runs[x][k].float() - runs[y][k].float()).abs().max()) for k in runs[x])

    manifest = json.loads((out / "c" / "report.json").read_text())["manifest"]
    emit("resume", interrupted_exit=interrupted.returncode, max_abs_a_b=gap("a", "b"), max_abs_a_resumed=gap("a", "c"),
         device=manifest["device"], packages={k: manifest["packages"][k] for k in ("torch", "transformers")})
    for name in ("a", "b", "c"):
        shutil.rmtree(out / name, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["1b", "tiny"], default="1b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/unlearnkit-trust"))
    parser.add_argument("--only", nargs="*", default=["digest", "grun_kv", "watch", "resume"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    emit("environment", device=args.device, torch=torch.__version__,
         accelerator=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    if "digest" in args.only:
        check_digest(build(args.shape, torch.bfloat16, args.device), args.out)
    if "grun_kv" in args.only:
        check_grun_kv(args.shape, args.device)
    if "watch" in args.only:
        check_watch(args.shape, args.device, args.steps)
    if "resume" in args.only:
        check_resume(args.out)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
