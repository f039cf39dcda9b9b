"""``medsight calibrate TASK SITE_DATA --site NAME``: refit a classifier's temperature,
operating point and gate thresholds on a site's labelled images, as a new task version
``X.Y.Z+site.NAME`` (the original stays untouched)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.cli._progress import progress_bar

if TYPE_CHECKING:
    from medsight.tasks import Task
    from medsight.training.data import Case

console = Console(highlight=False, stderr=True, soft_wrap=True)
_IMAGE_SUFFIXES = [".jpeg", ".jpg", ".png", ".dcm", ".tif", ".tiff"]


def _site_cases(task: Task, data: Path, classes: str | None, patient_pattern: str) -> list[Case]:
    """Cases from class folders (named as the task's outputs, or mapped with --classes) or a
    manifest CSV (columns image, label[, patient]); folders or labels that are not the task's
    outputs are refused, naming them."""
    from medsight.errors import InvalidInputError
    from medsight.training.config import ClassFolders, Manifest
    from medsight.training.data import list_cases

    outputs = [o.name for o in task.spec.outputs]
    if data.suffix.lower() == ".csv":
        if not data.is_file():
            raise InvalidInputError("site manifest not found", path=data)
        names = classes.split(",") if classes else outputs
        import csv

        with data.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
        unknown = sorted({r.get("label", "") for r in rows} - set(names))
        if unknown:
            raise InvalidInputError(
                f"labels {unknown} are not the task's outputs ({', '.join(names)})", path=data
            )
        manifest = Manifest(
            csv=str(data.resolve()),
            label_column="label",
            classes=names,
            patient_column="patient" if rows and "patient" in rows[0] else None,
        )
        return list_cases(manifest)
    if not data.is_dir():
        raise InvalidInputError(
            "site data not found (a folder of class folders or a CSV)", path=data
        )
    folders = sorted(p.name for p in data.iterdir() if p.is_dir())
    if classes:
        names = classes.split(",")
        if len(names) != len(outputs):
            raise InvalidInputError(
                f"--classes names {len(names)} folders for the task's {len(outputs)} outputs "
                f"({', '.join(outputs)})"
            )
    else:
        by_lower = {f.lower(): f for f in folders}
        names = [by_lower.get(o.lower(), o) for o in outputs]
    extra = [f for f in folders if f not in names]
    if extra:
        raise InvalidInputError(
            f"folder(s) {extra} are not the task's outputs ({', '.join(outputs)}); give "
            "--classes with the folder of each output in order",
            path=data,
        )
    present = [n for n in names if (data / n).is_dir()]
    if len(present) < len(names):
        missing = [n for n in names if n not in present]
        raise InvalidInputError(
            f"the site data hold one class only: no folder {missing} (need both classes)",
            path=data,
        )
    return list_cases(
        ClassFolders(
            root=str(data.resolve()),
            classes=names,
            patient_pattern=patient_pattern,
            suffixes=_IMAGE_SUFFIXES,
        )
    )


def calibrate(
    task: Annotated[str, typer.Argument(help="Task name, name@version, or task folder.")],
    site_data: Annotated[
        Path,
        typer.Argument(
            help="The site's labelled images: class folders named as the task's outputs "
            "(or mapped with --classes), or a CSV with columns image, label[, patient]."
        ),
    ],
    site: Annotated[str, typer.Option(help="Site name (lower case, digits, dashes).")],
    tasks_dir: Annotated[Path, typer.Option(help="Where the new version is written.")],
    target_sensitivity: Annotated[
        float, typer.Option(help="Sensitivity the locked point must demonstrate.")
    ] = 0.95,
    classes: Annotated[
        str | None, typer.Option(help="Class folders (or label values) in output order.")
    ] = None,
    patient_pattern: Annotated[
        str,
        typer.Option(help="Class folders: regex on file names, group 1 = patient id."),
    ] = r"^(.+?)(\.[^.]*)?$",
    debug: DEBUG_OPTION = False,
) -> None:
    """Temperature and operating point refitted on the site's images (the target's lower 95%
    bound demonstrated, or nothing is written and the exit code is 1), the gate's thresholds
    widened for the site, the evidence in the new version's model card."""

    def action() -> None:
        from medsight.errors import InvalidInputError
        from medsight.tasks import load_named_task
        from medsight.training.site_calibration import calibrate_site

        try:
            re.compile(patient_pattern)
        except re.error as exc:
            raise InvalidInputError(
                f"--patient-pattern is not a regular expression ({exc})"
            ) from exc
        loaded = load_named_task(task, [tasks_dir] if tasks_dir.is_dir() else [])
        cases = _site_cases(loaded, site_data, classes, patient_pattern)
        command = "medsight " + shlex.join(sys.argv[1:])
        with progress_bar(console) as bar:
            job = bar.add_task("scoring site images", total=len(cases))
            result = calibrate_site(
                loaded,
                cases,
                site,
                target=target_sensitivity,
                tasks_dir=tasks_dir,
                command=command,
                progress=lambda n: bar.advance(job, n),
            )
        point = result.spec.operating_points
        for name, locked in point.items():
            console.print(
                f"{name}: threshold {locked.threshold:.4f}, sensitivity {locked.sensitivity}, "
                f"specificity {locked.specificity}"
            )
        console.print(f"wrote {result.id} {result.version} to {result.folder}")
        console.print("research use only, not for diagnostic use")

    run(action, debug=debug)
