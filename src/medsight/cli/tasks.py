"""``medsight tasks`` and ``medsight export TASK``: list tasks, export a task to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medsight.cli._errors import DEBUG_OPTION, run

console = Console(highlight=False)

TASKS_DIR_OPTION = Annotated[
    list[Path] | None, typer.Option("--tasks-dir", metavar="<dir>", help="Extra task folder(s).")
]


def list_tasks(tasks_dir: TASKS_DIR_OPTION = None, debug: DEBUG_OPTION = False) -> None:
    """List the tasks medsight can run (shipped and user tasks), newest version first."""

    def action() -> None:
        from medsight.tasks import discover_tasks

        catalog = discover_tasks(tasks_dir or [])
        table = Table(title="tasks", title_justify="left")
        for column in ("id", "version", "kind", "inputs", "weights", "gate", "source"):
            table.add_column(column, overflow="fold", no_wrap=column == "id")
        for task in catalog.tasks:
            accept = task.spec.acceptance
            inputs = f"{accept.spatial_dims}D {'/'.join(accept.modalities) or 'any modality'}"
            table.add_row(
                task.id,
                task.version,
                task.spec.kind,
                inputs,
                "installed" if task.weights_available else "not trained yet",
                "fitted" if task.spec.gate.ood else "no OOD",
                "shipped" if task.shipped else str(task.folder),
            )
        console.print(table)
        for folder, problem in catalog.problems.items():
            console.print(f"[red]invalid task[/] {folder}: {problem}", markup=True)
        console.print("medsight: research use only, not for diagnostic use.")

    run(action, debug=debug)


def export(
    task: Annotated[str, typer.Argument(help="Task name, name@version, or task folder.")],
    out: Annotated[Path | None, typer.Option(help="Write the .onnx here (default: cache).")] = None,
    tasks_dir: TASKS_DIR_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Export a task's networks to ONNX for ONNX Runtime (also done on first use)."""

    def action() -> None:
        from medsight.inference import export_onnx
        from medsight.tasks import load_named_task

        loaded = load_named_task(task, tasks_dir or [])
        for index, network in enumerate(loaded.spec.networks):
            target = None
            if out is not None:
                target = (
                    out
                    if len(loaded.spec.networks) == 1
                    else (out.with_name(f"{out.stem}_{network.name}.onnx"))
                )
            path = export_onnx(loaded, target, network_index=index)
            console.print(f"exported {loaded.id} {loaded.version} {network.name} -> {path}")

    run(action, debug=debug)


def import_model(
    bundle: Annotated[Path, typer.Argument(help="A MONAI bundle folder.")],
    out: Annotated[
        Path | None, typer.Option(help="Task directory to write into (default: MEDSIGHT_TASKS).")
    ] = None,
    task_id: Annotated[str | None, typer.Option("--id", help="Task id (default: bundle name).")] = (
        None
    ),
    debug: DEBUG_OPTION = False,
) -> None:
    """Turn a MONAI bundle into a medsight task folder that `medsight analyze` runs."""

    def action() -> None:
        from medsight.errors import InvalidInputError
        from medsight.tasks.bundle_import import import_bundle
        from medsight.tasks.registry import user_task_dirs

        target = out or next(iter(user_task_dirs()), None)
        if target is None:
            raise InvalidInputError("give --out or set MEDSIGHT_TASKS to a task directory")
        task = import_bundle(bundle, target, task_id=task_id)
        console.print(f"imported {task.id} {task.version} into {task.folder}")
        console.print(f"run it: medsight analyze IMAGE --task {task.id} --tasks-dir {target}")

    run(action, debug=debug)
