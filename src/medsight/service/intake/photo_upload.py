"""HTTP intake of non-DICOM photographs (fundus, skin): the picture is wrapped as an RGB
Secondary Capture carrying the patient and study identifiers given with it, so from then on
it is stored, queued, analysed and pushed exactly like an instance received by DICOM.

UIDs are derived from the content and the identifiers, so the same photo uploaded twice for
the same study is the same instance (stored once), not a second image.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from medsight.errors import InvalidInputError
from medsight.reporting._dicom_common import MANUFACTURER

__all__ = ["PhotoIdentifiers", "photo_to_dicom"]


@dataclass(frozen=True)
class PhotoIdentifiers:
    patient_id: str
    patient_name: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    laterality: str = ""  # R or L for an eye or a limb, when known


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["medsight-upload", *parts]))


def photo_to_dicom(
    content: bytes, identifiers: PhotoIdentifiers, *, modality: str, task_id: str
) -> tuple[bytes, dict[str, str]]:
    """The encoded DICOM file and its identifiers; a picture PIL cannot decode, or one
    too large to decode safely, is refused with the reason."""
    import highdicom as hd
    from pydicom.filebase import DicomBytesIO

    if not identifiers.patient_id.strip():
        raise InvalidInputError("an uploaded photograph needs a patient_id")
    if identifiers.laterality not in ("", "R", "L"):
        raise InvalidInputError(f"laterality {identifiers.laterality!r} is not R or L")
    try:
        with PILImage.open(io.BytesIO(content)) as picture:
            if picture.format not in ("PNG", "JPEG", "TIFF"):
                raise InvalidInputError(f"{picture.format} pictures are not accepted")
            pixels = np.asarray(picture.convert("RGB"))
    except (PILImage.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"the upload is not a readable PNG/JPEG/TIFF ({exc})") from exc
    content_hash = hashlib.sha256(content).hexdigest()
    study = identifiers.study_instance_uid or _uid(
        "study", identifiers.patient_id, identifiers.accession_number or content_hash
    )
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),  # as displayed; highdicom needs a value here
        study_instance_uid=study,
        series_instance_uid=_uid("series", study, task_id),
        series_number=1,
        sop_instance_uid=_uid("instance", study, content_hash),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=identifiers.patient_id,
        patient_name=identifiers.patient_name or None,
        accession_number=identifiers.accession_number or None,
        laterality=identifiers.laterality or None,
    )
    sc.Modality = modality
    sc.ConversionType = "DI"  # digital interface: a camera's file, not digitised film
    sc.SeriesDescription = f"uploaded photograph for {task_id}"[:64]
    sc.ImageComments = f"uploaded over HTTP; sha256 {content_hash}"
    buffer = DicomBytesIO()
    sc.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), {
        "SOPInstanceUID": str(sc.SOPInstanceUID),
        "StudyInstanceUID": study,
        "SeriesInstanceUID": str(sc.SeriesInstanceUID),
        "SOPClassUID": str(sc.SOPClassUID),
    }
