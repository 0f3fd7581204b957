"""`unlearn`: the command line. Every command turns user errors into one line and a non-zero exit.

`main` is the console script; `python -m unlearnkit.cli` (e.g. under `accelerate launch -m`) runs it too.
Importing the command modules registers their commands on `app`, in the order `--help` lists them.
"""

from __future__ import annotations

import os

# each import registers its commands, in the order --help lists them
from unlearnkit.cli import unlearning  # noqa: F401, I001  (run, compare)
from unlearnkit.cli import evaluating  # noqa: F401  (eval)
from unlearnkit.cli import attacking  # noqa: F401  (attack)
from unlearnkit.cli import catalog  # noqa: F401  (ls, show, validate)
from unlearnkit.cli import safety  # noqa: F401  (craft, inspect)
from unlearnkit.cli import world  # noqa: F401  (world build, world info)
from unlearnkit.cli.app import (EXIT_DIVERGED, EXIT_GUARD_REJECTED, EXIT_INTERNAL, EXIT_INTERRUPTED,  # noqa: F401
                                EXIT_USER, app, friendly)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' own per-file progress bars and load reports drown ours; errors still show
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    app()

