"""``medsight convert PATH OUT.nii.gz``: DICOM series (or any readable image) to NIfTI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.errors import InvalidInputError, MedsightError, NoImageFoundError
from medsight.image import Image
from medsight.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, read_image, write_nifti

console = Console(highlight=False, stderr=True, soft_wrap=True)


def _stem(out: Path) -> str:
    name = out.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return out.stem


def _shape(image: Image) -> str:
    """The written array's shape as NIfTI stores it: i x j x k (x t), with the spacing."""
    spatial = list(image.shape) + ([1] if image.spatial_dims == 2 else [])
    time = [image.num_timepoints] if image.is_sequence else []
    spacing = " x ".join(f"{s:g}" for s in image.spacing)
    dims = " x ".join(str(n) for n in spatial + time)
    return f"(shape {dims}; spacing {spacing} mm)"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")[:60]


def convert(
    path: Annotated[Path, typer.Argument(help="A DICOM file, folder or DICOMDIR, or an image.")],
    out: Annotated[Path, typer.Argument(help="Output .nii.gz (or .nii) file.")],
    series_uid: Annotated[
        str | None, typer.Option("--series", help="Convert only this SeriesInstanceUID.")
    ] = None,
    resample_irregular: Annotated[
        bool, typer.Option(help="Resample irregularly spaced slices to the median step.")
    ] = False,
    correct_tilt: Annotated[
        bool, typer.Option(help="Correct gantry tilt by resampling instead of refusing.")
    ] = False,
    debug: DEBUG_OPTION = False,
) -> None:
    """Write one series to NIfTI; several series give one file each, beside OUT.

    A time series or other multi-volume series becomes a 4D NIfTI in acquisition order.
    """

    def action() -> None:
        if not out.name.endswith((".nii", ".nii.gz")):
            raise InvalidInputError(f"output must end in .nii or .nii.gz, got {out.name}")
        if not path.exists():
            raise NoImageFoundError("no such file or folder", path=path)
        options: dict[str, object] = {
            "resample_irregular": resample_irregular,
            "gantry_tilt": "correct" if correct_tilt else "refuse",
        }
        is_plain_file = path.is_file() and (
            path.name.lower().endswith(NIFTI_SUFFIXES) or path.suffix.lower() in RASTER_SUFFIXES
        )
        if is_plain_file:
            image = read_image(path)
            written = write_nifti(image, out)
            console.print(f"wrote {written} {_shape(image)}")
            return
        failures = _convert_dicom(path, out, series_uid, options)
        if failures:
            raise typer.Exit(1)

    run(action, debug=debug)


def _convert_dicom(
    path: Path, out: Path, series_uid: str | None, options: dict[str, object]
) -> int:
    from medsight.io.dicom import read_volumes, scan_dicom

    scan = scan_dicom(path)
    series_list = [
        s for s in scan.series if series_uid is None or s.series_instance_uid == series_uid
    ]
    if not series_list:
        scan.raise_if_refused()
        what = f"no series with UID {series_uid}" if series_uid else "no DICOM image found"
        reason = f" ({scan.skipped[0].reason})" if scan.skipped and not series_uid else ""
        raise NoImageFoundError(what + reason, path=path)
    jobs = [(series, group) for series in series_list for group in series.volume_groups()]
    failures = 0
    for series, group in jobs:
        target = out
        if len(jobs) > 1:
            label = (
                "_".join(
                    _slug(str(v))
                    for v in (series.series_number, series.series_description, series.modality)
                    if v not in (None, "")
                )
                or _slug(series.series_instance_uid)[-16:]
            )
            if sum(1 for s, _ in jobs if s is series) > 1:
                label += "_" + _slug(group[0].label or f"stack{series.stacks.index(group[0]) + 1}")
            target = out.with_name(f"{_stem(out)}_{label}.nii.gz")
        try:
            image: Image = read_volumes(group, **options)  # type: ignore[arg-type]
            written = write_nifti(image, target)
        except MedsightError as exc:
            if len(jobs) == 1:
                raise
            failures += 1
            console.print(f"[red]failed[/] {target.name}: {exc}", markup=True)
            continue
        note = f" ({'; '.join(image.warnings)})" if image.warnings else ""
        console.print(f"wrote {written} {_shape(image)}{note}")
    if failures:
        console.print(f"{failures} of {len(jobs)} image(s) failed")
    return failures
