"""Turn exceptions into one clear line and the exit codes of DESIGN.md."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from medsight.errors import MedsightError

T = TypeVar("T")

error_console = Console(stderr=True, highlight=False, soft_wrap=True)

DEBUG_OPTION = Annotated[
    bool, typer.Option("--debug", help="Show a traceback for internal errors.")
]
MAX_MEMORY_OPTION = Annotated[
    str | None,
    typer.Option(
        help="Stop an analysis whose process would use more memory than this (e.g. 4G): "
        "a clear error (exit 2) instead of swapping.",
    ),
]


def run(action: Callable[[], T], *, debug: bool = False) -> T:
    """Run a command body: medsight errors exit with their code, bugs with 70."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # library warnings (pydicom's about non-conformant files) go to the log, not raw to the
    # terminal: what matters reaches the user as a medsight warning or error
    logging.captureWarnings(True)
    # pydicom sets its own logger to WARNING, so its notes on non-conformant values (a UID
    # part with a leading zero, on every file of a series) passed the root's ERROR level
    logging.getLogger("pydicom").setLevel(logging.DEBUG if debug else logging.ERROR)
    try:
        return action()
    except typer.Exit:
        raise  # a command's own exit code (e.g. 1 for a partial batch)
    except MedsightError as exc:
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, emoji=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        error_console.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug:
            traceback.print_exc()
        error_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(a bug in medsight; rerun with --debug for a traceback and report it)",
            markup=True,
            emoji=False,
        )
        raise typer.Exit(70) from None
