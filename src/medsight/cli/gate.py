"""``medsight gate fit TASK RECIPE``: fit a task's input gate as a new patch version."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.cli._progress import progress_bar

console = Console(highlight=False, stderr=True, soft_wrap=True)
gate_app = typer.Typer(
    help="The input gate: fit its reference distributions and OOD score.", rich_markup_mode=None
)


@gate_app.command("fit")
def fit(
    task: Annotated[str, typer.Argument(help="Task name, name@version or task folder.")],
    recipe: Annotated[Path, typer.Argument(help="The task's training recipe (its split).")],
    tasks_dir: Annotated[
        Path | None, typer.Option(help="Write the new version here (default: MEDSIGHT_TASKS).")
    ] = None,
    extra: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="<dir>", help="A folder of unlabelled in-distribution images (repeatable)."
        ),
    ] = None,
    false_rejection: Annotated[
        float, typer.Option(min=0.001, max=0.2, help="Target false-rejection rate.")
    ] = 0.02,
    debug: DEBUG_OPTION = False,
) -> None:
    """Fit the gate on the recipe's split; writes version x.y.(z+1) with the gate files."""

    def action() -> None:
        from medsight.errors import InvalidInputError
        from medsight.io.raster import RASTER_SUFFIXES
        from medsight.tasks import load_named_task
        from medsight.tasks.registry import user_task_dirs
        from medsight.training import load_config
        from medsight.training.gate_fit import fit_gate, write_gated_task

        base = load_named_task(task)
        config = load_config(recipe)
        target = tasks_dir or next(iter(user_task_dirs()), None)
        if target is None:
            raise InvalidInputError("give --tasks-dir or set MEDSIGHT_TASKS")
        files: list[Path] = []
        for folder in extra or []:
            if not folder.is_dir():
                raise InvalidInputError("--extra must be a folder of images", path=folder)
            files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
        command = "medsight " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        with progress_bar(console) as progress:
            job = progress.add_task("scoring images", total=None)
            result = fit_gate(
                base,
                config,
                extra=files,
                false_rejection_target=false_rejection,
                progress=lambda n: progress.advance(job, n),
            )
        written = write_gated_task(base, result, target, command, false_rejection)
        console.print(f"wrote {written.id} {written.version} to {written.folder}")
        console.print(result.fitted_on)
        if result.threshold is not None:
            rate = result.false_rejection_rate
            console.print(
                f"OOD threshold {result.threshold:.2f}; false rejection on held-out "
                f"in-distribution images: {'n/a' if rate is None else f'{rate:.1%}'} "
                f"(target {false_rejection:.1%})"
            )
        else:
            console.print("the network has no known feature layer: tag and pixel checks only")

    run(action, debug=debug)
