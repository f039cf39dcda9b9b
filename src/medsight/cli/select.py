"""``medsight select-for-labelling TASK FOLDER``: which cases to annotate next."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import typer

from medsight.cli._errors import DEBUG_OPTION, run


def select_for_labelling(
    task: Annotated[str, typer.Argument(help="Task name, name@version, or task folder.")],
    folder: Annotated[Path, typer.Argument(help="Unlabelled images (any readable format).")],
    method: Annotated[str, typer.Option(help="entropy or tta.")] = "entropy",
    top: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many cases to list.")] = 20,
    tasks_dir: Annotated[
        list[Path] | None, typer.Option(metavar="<dir>", help="Extra task folder(s).")
    ] = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Rank unlabelled images by model uncertainty (CSV on stdout, most uncertain first)."""

    def action() -> None:
        from medsight.errors import InvalidInputError, NoImageFoundError, TaskMismatchError
        from medsight.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, read_image
        from medsight.tasks import load_named_task
        from medsight.training.selection import rank_for_labelling

        if method not in ("entropy", "tta"):
            raise InvalidInputError(f"method must be entropy or tta, got {method!r}")
        loaded = load_named_task(task, tasks_dir or [])
        if loaded.spec.kind != "classification":
            raise TaskMismatchError(f"task {loaded.id} is not a classifier")
        paths = (
            sorted(
                p
                for p in folder.rglob("*")
                if p.is_file()
                and (
                    p.suffix.lower() in RASTER_SUFFIXES | {".dcm"}
                    or p.name.lower().endswith(NIFTI_SUFFIXES)
                )
            )
            if folder.is_dir()
            else []
        )
        if not paths:
            raise NoImageFoundError("no images found", path=folder)
        ranked = rank_for_labelling(loaded, [(p, read_image(p)) for p in paths], method)  # type: ignore[arg-type]
        writer = csv.writer(sys.stdout)
        writer.writerow(
            ["rank", "path", f"uncertainty_{method}", *[f"p_{o.name}" for o in loaded.spec.outputs]]
        )
        for number, item in enumerate(ranked[:top], start=1):
            writer.writerow(
                [
                    number,
                    str(item.path),
                    f"{item.score:.6f}",
                    *[f"{item.probabilities[o.name]:.6f}" for o in loaded.spec.outputs],
                ]
            )

    run(action, debug=debug)
