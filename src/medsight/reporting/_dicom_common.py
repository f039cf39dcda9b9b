"""What every DICOM result shares: the source headers it references (identifiers checked),
deterministic UIDs (a retried result overwrites rather than duplicates), and the producing
algorithm as the IHE AI Results profile asks (Algorithm Identification + Contributing
Equipment: name, version, weights SHA-256)."""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

from medsight.errors import MissingIdentifiersError
from medsight.image import Image
from medsight.tasks import Task

logger = logging.getLogger(__name__)

__all__ = [
    "NOT_FOR_DIAGNOSIS",
    "algorithm_identification",
    "contributing_equipment",
    "result_uid",
    "series_uid",
    "source_datasets",
]

NOT_FOR_DIAGNOSIS = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
MANUFACTURER = "medsight"
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def source_datasets(image: Image) -> list[Any]:
    """The headers of the DICOM instances behind ``image``, in its frame order (one per
    instance); refused when the image is not DICOM or an identifier is missing."""
    import pydicom

    paths: list[Path] = []
    for frame in image.frames:
        if frame.path is not None and frame.path not in paths:
            paths.append(frame.path)
    if not paths or image.metadata.get("source_format") not in (None, "dicom"):
        raise MissingIdentifiersError(
            "the source is not DICOM: DICOM results need a DICOM source (masks are written "
            "as PNG/NIfTI instead)"
        )
    datasets = []
    for path in paths:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        missing = [k for k in _REQUIRED if not str(dataset.get(k, "") or "").strip()]
        if missing:
            raise MissingIdentifiersError(
                f"the source lacks {', '.join(missing)}, which a DICOM result must reference",
                path=path,
            )
        # type 2 patient and study attributes a result copies: present, empty when unknown
        for keyword in _TYPE2:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
        _blank_invalid_dates(dataset, path)
        datasets.append(dataset)
    return datasets


def _blank_invalid_dates(dataset: Any, path: Path) -> None:
    """A copied date or time the source holds but no date can be (``00000000``, as some
    de-identifiers write) is left empty in the result, not a reason to write none; the
    source file itself is never changed."""
    from pydicom.valuerep import DA, DT, TM

    parsers = {"DA": DA, "DT": DT, "TM": TM}
    for element in dataset:
        parser = parsers.get(element.VR)
        if parser is None or element.value in (None, ""):
            continue
        try:
            parser(str(element.value))
        except (ValueError, OverflowError):
            logger.info(
                "%s: %s %r is not a valid date or time: left empty in the results",
                path.name,
                element.keyword,
                str(element.value),
            )
            element.value = ""


def result_uid(task: Task, source: Any, kind: str, *, revision: int = 0) -> str:
    """The same (task version, source image, output kind) always gives the same UID. The
    image is named by its first instance: the volumes of one series (a cine's phases, the
    echoes of a multi-echo series) each get their own result instances."""
    return _uid(task, source, kind, str(source.SOPInstanceUID), str(revision))


def series_uid(task: Task, source: Any, kind: str) -> str:
    """The result series of one kind for one source series: shared by the results of every
    image of that series."""
    return _uid(task, source, kind)


def _uid(task: Task, source: Any, *parts: str) -> str:
    from pydicom.uid import generate_uid

    entropy = [task.task_hash, str(source.StudyInstanceUID), str(source.SeriesInstanceUID)]
    return str(generate_uid(entropy_srcs=[*entropy, *parts]))


def algorithm_identification(task: Task) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=task.id,
        family=codes.cid7162.ArtificialIntelligence,
        version=task.version,
        source=MANUFACTURER,
        parameters={
            "task_hash": task.task_hash,
            **{f"weights_sha256_{name}": digest for name, digest in task.weights_sha256.items()},
        },
    )


def contributing_equipment(task: Task) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import medsight

    return [
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=f"{task.id} {task.version}",
            software_versions=f"medsight {medsight.__version__}",
            device_serial_number=task.task_hash[:16],
            contribution_datetime=_dt.datetime.now(_dt.UTC).replace(tzinfo=None),
            contribution_description=(
                f"AI result by {task.id} {task.version}; weights SHA-256 "
                + ", ".join(task.weights_sha256.values())
                + f". {NOT_FOR_DIAGNOSIS}"
            )[:1024],
        )
    ]
