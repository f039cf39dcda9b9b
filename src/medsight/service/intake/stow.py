"""DICOMweb STOW-RS intake (PS3.18 10.5): each ``application/dicom`` part of a
``multipart/related`` body is stored durably before the response, which lists what was
stored and what failed. One bad part never loses the others."""

from __future__ import annotations

import email.parser
import email.policy
import io
from typing import Any

from medsight.service.store import InstanceStore

__all__ = ["receive_stow"]

PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000


def _identifiers(payload: bytes) -> dict[str, str]:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True)
    identifiers = {
        k: str(dataset.get(k, ""))
        for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    }
    identifiers["SOPClassUID"] = str(
        dataset.get("SOPClassUID", "") or dataset.file_meta.MediaStorageSOPClassUID
    )
    return identifiers


def receive_stow(
    store: InstanceStore, content_type: str, body: bytes, source: str
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the DICOM JSON response; a body that is not multipart/related
    raises ValueError."""
    if not content_type.startswith("multipart/related"):
        raise ValueError("STOW-RS expects multipart/related; type=application/dicom")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    stored: list[dict[str, str]] = []
    failed: list[str] = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            failed.append("a part without a DICOM payload")
            continue
        try:
            identifiers = _identifiers(payload)
            store.store(payload, identifiers, source[:64])
            stored.append(identifiers)
        except Exception as exc:  # reported per part, in the response
            failed.append(str(exc)[:200])
    response: dict[str, Any] = {
        "00081199": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [i["SOPClassUID"]]},
                    "00081155": {"vr": "UI", "Value": [i["SOPInstanceUID"]]},
                }
                for i in stored
            ],
        }
    }
    if failed:
        response["00081198"] = {
            "vr": "SQ",
            "Value": [{"00081197": {"vr": "US", "Value": [CANNOT_UNDERSTAND]}} for _ in failed],
        }
    status = 200 if not failed else (202 if stored else 409)
    return status, response
