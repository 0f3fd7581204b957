"""Training under a strategy, for `test_strategies.py`: run alone (one process) or under torchrun (2 processes;
the strategy comes from the FSDP_* / ACCELERATE_* variables the test sets, as `accelerate launch` would).

    python strategy_worker.py trajectory OUT   # grad_diff and npo: 4 steps with checkpoints, then a resume from step 2
    python strategy_worker.py methods OUT      # every registered method for 2 steps (LoRA too)

Rank 0 writes OUT.json; every rank writes OUT.rankN.json with the retain rows it trained on.
The global batch is 8 rows whatever the number of processes; every row has the same length, so the
per-rank token means average to the one-process mean.
"""

from __future__ import annotations

import json
import os
import zlib
import sys
from pathlib import Path

import torch

from unlearnkit.data.batch import Example
from unlearnkit.data.pairing import UnlearnData
from unlearnkit.errors import UnlearnError
from unlearnkit.pipeline.stages import unlearn_once
from unlearnkit.model import LoraSpec, tiny_llama, wrap_lora
from unlearnkit.registry import METHODS
from unlearnkit.train import TrainConfig, train
from unlearnkit.train.strategy import requested

GLOBAL_BATCH = 8


def example(seed: int, length: int = 12) -> Example:
    ids = torch.randint(3, 96, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
    return Example(tuple(ids), tuple([-100] * 3 + ids[3:]))


class WordTokenizer:
    """Text to ids for methods that tokenise text of their own (ELM's contexts): one id per word, by a stable hash."""

    bos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [3 + zlib.crc32(word.encode()) % 93 for word in text.split()]


def data() -> UnlearnData:
    forget = [example(i) for i in range(16)]
    return UnlearnData(forget, [example(1000 + i) for i in range(40)], pad_id=0,
                       extra={"idk": [example(2000 + i) for i in range(16)],
                              "generic": [example(3000 + i) for i in range(16)]}, tokenizer=WordTokenizer())


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def settings(steps: int, **kw) -> TrainConfig:
    device = os.environ.get("WORKER_DEVICE", "cpu")  # bench/gpu_check: the same runs on a GPU
    return TrainConfig(steps=steps, lr=1e-3, batch_size=GLOBAL_BATCH // world(), progress=False, device=device, **kw)


def weights(model) -> dict[str, list[float]]:
    return {name: [float(p.double().sum()), float(p.double().abs().sum())] for name, p in model.state_dict().items()}


def model():
    return tiny_llama(96, hidden=32, layers=2, heads=2, seed=0)


def trajectory(out: Path) -> dict:
    results = {}
    for name in ("grad_diff", "npo"):
        seen: list = []
        method = METHODS.build(name)
        forget_loss = method.forget_loss

        def recording(model, batch, ref, forget_loss=forget_loss):
            seen.append([list(map(int, row[:4])) for row in batch.retain.input_ids])
            return forget_loss(model, batch, ref)

        method.forget_loss = recording
        full = train(model(), method, data(), settings(4, save_every=2), out_dir=out / name)
        resumed = train(model(), METHODS.build(name), data(),
                        settings(4, resume_from=str(out / name / "checkpoints" / "step-2")), out_dir=out / f"{name}-resumed")
        results[name] = {"losses": [h["loss"] for h in full.history], "parts": full.history,
                         "resumed": [h["loss"] for h in resumed.history], "seen": seen,
                         "weights": weights(full.model), "resumed_weights": weights(resumed.model),
                         "checkpoints": sorted(p.name for p in (out / name / "checkpoints").iterdir())}
    for key, modifier in (("sam", {"sam_rho": 0.05}), ("gru", {"gru": True})):  # the same global gradients everywhere
        try:
            run = train(model(), METHODS.build("grad_diff"), data(), settings(3, **modifier))
            results[key] = {"losses": [h["loss"] for h in run.history], "weights": weights(run.model)}
        except UnlearnError as err:
            results[key] = {"error": str(err)}
    return results


def methods(out: Path) -> dict:
    results = {}
    for name in [*METHODS.names(), "npo+lora"]:
        lora = name.endswith("+lora")
        method = METHODS.build(name.removesuffix("+lora"))
        net = model()
        if lora:
            net = wrap_lora(net, LoraSpec(r=4))
        try:
            result = unlearn_once(net, method, data(), settings(2), out / name)
        except UnlearnError as err:
            results[name] = {"error": str(err)}
            continue
        results[name] = {"losses": [h["loss"] for h in result.history], "weights": weights(result.model)}
    return results


def main(mode: str, out: str) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    results = {"strategy": requested().name, "world": world(), **(trajectory if mode == "trajectory" else methods)(out)}
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        Path(f"{out}.json").write_text(json.dumps(results))
    if mode == "trajectory":
        Path(f"{out}.rank{rank}.json").write_text(json.dumps({n: results[n]["seen"] for n in ("grad_diff", "npo")}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
