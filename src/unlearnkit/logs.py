"""Diagnostics go through the standard `logging` module, under the logger ``unlearnkit``.

Library functions take ``log=info`` by default, so an application decides what to show (configure the
``unlearnkit`` logger). The command line shows INFO messages on stderr, from rank 0 only when several
processes run (`accelerate launch`, `torchrun`), so a sharded evaluation prints its progress once; other
ranks show warnings and errors. Progress bars (tqdm) are separate and stay.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("unlearnkit")


def info(message: str) -> None:
    """Log one diagnostic line (what the pipeline's `log` callables default to)."""
    logger.info(message)


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a record is emitted (so test runners that swap it see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def configure_cli_logging() -> None:
    """One stderr handler on the ``unlearnkit`` logger: INFO on rank 0, WARNING on the other ranks."""
    for handler in [h for h in logger.handlers if isinstance(h, _Stderr)]:
        logger.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING)
    logger.propagate = False
    if not os.environ.get("CUDA_VISIBLE_DEVICES") and not os.path.exists("/dev/nvidia0"):
        # DeepSpeed (imported by accelerate when installed) warns on every command that it fell back to the CPU;
        # on a machine without a GPU say so up front, and leave a GPU machine's detection alone
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
