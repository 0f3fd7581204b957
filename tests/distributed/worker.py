"""Run under torchrun with 2 processes: trains with the one trainer (accelerate, gloo, CPU) and
writes what each rank saw — the retain rows of every batch and a checksum of the final weights."""

import json
import sys
from dataclasses import dataclass

import torch

from unlearnkit.data.batch import Example
from unlearnkit.data.pairing import UnlearnData
from unlearnkit.methods.grad_diff import GradDiff
from unlearnkit.model import tiny_llama
from unlearnkit.train import TrainConfig, train


@dataclass
class RecordingGradDiff(GradDiff):
    """GradDiff that remembers the retain rows of each batch it sees."""

    def __post_init__(self):
        super().__post_init__()
        self.seen: list[list[int]] = []

    def forget_loss(self, model, batch, ref):
        self.seen.append([int(row[row != 0].sum()) for row in batch.retain.input_ids])
        return super().forget_loss(model, batch, ref)


def example(length: int, seed: int) -> Example:
    ids = torch.randint(3, 64, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
    return Example(tuple(ids), tuple([-100] * 2 + ids[2:]))


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    data = UnlearnData([example(8 + i % 3, i) for i in range(16)],
                       [example(9 + i % 4, 1000 + i) for i in range(32)], pad_id=0)
    method = RecordingGradDiff()
    result = train(tiny_llama(64, hidden=32, layers=2, heads=2, seed=0), method, data,
                   TrainConfig(steps=4, lr=1e-3, batch_size=4, progress=False))
    rank = torch.distributed.get_rank()
    checksum = float(sum(p.double().sum() for p in result.model.parameters()))
    with open(f"{out_path}.{rank}", "w") as fh:
        json.dump({"rank": rank, "world": torch.distributed.get_world_size(), "seen": method.seen,
                   "checksum": checksum}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
