"""De-identify DICOM datasets and folders (see :mod:`medsight.deid.profile` for the rules).

Output files are named by their pseudonymous UIDs (``<study>/<series>/<instance>.dcm``):
the source's names and folders often carry patient names. The report lists, per output
file, every attribute changed and how, never an original value.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medsight.deid.keys import Pseudonyms
from medsight.deid.profile import Action, action_for
from medsight.errors import InvalidInputError

__all__ = [
    "Change",
    "DeidentifiedFile",
    "deidentify_bytes",
    "deidentify_dataset",
    "deidentify_tree",
    "write_report",
]

#: LO holds 64 characters: the codes below say the same in full
_METHOD = "medsight PS3.15 E.1: Basic; Rtn Long Modif Dates; Rtn Pat Chars"
#: replaced by pseudonyms derived from the key, not blanked, so studies stay linked
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
_DUMMY_TEXT = "REMOVED"
_DUMMY_BY_VR = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "IS": "0",
    "DS": "0",
    "AS": "000Y",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "FL": 0.0,
    "FD": 0.0,
}
#: SOP classes and image types that often carry text burned into the pixels
_BURN_IN_MODALITIES = frozenset({"US", "XC", "OT", "SC", "ES", "DOC"})
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class Change:
    tag: str  # "(0010,0010)"
    keyword: str
    action: str  # removed, emptied, replaced, uid-replaced, date-shifted, private-removed


@dataclass
class DeidentifiedFile:
    output: Path
    changes: list[Change] = field(default_factory=list)
    review: str | None = None  # why the pixels should be checked for burned-in text


class _Context:
    def __init__(self, pseudonyms: Pseudonyms, dataset: Dataset, keep_private: bool) -> None:
        self.pseudonyms = pseudonyms
        self.keep_private = keep_private
        patient = str(dataset.get("PatientID", "") or dataset.get("StudyInstanceUID", ""))
        self.shift = dt.timedelta(days=pseudonyms.date_shift_days(patient))
        self.patient = patient
        self.patient_name = f"PSEUDONYM^{pseudonyms.patient_id(patient)}"
        self.changes: list[Change] = []

    def record(self, tag: BaseTag, keyword: str, action: str) -> None:
        self.changes.append(Change(f"({tag.group:04X},{tag.element:04X})", keyword, action))


def _shift_date(text: str, shift: dt.timedelta) -> str | None:
    """A DA (YYYYMMDD) or the date part of a DT moved back; None when it is not a full date."""
    head, rest = text[:8], text[8:]
    try:
        moved = dt.datetime.strptime(head, "%Y%m%d").date() - shift
    except ValueError:
        return None
    return moved.strftime("%Y%m%d") + rest


def _shifted(value: object, shift: dt.timedelta) -> object | None:
    values = list(value) if isinstance(value, MultiValue) else [value]
    moved = [_shift_date(str(v), shift) for v in values]
    if any(m is None for m in moved):
        return None
    return moved if len(moved) > 1 else moved[0]


def _dummy(vr: str, max_length: int = 64) -> object:
    if vr in _DUMMY_BY_VR:
        return _DUMMY_BY_VR[vr]
    if vr == "PN":
        return "REMOVED^REMOVED"
    return _DUMMY_TEXT[:max_length]


def _apply(dataset: Dataset, context: _Context) -> None:
    """The profile on every element of ``dataset`` and of its sequence items."""
    for element in list(dataset):
        tag, vr, keyword = element.tag, element.VR, element.keyword or "private"
        if tag.is_private:
            if not context.keep_private:
                del dataset[tag]
                context.record(tag, keyword, "private-removed")
            continue
        if tag == _PATIENT_ID:
            element.value = context.pseudonyms.patient_id(str(element.value or context.patient))
            context.record(tag, keyword, "pseudonym")
            continue
        if tag == _PATIENT_NAME:
            element.value = context.patient_name
            context.record(tag, keyword, "pseudonym")
            continue
        action = action_for(tag)
        if action is None or action == Action.KEEP:
            if vr == "SQ":
                for item in element.value:
                    _apply(item, context)
            continue
        if action == Action.REMOVE or vr in ("OB", "OW", "UN"):
            del dataset[tag]
            context.record(tag, keyword, "removed")
        elif action == Action.EMPTY or (action == Action.DUMMY and vr == "SQ"):
            element.value = Sequence() if vr == "SQ" else None
            context.record(tag, keyword, "emptied")
        elif action == Action.DUMMY:
            element.value = _dummy(vr)
            context.record(tag, keyword, "replaced")
        elif action == Action.UID:
            if element.value:
                values = element.value if element.VM > 1 else [element.value]
                replaced = [context.pseudonyms.uid(str(v)) for v in values]
                element.value = replaced if element.VM > 1 else replaced[0]
                context.record(tag, keyword, "uid-replaced")
        elif action == Action.KEEP_REFERENCES:  # the UIDs within are replaced (U*)
            for item in element.value or []:
                _apply(item, context)
            context.record(tag, keyword, "uids-replaced-within")
        elif action == Action.SHIFT_DATE:
            moved = _shifted(element.value, context.shift) if element.value else None
            element.value = moved
            context.record(tag, keyword, "date-shifted" if moved is not None else "emptied")


def _mark(dataset: Dataset, context: _Context) -> None:
    """Patient pseudonyms and the attributes that say how the object was de-identified."""
    dataset.PatientID = context.pseudonyms.patient_id(context.patient)
    dataset.PatientName = context.patient_name
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = _METHOD
    codes = []
    for value, meaning in _METHOD_CODES:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        codes.append(code)
    dataset.DeidentificationMethodCodeSequence = Sequence(codes)
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"


def _burned_in_reason(dataset: Dataset) -> str | None:
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES"
    modality = str(dataset.get("Modality", ""))
    if modality in _BURN_IN_MODALITIES:
        return f"modality {modality} often has text burned into the pixels"
    if str(dataset.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE_PREFIX):
        return "a secondary capture (a screenshot or scan) may show text in its pixels"
    return None


def deidentify_dataset(
    dataset: Dataset, pseudonyms: Pseudonyms, *, keep_private: bool = False
) -> tuple[list[Change], str | None]:
    """De-identify ``dataset`` in place; returns the changes and any burned-in-text warning."""
    context = _Context(pseudonyms, dataset, keep_private)
    review = _burned_in_reason(dataset)
    _apply(dataset, context)
    _mark(dataset, context)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        _clean_meta(meta, dataset)
    return context.changes, review


def _clean_meta(meta: FileMetaDataset, dataset: Dataset) -> None:
    if "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    for keyword in (
        "SourceApplicationEntityTitle",
        "SendingApplicationEntityTitle",
        "ReceivingApplicationEntityTitle",
        "PrivateInformationCreatorUID",
        "PrivateInformation",
    ):
        if keyword in meta:
            del meta[keyword]


def deidentify_bytes(
    payload: bytes, pseudonyms: Pseudonyms, *, keep_private: bool = False
) -> tuple[bytes, Dataset]:
    """One encoded DICOM file de-identified (the service's intake); returns the new bytes
    and the de-identified dataset."""
    dataset = pydicom.dcmread(io.BytesIO(payload), force=True)
    deidentify_dataset(dataset, pseudonyms, keep_private=keep_private)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), dataset


def _files(source: Path) -> Iterator[Path]:
    if source.is_file():
        yield source
        return
    for path in sorted(source.rglob("*")):
        if path.is_file():
            yield path


def deidentify_tree(
    source: Path, destination: Path, pseudonyms: Pseudonyms, *, keep_private: bool = False
) -> tuple[list[DeidentifiedFile], list[tuple[str, str]]]:
    """Every DICOM file under ``source`` de-identified into ``destination``; returns what was
    written and the (file, reason) of what was not (not DICOM, unreadable)."""
    if not source.exists():
        raise InvalidInputError("no such file or folder", path=source)
    destination.mkdir(parents=True, exist_ok=True)
    if destination.resolve().is_relative_to(source.resolve()) and source.is_dir():
        raise InvalidInputError("the destination must not be inside the source", path=destination)
    written: list[DeidentifiedFile] = []
    skipped: list[tuple[str, str]] = []
    for number, path in enumerate(_files(source), start=1):
        try:
            dataset = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            skipped.append((f"input {number}", f"not readable as DICOM ({type(exc).__name__})"))
            continue
        try:
            changes, review = deidentify_dataset(dataset, pseudonyms, keep_private=keep_private)
        except Exception as exc:  # an element pydicom cannot parse: the file is not written
            skipped.append((f"input {number}", f"cannot be de-identified ({type(exc).__name__})"))
            continue
        parts = [
            str(dataset.get(keyword, "") or "unknown")
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        ]
        output = destination.joinpath(parts[0], parts[1], parts[2] + ".dcm")
        output.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(output, enforce_file_format=True)
        written.append(DeidentifiedFile(output, changes, review))
    return written, skipped


def write_report(path: Path, root: Path, written: list[DeidentifiedFile]) -> Path:
    """The CSV report: one row per changed attribute per output file, and one per file to
    review for burned-in text. Holds no original value."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["output", "tag", "keyword", "action"])
        for item in written:
            name = item.output.relative_to(root).as_posix()
            if item.review:
                writer.writerow([name, "", "", f"review pixels for burned-in text: {item.review}"])
            for change in item.changes:
                writer.writerow([name, change.tag, change.keyword, change.action])
    return path
