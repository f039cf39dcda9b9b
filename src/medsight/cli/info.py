"""``medsight info PATH``: what a file or folder holds, as a table (or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.errors import NoImageFoundError
from medsight.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, read_image
from medsight.io.slide import SLIDE_SUFFIXES, is_slide_file

RESEARCH_USE = "medsight: research use only, not for diagnostic use."

console = Console(highlight=False)
if not console.is_terminal:
    console = Console(highlight=False, width=200)  # piped output: do not wrap at 80 columns


def _format_spacing(spacing: tuple[float, ...], known: bool) -> str:
    text = " x ".join(f"{s:.4g}" for s in spacing)
    return text if known else f"({text}) unknown"


def _dicom_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    from pydicom.uid import UID

    from medsight.io.dicom import scan_dicom
    from medsight.io.dicom.reader import summarize_stack

    scan = scan_dicom(path)
    rows: list[dict[str, Any]] = []
    for study in scan.studies:
        for series in study.series:
            for number, stack in enumerate(series.stacks):
                summary = summarize_stack(stack)
                syntax = stack.first.transfer_syntax_uid
                warnings = list(series.split_reasons if number == 0 else []) + list(
                    summary.warnings
                )
                rows.append(
                    {
                        "study": study.study_instance_uid,
                        "patient_id": study.patient_id,
                        "series_number": series.series_number,
                        "series": series.series_instance_uid,
                        "description": series.series_description,
                        "modality": series.modality,
                        "stack": stack.description,
                        "size": list(summary.shape),
                        "frames": len(stack.frames),
                        "spacing_mm": list(summary.spacing),
                        "spacing_known": summary.spacing_known,
                        "orientation": summary.orientation_code,
                        "transfer_syntax": UID(syntax).name if syntax else None,
                        "warnings": warnings,
                    }
                )
    skipped = [{"path": str(s.path), "reason": s.reason} for s in scan.skipped]
    return rows, skipped


def _image_row(path: Path) -> dict[str, Any]:
    if is_slide_file(path):
        from medsight.io.slide import open_slide

        with open_slide(path) as slide:
            levels = slide.levels
            return {
                "study": None,
                "series": None,
                "modality": "SM",
                "description": "whole-slide image",
                "stack": f"{len(levels)} levels",
                "size": [levels[0].width, levels[0].height],
                "frames": 1,
                "spacing_mm": [m / 1000 for m in slide.mpp] if slide.mpp else [1.0, 1.0],
                "spacing_known": slide.mpp is not None,
                "orientation": "-",
                "transfer_syntax": None,
                "warnings": [
                    "levels: "
                    + ", ".join(f"{lv.width}x{lv.height} (/{lv.downsample:g})" for lv in levels)
                ],
            }
    image = read_image(path)
    return {
        "file": path.name,
        "study": None,
        "series": None,
        "modality": image.modality,
        "description": image.metadata.get("source_format"),
        "stack": f"{image.spatial_dims}d" + (" sequence" if image.is_sequence else ""),
        "size": list(image.shape) + ([image.num_timepoints] if image.is_sequence else []),
        "frames": image.num_timepoints,
        "spacing_mm": list(image.spacing),
        "spacing_known": image.spacing_known,
        "orientation": image.orientation_code if image.orientation_known else "unknown",
        "transfer_syntax": None,
        "warnings": list(image.warnings),
    }


def _is_image_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    return (
        path.name.lower().endswith(NIFTI_SUFFIXES)
        or suffix in RASTER_SUFFIXES
        or (suffix in SLIDE_SUFFIXES)
    )


def _show(path: Path, rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> None:
    table = Table(title=f"{path}", title_justify="left", show_lines=False)
    for column in (
        "study",
        "series",
        "mod",
        "image",
        "size",
        "spacing (mm)",
        "orient",
        "transfer syntax",
        "warnings",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        series = row.get("file") or " ".join(
            str(v)
            for v in (row.get("series_number"), row.get("description"))
            if v not in (None, "")
        )
        table.add_row(
            (row["study"] or "-")[-12:],
            series or "-",
            row["modality"] or "-",
            row["stack"],
            " x ".join(str(v) for v in row["size"]),
            _format_spacing(tuple(row["spacing_mm"]), row["spacing_known"]),
            row["orientation"],
            row["transfer_syntax"] or "-",
            "\n".join(row["warnings"]) or "",
        )
    console.print(table)
    console.print(RESEARCH_USE)
    if skipped:
        console.print(f"skipped {len(skipped)} file(s):")
        for item in skipped[:20]:
            console.print(f"  {item['path']}: {item['reason']}")
        if len(skipped) > 20:
            console.print(f"  ... and {len(skipped) - 20} more")


def info(
    path: Annotated[Path, typer.Argument(help="A file, a folder tree, or a DICOMDIR.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    debug: DEBUG_OPTION = False,
) -> None:
    """Show studies, series, size, spacing, orientation, transfer syntax and warnings."""

    def action() -> None:
        if not path.exists():
            raise NoImageFoundError("no such file or folder", path=path)
        if path.is_file() and _is_image_file(path):
            rows, skipped = [_image_row(path)], list[dict[str, str]]()
        else:
            rows, skipped = _dicom_rows(path)
            # a folder may also hold photographs and NIfTI volumes: list them too
            readable = [s for s in skipped if _is_image_file(Path(s["path"]))]
            rows.extend(_image_row(Path(s["path"])) for s in readable)
            skipped = [s for s in skipped if s not in readable]
            if not rows:
                reason = skipped[0]["reason"] if skipped else "the folder is empty"
                raise NoImageFoundError(f"no DICOM image found ({reason})", path=path)
        if as_json:
            print(json.dumps({"path": str(path), "images": rows, "skipped": skipped}, indent=2))
        else:
            _show(path, rows, skipped)

    run(action, debug=debug)
