"""The `unlearn` app, the error wrapper every command goes through, and the exit statuses.

Commands live in the modules beside this one (`unlearning`, `evaluating`, `catalog`, `world`, `safety`),
each importing `app` from here; `unlearnkit.cli` imports them all, so the console script and
`python -m unlearnkit.cli` register the same commands once."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
import traceback
from typing import Callable, List, Optional

import typer

from unlearnkit.errors import UnlearnError
from unlearnkit.logs import configure_cli_logging
from unlearnkit.pipeline.outputs import OutputInterrupted
from unlearnkit.secrets import redact

# exit statuses (README "Exit statuses"): 0 done; 1 internal error (a bug); 2 user error;
# 3 the safety-regression guard rejected the run; 4 the divergence guard stopped training; 130 interrupted
EXIT_INTERNAL, EXIT_USER, EXIT_GUARD_REJECTED, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="Remove knowledge from language models, prove it is gone, and report.\n\n"
         "Start with `unlearn run`: it unlearns part of the bundled tiny world (offline, CPU, minutes)"
         " and prints a before/after table. Recipes are YAML; override any field as section.field=value.",
)
world_app = typer.Typer(help="The bundled worlds: tiny (synthetic authors; target and retain models) and safety"
                             " (harmful and benign requests; compliant and aligned models).",
                        no_args_is_help=True)
app.add_typer(world_app, name="world")


def friendly(fn: Callable) -> Callable:
    """Run a command; UnlearnError -> 'error: ...' and exit 2; anything unexpected -> one line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        configure_cli_logging()  # diagnostics on stderr, from rank 0 only under a multi-process launch
        try:
            with _stdout_from_rank0_only():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UnlearnError as err:
            typer.echo(f"error: {redact(str(err))}", err=True)
            raise typer.Exit(EXIT_USER) from None
        except OutputInterrupted as err:  # checkpoints kept in DIR.partial
            again = command_line()
            again += "" if "--resume" in again.split() else " --resume"
            typer.echo(f"{err}:\n  {again}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; nothing was written to the output directory", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as err:  # a bug, not a user error: one line, traceback on request
            if os.environ.get("UNLEARN_DEBUG"):
                traceback.print_exc()
            first = redact(str(err)).strip().splitlines()[0] if str(err).strip() else ""
            typer.echo(f"internal error: {type(err).__name__}: {first} (set UNLEARN_DEBUG=1 for the traceback;"
                       " please report it)", err=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


@contextlib.contextmanager
def _stdout_from_rank0_only():
    """Under `accelerate launch` every rank runs the command; only rank 0 prints tables and results (errors on
    stderr still come from any rank)."""
    if int(os.environ.get("RANK", "0")) == 0:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def command_line() -> str:
    """This command as the user could type it again (`unlearn ...`)."""
    return shlex.join(["unlearn", *sys.argv[1:]])


def _split_recipe(recipe: Optional[str], overrides: Optional[List[str]]) -> tuple[Optional[str], list[str]]:
    overrides = list(overrides or [])
    if recipe is not None and "=" in recipe:
        return None, [recipe, *overrides]
    return recipe, overrides
