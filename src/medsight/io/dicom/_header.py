"""Read DICOM headers robustly and describe every 2D frame they hold.

A classic file holds one frame; an enhanced multi-frame object holds many, each with its own
position, orientation, spacing and rescale in the per-frame functional groups; a cine holds
many frames with no position at all. Everything downstream (series splitting, geometry,
decoding) works on the same :class:`FrameInfo` records, whatever the file layout.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medsight.errors import DicomReadError
from medsight.io.limits import ReadLimits, ResourceLimitError, current_limits, limit_message

logger = logging.getLogger(__name__)

#: SOP classes that never hold an image to analyse (structured reports, presentation states,
#: RT plans...); detected by the absence of pixel data, but named here for clearer messages.
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER_BYTES = 4096
_PIXEL_TAG_NUMBERS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})

#: The top-level elements a folder scan reads (``describe_frames``, ``has_pixel_data`` and the
#: spacing helpers). A scan parses only these: pydicom converts an element in about 20 us, so
#: parsing all of a CT header's ~135 elements cost 3.7 of 4.6 ms per file, the larger part of
#: reading an uncompressed series. The header a series keeps (``read_header`` without
#: ``only``) is still parsed whole. tests/io/test_dicom_scan_parse.py checks that both parses
#: describe every test file alike.
SCAN_KEYWORDS = (
    *_PIXEL_TAGS,
    "AcquisitionNumber", "BitsAllocated", "BitsStored", "CardiacCyclePosition", "Columns",
    "EchoTime",
    "EstimatedRadiographicMagnificationFactor", "FrameOfReferenceUID", "GridFrameOffsetVector",
    "ImageOrientationPatient", "ImagePositionPatient", "ImageType", "ImagerPixelSpacing",
    "InstanceNumber", "Modality", "ModalityLUTSequence", "NominalScannedPixelSpacing",
    "NumberOfFrames", "PatientID", "PerFrameFunctionalGroupsSequence",
    "PhotometricInterpretation", "PixelRepresentation", "PixelSpacing", "RescaleIntercept",
    "RescaleSlope", "Rows", "SOPClassUID", "SOPInstanceUID", "SamplesPerPixel",
    "SequenceOfUltrasoundRegions", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
    "SharedFunctionalGroupsSequence", "SliceThickness", "StudyDate", "StudyDescription",
    "StudyInstanceUID",
    "TemporalPositionIdentifier", "TriggerTime",
)  # fmt: skip
SCAN_TAGS = frozenset(int(tag_for_keyword(k) or 0) for k in SCAN_KEYWORDS)


@dataclass(frozen=True)
class NativePixels:
    """Where the uncompressed pixels of a single-frame grayscale file lie, for direct reads."""

    offset: int  # byte position of the Pixel Data value in the file
    dtype: str  # numpy dtype string including byte order, e.g. "<u2"
    bits_stored: int


@dataclass(frozen=True)
class FrameInfo:
    """What medsight needs to know about one 2D frame, from the header alone."""

    path: Path
    frame_index: int | None  # 0-based index inside a multi-frame object, None if single-frame
    sop_instance_uid: str | None
    sop_class_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    modality: str | None
    rows: int
    columns: int
    samples_per_pixel: int
    photometric_interpretation: str
    transfer_syntax_uid: str | None
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 direction cosines)
    position: tuple[float, float, float] | None  # ImagePositionPatient of the first pixel
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns), mm
    spacing_note: str | None  # how the spacing was obtained when it is not plain PixelSpacing
    rescale_slope: float
    rescale_intercept: float
    has_modality_lut_sequence: bool
    instance_number: int | None
    acquisition_number: int | None
    temporal_position: float | None  # temporal position index, trigger time or content time
    echo_time: float | None
    image_type: tuple[str, ...]
    patient_id: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    frame_of_reference_uid: str | None = None
    slice_thickness: float | None = None
    # END_DIASTOLE / END_SYSTOLE where the source marks the frame's place in the heart cycle
    # (Frame Content Sequence of an enhanced object, or a top-level element)
    cardiac_cycle_position: str | None = None
    trigger_time: float | None = None  # ms after the R wave (TriggerTime, or the nominal delay)
    native: NativePixels | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_multiframe(self) -> bool:
        return self.frame_index is not None


def _drop_unparseable(
    dataset: Dataset,
    limits: ReadLimits,
    path: Path,
    depth: int = 0,
    only: frozenset[int] | None = None,
) -> list[str]:
    """Parse every element now (pydicom parses lazily) and drop those that cannot be parsed
    (an unknown VR, a length past the end): one broken element, often private, must not
    make a later stage fail, nor make the whole file unreadable. Returns what was dropped.
    Sequences nested deeper than the ``sequence_depth`` limit are refused. With ``only``,
    just those top-level elements (and everything inside them) are parsed; the sizes of all
    are still checked."""
    if depth > limits.sequence_depth:
        limits.check("sequence_depth", depth, f"sequences nested {depth} deep", path)
    dropped: list[str] = []
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None:  # deferred: a large value
            if tag in _PIXEL_TAG_NUMBERS:
                continue  # pixel data stays on disk until it is decoded
            size = raw.length if raw.length != 0xFFFFFFFF else 0
            limits.check("header_bytes", size, f"an element of {size:,} bytes ({tag})", path)
        if only is not None and tag not in only:
            continue
        try:
            element = dataset[tag]
            if element.VR == "SQ":
                for item in element.value:
                    dropped += _drop_unparseable(item, limits, path, depth + 1)
        except (ResourceLimitError, RecursionError):
            raise
        except Exception as exc:
            del dataset[tag]
            dropped.append(f"{tag} ({type(exc).__name__})")
    return dropped


def parse_elements(dataset: Dataset, path: Path) -> Dataset:
    """Every element parsed now, those that cannot be dropped (see ``_drop_unparseable``)."""
    return _parsed(dataset, path, current_limits())


def _parsed(
    dataset: Dataset, path: Path, limits: ReadLimits, only: frozenset[int] | None = None
) -> Dataset:
    header_bytes = _pixel_data_offset(dataset)
    if header_bytes is not None:
        limits.check("header_bytes", header_bytes, f"a header of {header_bytes:,} bytes", path)
    dropped = _drop_unparseable(dataset, limits, path, only=only)
    if dropped:
        logger.warning("%s: unreadable element(s) ignored: %s", path.name, "; ".join(dropped))
    return dataset


def _pixel_data_offset(dataset: Dataset) -> int | None:
    for tag in _PIXEL_TAGS:
        if tag in dataset:
            raw = dataset.get_item(tag, keep_deferred=True)
            tell = getattr(raw, "value_tell", None)
            return int(tell) if tell is not None else None
    return None


def _check_deflated(path: Path, limits: ReadLimits) -> None:
    """A Deflated transfer syntax is inflated whole by pydicom: measure the inflated size
    first, by streaming with a cap, so a deflate bomb is refused before it is expanded."""
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        meta = read_file_meta_info(path)
    except Exception:  # no file meta (or broken): pydicom will not inflate it either
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    group_length = int(meta.get("FileMetaInformationGroupLength") or 0)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    cap = limits.header_bytes + limits.image_bytes
    with path.open("rb") as handle:
        handle.seek(132 + 12 + group_length)
        while chunk := handle.read(1 << 20):
            data = inflater.decompress(chunk, 1 << 24)
            while True:
                inflated += len(data)
                if inflated > cap:
                    found = (
                        f"a deflated dataset inflating to over {inflated:,} bytes (allowed: "
                        f"header_bytes + image_bytes = {cap:,})"
                    )
                    raise ResourceLimitError(
                        limit_message("image_bytes", found, limits.image_bytes),
                        path=path,
                        limit="image_bytes",
                    )
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, 1 << 24)


def _check_file(path: Path, limits: ReadLimits) -> None:
    size = path.stat().st_size
    limits.check("file_bytes", size, f"a file of {size:,} bytes", path)
    _check_deflated(path, limits)


def read_header(
    path: Path, limits: ReadLimits | None = None, *, only: frozenset[int] | None = None
) -> Dataset:
    """Read a DICOM header without pixel data, with or without preamble and file meta.
    ``only``: parse just these top-level elements now (``SCAN_TAGS`` for a folder scan).

    Raises :class:`InvalidDicomError` for a file that is not DICOM at all, and
    :class:`~medsight.io.limits.ResourceLimitError` for one over the resource limits.
    """
    limits = limits or current_limits()
    _check_file(path, limits)
    try:
        return _read_header(path, limits, only)
    except RecursionError:  # pydicom parses nested sequences recursively
        raise ResourceLimitError(
            limit_message(
                "sequence_depth",
                "sequences nested deeper than the parser can follow",
                limits.sequence_depth,
            ),
            path=path,
            limit="sequence_depth",
        ) from None


def _read_header(path: Path, limits: ReadLimits, only: frozenset[int] | None) -> Dataset:
    # defer_size reads the whole header, so the presence of pixel data is known, but leaves
    # the pixel bytes on disk.
    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        infer_transfer_syntax(dataset)
        return _parsed(dataset, path, limits, only)
    except InvalidDicomError:
        pass
    # Older exports have no 128-byte preamble and no file meta: pydicom reads them only with
    # force=True, which also "reads" any random file, so demand a plausible DICOM dataset.
    dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
    try:
        plausible = bool(dataset.get("SOPClassUID")) or bool(dataset.get("Modality"))
    except Exception:  # garbage parsed as elements may fail on access
        plausible = False
    if not plausible or len(dataset) < 3:
        raise InvalidDicomError("no DICOM preamble, file meta or SOP Class UID")
    infer_transfer_syntax(dataset)
    return _parsed(dataset, path, limits, only)


def infer_transfer_syntax(dataset: Dataset) -> None:
    """Set a missing Transfer Syntax UID from the encoding pydicom detected (native only)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = dataset.original_encoding
    if implicit is None or little is None:
        return
    if meta is None:
        dataset.file_meta = FileMetaDataset()
    if implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    dataset.file_meta.TransferSyntaxUID = syntax


def _float_tuple(value: Any, length: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != length or not all(np.isfinite(numbers)):
        return None
    return numbers


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _group_item(container: Dataset | None, sequence: str) -> Dataset | None:
    if container is None:
        return None
    items = container.get(sequence)
    return items[0] if items else None


def _functional(
    shared: Dataset | None, per_frame: Dataset | None, sequence: str, keyword: str
) -> Any:
    """A value from the per-frame functional groups, falling back to the shared ones."""
    for container in (per_frame, shared):
        item = _group_item(container, sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _spacing_pair(value: Any) -> tuple[float, float] | None:
    """A row/column spacing, or None when absent, malformed, zero or negative: a spacing of
    ``0\\0`` (seen in de-identified radiographs) means unknown, never a real size."""
    pair = _float_tuple(value, 2)
    if pair is None or min(pair) <= 0:
        return None
    return pair[0], pair[1]


def projection_spacing(dataset: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel spacing of a 2D image and how it was obtained (PS3.3 C.8.11.4, 10.7.1.3).

    PixelSpacing, where present, is calibrated to the patient; ImagerPixelSpacing is at the
    detector and overstates sizes by the radiographic magnification, which is divided out when
    the header states it.
    """
    pixel_spacing = _spacing_pair(dataset.get("PixelSpacing"))
    if pixel_spacing is not None:
        return pixel_spacing, None
    imager = _spacing_pair(dataset.get("ImagerPixelSpacing"))
    if imager is not None:
        magnification = _float_or_none(dataset.get("EstimatedRadiographicMagnificationFactor"))
        if magnification and magnification > 0:
            corrected = (imager[0] / magnification, imager[1] / magnification)
            return corrected, (
                f"ImagerPixelSpacing {imager[0]:g}x{imager[1]:g} mm divided by the estimated "
                f"radiographic magnification {magnification:g}"
            )
        return (imager[0], imager[1]), "ImagerPixelSpacing (at the detector plane, not corrected "
        "for magnification)"
    nominal = _spacing_pair(dataset.get("NominalScannedPixelSpacing"))
    if nominal is not None:
        return (nominal[0], nominal[1]), "NominalScannedPixelSpacing (scanned film)"
    return ultrasound_spacing(dataset)


_CENTIMETRE = 3  # PhysicalUnitsX/YDirection (PS3.3 C.8.5.5.1.15)
_TISSUE_2D = 1  # RegionSpatialFormat: 2D (tissue or flow)


def ultrasound_spacing(dataset: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel spacing from an ultrasound image's calibrated regions (SequenceOfUltrasoundRegions,
    PS3.3 C.8.5.5): the 2D regions in centimetres, when they agree. The spacing holds inside
    those regions only (Doppler strips and annotations elsewhere have other scales), which the
    note says."""
    pairs = []
    boxes = []
    for region in dataset.get("SequenceOfUltrasoundRegions", []) or []:
        if (
            region.get("RegionSpatialFormat") != _TISSUE_2D
            or region.get("PhysicalUnitsXDirection") != _CENTIMETRE
            or region.get("PhysicalUnitsYDirection") != _CENTIMETRE
        ):
            continue
        delta_x = _float_or_none(region.get("PhysicalDeltaX"))
        delta_y = _float_or_none(region.get("PhysicalDeltaY"))
        if not delta_x or not delta_y or delta_x <= 0 or delta_y <= 0:
            continue
        pairs.append((abs(delta_y) * 10.0, abs(delta_x) * 10.0))  # (row, column) in mm
        boxes.append(
            "x {}-{}, y {}-{}".format(
                *(
                    region.get(k)
                    for k in (
                        "RegionLocationMinX0",
                        "RegionLocationMaxX1",
                        "RegionLocationMinY0",
                        "RegionLocationMaxY1",
                    )
                )
            )
        )
    if not pairs or any(not np.allclose(p, pairs[0], rtol=1e-3) for p in pairs):
        return None, None
    return pairs[0], (
        "SequenceOfUltrasoundRegions (valid inside the calibrated region(s) only: "
        + "; ".join(boxes)
        + ")"
    )


def _native_pixels(dataset: Dataset, syntax: Any) -> NativePixels | None:
    """Direct-read layout of an uncompressed single-frame grayscale image, else None."""
    if syntax is None or "PixelData" not in dataset or "NumberOfFrames" in dataset:
        return None
    try:
        uid = UID(str(syntax))
        if uid.is_compressed or uid.is_deflated or not uid.is_transfer_syntax:
            return None
        bits = int(dataset.BitsAllocated)
        stored = int(dataset.get("BitsStored") or bits)
        signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
        if int(dataset.get("SamplesPerPixel", 1) or 1) != 1 or bits not in (8, 16, 32):
            return None
        if not str(dataset.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
            return None  # palette colour needs its lookup table: pydicom's path
        element = dataset.get_item("PixelData", keep_deferred=True)
        # a raw element knows its value position and length; a deferred (converted) one only
        # its value position, and a truncated file then shows when the pixels are read
        offset = getattr(element, "value_tell", None) or getattr(element, "file_tell", None)
        length = getattr(element, "length", None)
        expected = int(dataset.Rows) * int(dataset.Columns) * bits // 8
        if getattr(element, "is_undefined_length", False) or offset is None:
            return None
        if (length is not None and int(length) < expected) or not 0 < stored <= bits:
            return None
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    order = "<" if uid.is_little_endian else ">"
    return NativePixels(int(offset), f"{order}{'i' if signed else 'u'}{bits // 8}", stored)


def _declared(dataset: Dataset, keyword: str, default: int, path: Path | None) -> int:
    """A pixel-module integer as declared; one that is not a single whole number is refused
    (readers would otherwise each guess differently)."""
    value = dataset.get(keyword)
    if value in (None, ""):
        return default
    number = _int_or_none(value)
    if number is None:
        raise DicomReadError(f"{keyword} {value!r} is not a whole number", path=path)
    return number


def check_declared_size(
    path: Path | None, dataset: Dataset, limits: ReadLimits | None = None
) -> None:
    """The pixel module as declared: sane values, and sizes within the resource limits."""
    limits = limits or current_limits()
    frames = _declared(dataset, "NumberOfFrames", 1, path) or 1
    limits.check("frames", frames, f"a header declaring {frames:,} frames", path)
    bits = _declared(dataset, "BitsAllocated", 8, path)
    check_bits_allocated(bits, path)
    stored = _declared(dataset, "BitsStored", bits, path)
    if not 1 <= stored <= bits:
        raise DicomReadError(
            f"BitsStored {stored} is not between 1 and BitsAllocated {bits}", path=path
        )
    rows = _declared(dataset, "Rows", 0, path)
    columns = _declared(dataset, "Columns", 0, path)
    samples = _declared(dataset, "SamplesPerPixel", 1, path)
    if rows < 1 or columns < 1 or samples < 1 or frames < 1:
        raise DicomReadError(
            f"the header declares {frames} frame(s) of {rows} x {columns} pixels with "
            f"{samples} sample(s): no pixels to read",
            path=path,
        )
    limits.check_frame(rows, columns, samples, -(-bits // 8), path)
    _check_native_length(path, dataset, frames * rows * columns * samples, bits)


def is_compressed_syntax(syntax: Any) -> bool:
    """Whether a Transfer Syntax UID is an encapsulated one; False for a UID that is not a
    transfer syntax at all (decoding then reports it)."""
    try:
        return bool(syntax is not None and syntax.is_compressed)
    except ValueError:
        return False


def check_bits_allocated(bits: int, path: Path | None) -> None:
    if bits not in (1, 8, 16, 32, 64):
        raise DicomReadError(
            f"BitsAllocated {bits} is not a DICOM value (1, 8, 16, 32 or 64)", path=path
        )


def _check_native_length(path: Path | None, dataset: Dataset, values: int, bits: int) -> None:
    """Uncompressed pixel data shorter than the header declares is refused before a buffer
    of the declared size is allocated (a header may claim 30,000 frames and hold one)."""

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in dataset or syntax is None or is_compressed_syntax(syntax):
        return
    if str(dataset.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        values = values * 2 // 3  # two samples' worth per pixel once subsampled
    expected = -(-values * bits // 8)
    length = getattr(dataset.get_item("PixelData", keep_deferred=True), "length", None)
    if isinstance(length, int) and 0 <= length < expected and length != 0xFFFFFFFF:
        raise DicomReadError(
            f"pixel data is truncated: {length:,} of the {expected:,} bytes the header "
            "declares are present",
            path=path,
        )


def describe_frames(path: Path, dataset: Dataset) -> list[FrameInfo]:
    """One :class:`FrameInfo` per frame of a header that has pixel data (refused when it
    declares more or larger frames than the resource limits admit)."""
    check_declared_size(path, dataset)
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    number_of_frames = _int_or_none(dataset.get("NumberOfFrames")) or 1
    shared = _group_item(dataset, "SharedFunctionalGroupsSequence")
    per_frame_groups = dataset.get("PerFrameFunctionalGroupsSequence") or []
    is_multiframe = "NumberOfFrames" in dataset

    base_spacing, spacing_note = projection_spacing(dataset)
    base_orientation = _float_tuple(dataset.get("ImageOrientationPatient"), 6)
    base_position = _float_tuple(dataset.get("ImagePositionPatient"), 3)
    # Legacy multi-frame volumes (NM, RT dose) give frame offsets along the normal instead of
    # per-frame positions.
    grid_offsets = dataset.get("GridFrameOffsetVector")

    meta = getattr(dataset, "file_meta", None) or Dataset()
    common = dict(
        path=path,
        # anonymisers sometimes blank the dataset's UIDs but leave the file meta ones
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "") or "")
        or str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        or None,
        sop_class_uid=str(dataset.get("SOPClassUID", "") or "")
        or str(meta.get("MediaStorageSOPClassUID", "") or "")
        or None,
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")) or None,
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")) or None,
        modality=str(dataset.get("Modality", "")) or None,
        rows=int(dataset.get("Rows", 0) or 0),
        columns=int(dataset.get("Columns", 0) or 0),
        samples_per_pixel=int(dataset.get("SamplesPerPixel", 1) or 1),
        photometric_interpretation=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")),
        transfer_syntax_uid=str(transfer_syntax) if transfer_syntax else None,
        has_modality_lut_sequence="ModalityLUTSequence" in dataset,
        instance_number=_int_or_none(dataset.get("InstanceNumber")),
        acquisition_number=_int_or_none(dataset.get("AcquisitionNumber")),
        image_type=tuple(str(v) for v in (dataset.get("ImageType") or ())),
        patient_id=str(dataset.get("PatientID", "")) or None,
        study_date=str(dataset.get("StudyDate", "")) or None,
        study_description=str(dataset.get("StudyDescription", "")) or None,
        series_number=_int_or_none(dataset.get("SeriesNumber")),
        series_description=str(dataset.get("SeriesDescription", "")) or None,
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID", "")) or None,
        slice_thickness=_float_or_none(dataset.get("SliceThickness")),
        native=_native_pixels(dataset, transfer_syntax),
    )
    base_echo = _float_or_none(dataset.get("EchoTime"))
    base_temporal = _float_or_none(
        dataset.get("TemporalPositionIdentifier") or dataset.get("TriggerTime")
    )
    base_cycle_position = str(dataset.get("CardiacCyclePosition", "")).strip() or None
    base_trigger = _float_or_none(dataset.get("TriggerTime"))
    base_slope = _float_or_none(dataset.get("RescaleSlope"))
    base_intercept = _float_or_none(dataset.get("RescaleIntercept"))

    frames: list[FrameInfo] = []
    for index in range(number_of_frames):
        per_frame = per_frame_groups[index] if index < len(per_frame_groups) else None
        orientation = (
            _float_tuple(
                _functional(
                    shared, per_frame, "PlaneOrientationSequence", "ImageOrientationPatient"
                ),
                6,
            )
            or base_orientation
        )
        position = _float_tuple(
            _functional(shared, per_frame, "PlanePositionSequence", "ImagePositionPatient"), 3
        )
        if position is None and base_position is not None:
            if is_multiframe and grid_offsets is not None and orientation is not None:
                offsets = [float(v) for v in grid_offsets]
                normal = np.cross(orientation[:3], orientation[3:])
                if index < len(offsets):
                    position = tuple(
                        float(v) for v in np.asarray(base_position) + offsets[index] * normal
                    )
            elif not is_multiframe or number_of_frames == 1:
                position = base_position
        spacing = _spacing_pair(
            _functional(shared, per_frame, "PixelMeasuresSequence", "PixelSpacing")
        )
        slope = _float_or_none(
            _functional(shared, per_frame, "PixelValueTransformationSequence", "RescaleSlope")
        )
        intercept = _float_or_none(
            _functional(shared, per_frame, "PixelValueTransformationSequence", "RescaleIntercept")
        )
        echo = _float_or_none(_functional(shared, per_frame, "MREchoSequence", "EffectiveEchoTime"))
        temporal = _float_or_none(
            _functional(shared, per_frame, "FrameContentSequence", "TemporalPositionIndex")
        )
        cycle_position = (
            str(
                _functional(shared, per_frame, "FrameContentSequence", "CardiacCyclePosition") or ""
            ).strip()
            or base_cycle_position
        )
        if slope is None:
            slope = base_slope
        if intercept is None:
            intercept = base_intercept
        frames.append(
            FrameInfo(
                frame_index=index if is_multiframe else None,
                orientation=orientation,
                position=position,  # type: ignore[arg-type]
                pixel_spacing=spacing or base_spacing,
                spacing_note=None if spacing else spacing_note,
                rescale_slope=1.0 if slope is None else slope,
                rescale_intercept=0.0 if intercept is None else intercept,
                temporal_position=temporal if temporal is not None else base_temporal,
                echo_time=echo if echo is not None else base_echo,
                cardiac_cycle_position=cycle_position,
                trigger_time=_float_or_none(
                    _functional(
                        shared,
                        per_frame,
                        "CardiacSynchronizationSequence",
                        "NominalCardiacTriggerDelayTime",
                    )
                )
                if base_trigger is None
                else base_trigger,
                **common,  # type: ignore[arg-type]
            )
        )
    return frames


def has_pixel_data(dataset: Dataset) -> bool:
    """True when the dataset holds pixel data and says how large its frames are."""
    return any(tag in dataset for tag in _PIXEL_TAGS) and bool(dataset.get("Rows"))
