"""DICOMweb STOW-RS intake (PS3.18 10.5): each ``application/dicom`` part of a
``multipart/related`` body is stored durably before the response, which lists what was
stored and what failed. One bad part never loses the others."""

from __future__ import annotations

import email.parser
import email.policy
import io
from typing import Any

from medsight.errors import MedsightError
from medsight.io.limits import ResourceLimitError
from medsight.service.intake.dicom_listener import refuse_over_limit
from medsight.service.store import InstanceStore

__all__ = ["receive_stow"]

PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000


def _identifiers(payload: bytes) -> dict[str, str]:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True)
    refuse_over_limit(dataset)
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
    failed: list[tuple[dict[str, str], int, str]] = []  # what is known, reason code, words
    parts = list(message.iter_parts()) if message.is_multipart() else []
    for part in parts:
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            failed.append(({}, CANNOT_UNDERSTAND, "a part without a DICOM payload"))
            continue
        try:
            identifiers = _identifiers(payload)
        except ResourceLimitError as exc:
            failed.append(({}, CANNOT_UNDERSTAND, exc.message))
            continue
        except RecursionError:
            failed.append(({}, CANNOT_UNDERSTAND, "sequences nested too deep to parse"))
            continue
        except Exception as exc:  # not DICOM: reported per part, in the response
            failed.append(({}, CANNOT_UNDERSTAND, f"not a DICOM instance ({str(exc)[:150]})"))
            continue
        try:
            store.store(payload, identifiers, source[:64])
            stored.append(identifiers)
        except MedsightError as exc:
            failed.append((identifiers, CANNOT_UNDERSTAND, str(exc)[:200]))
        except Exception as exc:  # disk or database trouble: the sender should retry
            failed.append((identifiers, PROCESSING_FAILURE, str(exc)[:200]))
    response: dict[str, Any] = {}
    if stored:
        response["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [i["SOPClassUID"]]},
                    "00081155": {"vr": "UI", "Value": [i["SOPInstanceUID"]]},
                }
                for i in stored
            ],
        }
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": [_failure(*f) for f in failed]}
    if not parts:  # a malformed body: nothing to store, and the sender must know it
        response["00000902"] = {
            "vr": "LO",
            "Value": ["the body has no application/dicom parts (multipart/related expected)"],
        }
        return 400, response
    status = 200 if not failed else (202 if stored else 409)
    return status, response


def _failure(identifiers: dict[str, str], reason: int, words: str) -> dict[str, Any]:
    """One FailedSOPSequence item: the UIDs when known, the reason code and, for people,
    the reason in words (ErrorComment)."""
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if identifiers.get("SOPClassUID"):
        item["00081150"] = {"vr": "UI", "Value": [identifiers["SOPClassUID"]]}
    if identifiers.get("SOPInstanceUID"):
        item["00081155"] = {"vr": "UI", "Value": [identifiers["SOPInstanceUID"]]}
    item["00000902"] = {"vr": "LO", "Value": [words[:64]]}
    return item
