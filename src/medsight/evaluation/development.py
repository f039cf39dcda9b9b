"""Which images of an evaluation the model was developed on, so the figures are not taken
for evidence.

``medsight evaluate fundus-dr`` on 40 of the model's own training photographs reported ROC
AUC 0.911 and "holds" against the card: the network had seen every one. Training now writes
``development_images.json`` beside the task version: a fingerprint of the pixels of every
image its recipe listed for development (training, epoch choice, out-of-fold evidence; the
held-back part excluded). ``evaluate`` fingerprints the images it is given; where any is
among them, the report says how many, and no claim of the card is said to hold or fail on
those data.

The fingerprint is the SHA-256 of the decoded pixels with their shape and type, so the same
picture is found whatever file carries it (a JPEG and the DICOM made from it); a re-encoded,
resized or cropped copy is not found (no near-duplicate search).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medsight.image import Image
from medsight.tasks import Task

__all__ = [
    "DEVELOPMENT_FILE",
    "development_overlap",
    "mark_development_overlap",
    "pixel_fingerprint",
    "write_development_images",
]

DEVELOPMENT_FILE = "development_images.json"
T = TypeVar("T")


def pixel_fingerprint(image: Image) -> str:
    """SHA-256 of the image's pixels (C order) with their shape and type."""
    array = np.ascontiguousarray(image.array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.data)  # C-contiguous: hashed in place
    return digest.hexdigest()


def _fingerprints(
    items: Iterable[T], read: Callable[[T], Image], progress: Any = None
) -> tuple[list[str], int]:
    """Fingerprints of the images ``read`` gives, and how many could not be read."""
    found, unreadable = [], 0
    for item in items:
        try:
            found.append(pixel_fingerprint(read(item)))
        except Exception:  # an unreadable image is counted, not fatal
            unreadable += 1
        if progress is not None:
            progress()
    return found, unreadable


def write_development_images(
    folder: Path, items: Sequence[T], read: Callable[[T], Image], progress: Any = None
) -> Path:
    """``development_images.json`` in a task version ``folder``: the fingerprints of the
    images the version was developed on."""
    found, unreadable = _fingerprints(items, read, progress)
    path = folder / DEVELOPMENT_FILE
    document = {
        "fingerprint": "sha256 of the decoded pixels, their shape and type",
        "images": len(items),
        "unreadable": unreadable,
        "sha256": sorted(set(found)),
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def development_overlap(
    task: Task, items: Sequence[T], read: Callable[[T], Image], names: Callable[[T], str]
) -> dict[str, Any] | None:
    """How many of ``items`` the task was developed on (None: the task does not say which
    images it was developed on, so nothing can be said)."""
    path = task.folder / DEVELOPMENT_FILE
    if not path.is_file():
        return None
    known = set(json.loads(path.read_text())["sha256"])
    seen = []
    for item in items:
        try:
            if pixel_fingerprint(read(item)) in known:
                seen.append(names(item))
        except Exception:  # the evaluation itself reports unreadable images
            continue
    return {"images": len(seen), "of": len(items), "examples": seen[:10]}


def mark_development_overlap(results: dict[str, Any], overlap: dict[str, Any] | None) -> str:
    """Record ``overlap`` in ``results``; where the model saw any of the images, every claim
    check becomes "not checked" (``holds`` None). Returns the warning, or ''."""
    if overlap is None:
        return ""
    results["development_overlap"] = overlap
    if not overlap["images"]:
        return ""
    warning = (
        f"{overlap['images']} of {overlap['of']} images are among the images this model was "
        "developed on (the same pixels): these figures are not evidence of how it performs "
        "on new data, and no claim of its card is checked on them"
    )
    results["warning"] = warning
    for point in results.get("operating_points", {}).values():
        point["holds"] = None
        point["note"] = f"not checked (development images); {point.get('note', '')}"
    for claim in results.get("claims", []):
        head = claim["words"].split(": holds")[0].split(": FAILS")[0]
        claim["holds"] = None
        claim["words"] = f"{head}: not checked (the data include the model's development images)"
    return warning
