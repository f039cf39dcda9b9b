"""Turn discovered DICOM stacks into :class:`~medsight.image.Image` objects."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from medsight.errors import AmbiguousInputError, GeometryError, NoImageFoundError
from medsight.image import FrameReference, Identifiers, Image
from medsight.io.dicom._header import FrameInfo, read_header
from medsight.io.dicom.discovery import DicomScan, Series, Stack, scan_dicom
from medsight.io.dicom.geometry import (
    StackGeometry,
    in_plane_affine,
    projection_affine,
    stack_geometry,
)
from medsight.io.dicom.mosaic import is_mosaic, mosaic_geometry, read_mosaics
from medsight.io.dicom.pixels import decode_frames, output_dtype

logger = logging.getLogger(__name__)

__all__ = [
    "StackSummary",
    "read_dicom",
    "read_series",
    "read_stack",
    "read_volumes",
    "summarize_stack",
]

GantryTilt = Literal["refuse", "correct"]

#: header attributes later stages need (task acceptance checks, DICOM result writers)
_KEPT_ATTRIBUTES = (
    "PatientAge",
    "PatientSex",
    "PatientBirthDate",
    "BodyPartExamined",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
    "SliceThickness",
    "KVP",
    "ConvolutionKernel",
    "ProtocolName",
    "StudyDescription",
    "StudyID",
    "StudyTime",
    "ReferringPhysicianName",
    "ImageType",
    "RescaleType",
    "PatientOrientation",
    "ContentDate",
    "ContentTime",
    "AcquisitionDate",
    "SeriesDate",
    "FrameTime",
    "CineRate",
    "RepetitionTime",
    "PatientSize",  # m: with the weight, the body surface area volumes are indexed to
    "PatientWeight",  # kg
)


def _metadata(header: Dataset, frames: list[FrameInfo]) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for keyword in _KEPT_ATTRIBUTES:
        try:
            value = header.get(keyword)
        except Exception:  # a malformed element (bad VR or length): the attribute is unknown
            continue
        if value is None or value == "":
            continue
        if hasattr(value, "__iter__") and not isinstance(value, str | bytes):
            value = [str(v) if not isinstance(v, int | float) else v for v in value]
        elif not isinstance(value, int | float):
            value = str(value)
        metadata[keyword] = value
    metadata["TransferSyntaxUID"] = frames[0].transfer_syntax_uid
    metadata["SourcePhotometricInterpretation"] = frames[0].photometric_interpretation
    if "VOILUTSequence" in header:
        item = header.VOILUTSequence[0]
        descriptor = [int(v) for v in item.LUTDescriptor]
        metadata["VOILUT"] = {
            "first_mapped": descriptor[1],
            "bits": descriptor[2],
            "data": np.asarray(item.LUTData, dtype=np.int64).tolist(),
        }
    spacing_notes = {f.spacing_note for f in frames if f.spacing_note}
    if spacing_notes:
        metadata["PixelSpacingSource"] = "; ".join(sorted(spacing_notes))
    metadata["dicom_header"] = header
    return metadata


def _identifiers(header: Dataset, first: FrameInfo) -> Identifiers:
    def text(keyword: str) -> str | None:
        value = header.get(keyword)
        return str(value) if value not in (None, "") else None

    return Identifiers(
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        frame_of_reference_uid=text("FrameOfReferenceUID"),
        sop_class_uid=first.sop_class_uid,
        accession_number=text("AccessionNumber"),
        study_date=text("StudyDate"),
        series_number=first.series_number,
        series_description=first.series_description,
    )


def _frame_references(frames: list[FrameInfo]) -> tuple[FrameReference, ...]:
    return tuple(
        FrameReference(
            f.path, f.sop_instance_uid, None if f.frame_index is None else f.frame_index + 1
        )
        for f in frames
    )


def _photometric(first: FrameInfo) -> str:
    source = first.photometric_interpretation
    if source.startswith("YBR") or source == "PALETTE COLOR":
        return "RGB"  # converted while decoding (see pixels module doc)
    return source


def _correct_tilt(volume: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift each slice in-plane so the slice origins lie on the normal (linear interpolation)."""
    from scipy.ndimage import shift

    corrected = np.empty(volume.shape, dtype=np.float32)
    for k in range(volume.shape[0]):
        for c in range(volume.shape[3]):
            # volume is (k, rows=j, columns=i, c); offsets are (i, j) in pixels
            corrected[k, :, :, c] = shift(
                volume[k, :, :, c].astype(np.float32),
                (offsets[k, 1], offsets[k, 0]),
                order=1,
                mode="nearest",
            )
    return corrected


def _resample_regular(volume: np.ndarray, distances: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along k onto slices every ``step`` mm from the first."""
    count = int(np.floor((distances[-1] - distances[0]) / step + 1e-6)) + 1
    targets = distances[0] + step * np.arange(count)
    upper = np.clip(np.searchsorted(distances, targets, side="left"), 1, len(distances) - 1)
    lower = upper - 1
    weight = (targets - distances[lower]) / (distances[upper] - distances[lower])
    out = np.empty((count, *volume.shape[1:]), dtype=np.float32)
    for index in range(count):
        w = float(weight[index])
        out[index] = (1 - w) * volume[lower[index]] + w * volume[upper[index]]
    return out


def _volume_geometry(
    stack: Stack, gantry_tilt: GantryTilt, header: Dataset | None = None
) -> tuple[StackGeometry | None, np.ndarray, bool, bool, list[str]]:
    """Affine (and stack geometry for volumes) of a stack, plus known flags and warnings."""
    first = stack.first
    warnings: list[str] = []
    if first.spacing_note:
        warnings.append(f"pixel spacing from {first.spacing_note}")
    if stack.kind == "volume":
        geometry = stack_geometry(stack.frames, gantry_tilt=gantry_tilt)
        return geometry, geometry.affine, first.pixel_spacing is not None, True, warnings
    if first.position is not None and first.orientation is not None:
        return None, in_plane_affine(first), first.pixel_spacing is not None, True, warnings
    header = header if header is not None else read_header(first.path)
    affine, orientation_known = projection_affine(
        first.pixel_spacing, header.get("PatientOrientation")
    )
    if first.pixel_spacing is None:
        warnings.append("pixel spacing unknown: the affine uses 1 mm pixels as a placeholder")
    return None, affine, first.pixel_spacing is not None, orientation_known, warnings


@dataclass(frozen=True)
class StackSummary:
    """Geometry of a stack from its headers alone (no pixel decoding)."""

    affine: np.ndarray
    shape: tuple[int, ...]
    orientation_code: str
    spacing: tuple[float, ...]
    spacing_known: bool
    warnings: tuple[str, ...]


def summarize_stack(stack: Stack) -> StackSummary:
    """What :func:`read_stack` would produce, geometry-wise, without decoding any pixels.

    Geometry problems (gaps, tilt, broken stacks) become warnings instead of errors.
    """
    first = stack.first
    if is_mosaic(first):
        untiled, affine = mosaic_geometry(read_header(first.path), first)
        probe = Image(np.empty((1, 1, 1, 1)), affine, 3)
        note = (
            f"Siemens mosaic: {untiled[2]} slices tiled in one {first.columns} x {first.rows} image"
        )
        return StackSummary(affine, untiled, probe.orientation_code, probe.spacing, True, (note,))
    try:
        geometry, affine, spacing_known, _, warnings = _volume_geometry(stack, "correct")
        if geometry is not None:
            warnings.extend(geometry.warnings)
    except GeometryError as exc:
        affine, spacing_known, warnings = in_plane_affine(first), False, [exc.message]
    spatial_dims = 3 if stack.kind == "volume" else 2
    shape = (first.columns, first.rows, len(stack.frames))[:spatial_dims]
    if stack.kind == "cine":
        shape = (first.columns, first.rows)
    probe = Image(np.empty((1,) + (1,) * spatial_dims), affine, spatial_dims)
    return StackSummary(
        affine=affine,
        shape=shape,
        orientation_code=probe.orientation_code,
        spacing=probe.spacing,
        spacing_known=spacing_known,
        warnings=tuple(warnings),
    )


def read_stack(
    stack: Stack,
    *,
    resample_irregular: bool = False,
    gantry_tilt: GantryTilt = "refuse",
    workers: int | None = None,
) -> Image:
    """Read one stack into an :class:`Image` (3D volume, 2D image, or 2D cine sequence)."""
    return read_volumes(
        [stack], resample_irregular=resample_irregular, gantry_tilt=gantry_tilt, workers=workers
    )


def read_volumes(
    stacks: list[Stack],
    *,
    resample_irregular: bool = False,
    gantry_tilt: GantryTilt = "refuse",
    workers: int | None = None,
) -> Image:
    """Read stacks of identical geometry as one image; several stacks make a sequence (t)."""
    first_stack = stacks[0]
    first = first_stack.first
    header = read_header(first.path)  # once: geometry, dtype, identifiers and metadata use it
    if is_mosaic(first):
        return _read_mosaic_series([f for stack in stacks for f in stack.frames], header)
    geometry, affine, spacing_known, orientation_known, warnings = _volume_geometry(
        first_stack, gantry_tilt, header
    )
    for other in stacks[1:]:
        if len(other.frames) != len(first_stack.frames):
            counts = ", ".join(f"{s.label or 'volume'}: {len(s.frames)}" for s in stacks)
            raise GeometryError(
                f"the volumes of the sequence differ in slice count ({counts}): a slice is "
                "missing in one phase or volume; read the stacks separately",
                path=other.first.path,
            )
        if other.kind == "volume":
            other_geometry = stack_geometry(other.frames, gantry_tilt=gantry_tilt)
            if not np.allclose(other_geometry.affine, affine, atol=1e-3):
                raise GeometryError(
                    "volumes of the sequence have different geometry; read them separately",
                    path=other.first.path,
                )
    if geometry is not None:
        warnings.extend(geometry.warnings)

    frames = [f for stack in stacks for f in stack.frames]
    out_dtype = output_dtype(frames, header)
    channels = (
        3
        if first.samples_per_pixel > 1 or first.photometric_interpretation == "PALETTE COLOR"
        else 1
    )
    decoded = decode_frames(frames, out_dtype=out_dtype, channels=channels, workers=workers)

    is_sequence = len(stacks) > 1 or first_stack.kind == "cine"
    if first_stack.kind == "volume":
        per_volume = len(first_stack.frames)
        volumes = []
        for index in range(len(stacks)):
            volume = decoded[index * per_volume : (index + 1) * per_volume]
            if geometry is not None and geometry.in_plane_offsets is not None:
                volume = _correct_tilt(volume, geometry.in_plane_offsets)
            if geometry is not None and not geometry.regular and resample_irregular:
                step = float(np.linalg.norm(affine[:3, 2]))
                volume = _resample_regular(volume, geometry.distances, step)
            volumes.append(volume)
        if geometry is not None and not geometry.regular and resample_irregular:
            warnings = [w for w in warnings if not w.startswith("irregular")]
            warnings.append(
                f"irregular slices resampled to the median step {np.linalg.norm(affine[:3, 2]):.4g}"
                " mm by linear interpolation"
            )
        # (t, k, rows=j, columns=i, c) -> (c, i, j, k, t)
        stacked = volumes[0][np.newaxis] if len(volumes) == 1 else np.stack(volumes)
        array = stacked.transpose(4, 3, 2, 1, 0)
        if not is_sequence:
            array = array[..., 0]
        spatial_dims = 3
    else:
        # (t, rows=j, columns=i, c) -> (c, i, j, t)
        array = decoded.transpose(3, 2, 1, 0)
        if not is_sequence:
            array = array[..., 0]
        spatial_dims = 2

    thicknesses = sorted({f.slice_thickness for f in frames if f.slice_thickness is not None})
    if spatial_dims == 3 and len(thicknesses) > 1:
        warnings.append(f"slices of different thickness in one image ({thicknesses} mm)")
    references = {f.frame_of_reference_uid for f in frames if f.frame_of_reference_uid}
    if len(references) > 1:
        warnings.append(
            f"the instances carry {len(references)} different Frame of Reference UIDs although "
            "their geometry forms one image (a de-identification artefact?): results use the "
            "first instance's"
        )
    for warning in warnings:
        logger.warning("%s: %s", first.path, warning)
    return Image(
        array=array,
        affine=affine,
        spatial_dims=spatial_dims,
        modality=first.modality,
        photometric_interpretation=_photometric(first),
        identifiers=_identifiers(header, first),
        frames=_frame_references(frames),
        is_sequence=is_sequence,
        spacing_known=spacing_known,
        orientation_known=orientation_known,
        metadata={
            **_metadata(header, frames),
            **({"SliceThicknesses": thicknesses} if len(thicknesses) > 1 else {}),
            **_cycle_positions(frames, array.shape[-1] if is_sequence else 1),
        },
        warnings=tuple(warnings),
    )


def _cycle_positions(frames: list[FrameInfo], phases: int) -> dict[str, object]:
    """Per time point of a cine (frames are stored phase by phase): ``TriggerTimes``, each
    phase's median trigger time in ms, and ``CardiacCyclePositions``, END_DIASTOLE /
    END_SYSTOLE where every frame of that phase carries the marker (None elsewhere; absent
    when no frame is marked)."""
    if phases < 1 or len(frames) % phases:
        return {}
    per_phase = len(frames) // phases
    found: dict[str, object] = {}
    times = [f.trigger_time for f in frames]
    if phases > 1 and all(t is not None for t in times):
        found["TriggerTimes"] = [  # each phase's median: which phases of the cycle these are
            round(float(np.median(times[t * per_phase : (t + 1) * per_phase])), 1)  # type: ignore[arg-type]
            for t in range(phases)
        ]
    if not any(f.cardiac_cycle_position for f in frames):
        return found
    positions: list[str | None] = []
    for t in range(phases):
        marks = {f.cardiac_cycle_position for f in frames[t * per_phase : (t + 1) * per_phase]}
        mark = marks.pop() if len(marks) == 1 else None
        positions.append(mark if mark in ("END_DIASTOLE", "END_SYSTOLE") else None)
    return {**found, "CardiacCyclePositions": positions}


def _read_mosaic_series(frames: list[FrameInfo], header: Dataset) -> Image:
    """Siemens mosaic files, one volume each (several: a sequence in acquisition order)."""
    frames = sorted(frames, key=lambda f: (f.acquisition_number or 0, f.instance_number or 0))
    values, affine, warnings = read_mosaics(frames)
    is_sequence = values.shape[-1] > 1
    array = values[np.newaxis] if is_sequence else values[np.newaxis, ..., 0]
    first = frames[0]
    return Image(
        array=array,
        affine=affine,
        spatial_dims=3,
        modality=first.modality,
        photometric_interpretation=_photometric(first),
        identifiers=_identifiers(header, first),
        frames=_frame_references(frames),
        is_sequence=is_sequence,
        spacing_known=True,
        orientation_known=True,
        metadata=_metadata(header, frames),
        warnings=tuple(warnings),
    )


def read_series(
    series: Series,
    *,
    resample_irregular: bool = False,
    gantry_tilt: GantryTilt = "refuse",
    workers: int | None = None,
) -> list[Image]:
    """Every image of a series: one per stack, a sequence per volume group."""
    return [
        read_volumes(
            group, resample_irregular=resample_irregular, gantry_tilt=gantry_tilt, workers=workers
        )
        for group in series.volume_groups()
    ]


def _choose_one(scan: DicomScan, path: Path, series_instance_uid: str | None) -> list[Stack]:
    candidates = scan.series
    if series_instance_uid is not None:
        candidates = [s for s in candidates if s.series_instance_uid == series_instance_uid]
        if not candidates:
            raise NoImageFoundError(f"no series with UID {series_instance_uid}", path=path)
    if not candidates:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in scan.skipped[:3])
        raise NoImageFoundError(
            "no DICOM image found" + (f" ({reasons})" if reasons else " (the folder is empty)"),
            path=path,
        )
    groups = [group for series in candidates for group in series.volume_groups()]
    if len(groups) == 1:
        return groups[0]
    listing = "; ".join(
        f"series {s.series_number} {s.series_instance_uid}: "
        + ", ".join(stack.description for stack in s.stacks)
        for s in candidates
    )
    raise AmbiguousInputError(
        f"{len(groups)} images found where one was expected ({listing}); "
        "pass series_instance_uid, or use scan_dicom() and read_stack() to choose",
        path=path,
    )


def read_dicom(
    path: str | Path,
    *,
    series_instance_uid: str | None = None,
    resample_irregular: bool = False,
    gantry_tilt: GantryTilt = "refuse",
    workers: int | None = None,
) -> Image:
    """Read the one image under ``path`` (a file, folder or DICOMDIR).

    Raises :class:`AmbiguousInputError` when the path holds several images; then choose with
    ``series_instance_uid`` or with :func:`scan_dicom` and :func:`read_stack`.
    """
    path = Path(path)
    scan = scan_dicom(path, workers=workers)
    if path.is_file() and not scan.series and scan.skipped:
        scan.raise_if_refused()
        skip = scan.skipped[0]
        if skip.reason.startswith("no pixel data"):
            from medsight.errors import NoPixelDataError

            raise NoPixelDataError(f"{skip.reason}: not an image", path=path)
        from medsight.errors import DicomReadError

        raise DicomReadError(skip.reason, path=path)
    stacks = _choose_one(scan, path, series_instance_uid)
    return read_volumes(
        stacks, resample_irregular=resample_irregular, gantry_tilt=gantry_tilt, workers=workers
    )
