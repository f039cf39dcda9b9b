"""A Secondary Capture of an overlay picture (heatmap or mask outlines on the image), in the
source's study, labelled in its pixels and its header as not for primary diagnosis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from medsight.image import Image
from medsight.reporting._dicom_common import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    contributing_equipment,
    result_uid,
    series_uid,
    source_datasets,
)
from medsight.tasks import Task

__all__ = ["write_overlay_sc"]


def _patient_orientation(image: Image) -> tuple[str, str]:
    """DICOM PatientOrientation letters of the i and j axes (DICOM says H/F, not S/I)."""
    letters = image.orientation_code.replace("S", "H").replace("I", "F")
    return letters[0], letters[1]


def write_overlay_sc(
    overlay_png: Path, task: Task, image: Image, path: Path, *, revision: int = 0
) -> Path:
    """Wrap the overlay PNG (which carries the research-use banner in its pixels) as an
    RGB Secondary Capture referencing the source instance."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    sources = source_datasets(image)
    first = sources[0]
    with PILImage.open(overlay_png) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system="PATIENT",
        # i runs along the rows and j down the columns of the overlay, as in the source
        patient_orientation=_patient_orientation(image),
        study_instance_uid=first.StudyInstanceUID,
        series_instance_uid=series_uid(task, first, "sc-series"),
        series_number=9301,
        sop_instance_uid=result_uid(task, first, "sc", revision=revision),
        instance_number=1 + revision,
        manufacturer=MANUFACTURER,
        patient_id=first.PatientID,
        patient_name=first.PatientName,
        patient_birth_date=first.PatientBirthDate,
        patient_sex=first.PatientSex or None,
        accession_number=first.AccessionNumber,
        study_id=first.StudyID,
        study_date=first.StudyDate or None,
        study_time=first.StudyTime or None,
        referring_physician_name=first.ReferringPhysicianName,
        contributing_equipment=contributing_equipment(task),
    )
    if not image.orientation_known:
        del sc.PatientOrientation  # unknown: left empty (type 2), not invented
        sc.add_new(0x00200020, "CS", None)
    sc.Laterality = first.get("Laterality", "")  # type 2C: the source's, or empty
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = f"AI overlay by {task.id} {task.version}. {NOT_FOR_DIAGNOSIS}."
    sc.SeriesDescription = "AI overlay - NOT FOR DIAGNOSTIC USE"
    sc.DerivationDescription = f"heatmap / mask overlay from {task.id} {task.version}"[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    path.parent.mkdir(parents=True, exist_ok=True)
    sc.save_as(path)
    return path
