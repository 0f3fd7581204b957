"""`unlearn ...` for bench/gpu_trust_check.py: deterministic algorithms on (UNLEARNKIT_DETERMINISTIC=1), and
with UNLEARNKIT_CHECK_SIGINT_AT=N a real SIGINT sent to itself during training step N (as a Ctrl-C would)."""

from __future__ import annotations

import os
import signal

import torch

import unlearnkit.train.loop as trainer
from unlearnkit.cli import main

if os.environ.get("UNLEARNKIT_DETERMINISTIC"):
    torch.use_deterministic_algorithms(True)
at = int(os.environ.get("UNLEARNKIT_CHECK_SIGINT_AT", "0"))
if at:
    original, calls = trainer._average_gradients_across_ranks, {"n": 0}

    def interrupt_at_step(params, accelerator):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return original(params, accelerator)

    trainer._average_gradients_across_ranks = interrupt_at_step

if __name__ == "__main__":
    main()
