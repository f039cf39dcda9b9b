"""The DICOM results of one analysis (SEG, SR, overlay SC), written beside result.json.

A DICOM output that cannot be written (a non-DICOM source, missing identifiers) is noted
with its reason; the JSON and HTML outputs are written regardless.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medsight.errors import MedsightError
from medsight.findings import Finding
from medsight.gate import GateResult
from medsight.image import Image
from medsight.inference import Prediction
from medsight.tasks import Task

logger = logging.getLogger(__name__)

__all__ = [
    "ALL_OUTPUTS",
    "DEFAULT_OUTPUTS",
    "parse_outputs",
    "wants_heatmap",
    "wants_overlay",
    "write_dicom_outputs",
]

#: "ann": a DICOM whole slide's nucleus outlines as Microscopy Bulk Simple Annotations
ALL_OUTPUTS = ("seg", "sr", "sc", "ann", "json", "html", "overlay", "heatmap")
DEFAULT_OUTPUTS = ("json", "html")
#: outputs that show or carry a classifier's Grad-CAM (the SR carries its location)
_NEED_HEATMAP = ("heatmap", "overlay", "html", "sc", "sr")
#: outputs that draw the overlay PNG (the report shows it, the SC encapsulates it)
_NEED_OVERLAY = ("overlay", "html", "sc")


def wants_heatmap(outputs: tuple[str, ...]) -> bool:
    """Grad-CAM costs a backward pass per image: computed only when an output uses it."""
    return any(kind in outputs for kind in _NEED_HEATMAP)


def wants_overlay(outputs: tuple[str, ...]) -> bool:
    return any(kind in outputs for kind in _NEED_OVERLAY)


def parse_outputs(text: str) -> tuple[str, ...]:
    from medsight.errors import InvalidInputError

    wanted = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [w for w in wanted if w not in ALL_OUTPUTS]
    if unknown or not wanted:
        raise InvalidInputError(
            f"unknown output(s) {unknown or [text]}: choose from {', '.join(ALL_OUTPUTS)}"
        )
    return wanted if "json" in wanted else ("json", *wanted)  # result.json is always kept


def write_dicom_outputs(
    prediction: Prediction,
    gate: GateResult,
    task: Task,
    image: Image,
    findings: list[Finding],
    overlay: Path | None,
    folder: Path,
    stem: str,
    outputs: tuple[str, ...],
    *,
    revision: int = 0,
    previous_sr: list[Any] | None = None,
) -> tuple[list[str], list[str]]:
    """(written file paths relative to ``folder``, notes on outputs not written)."""
    from medsight.reporting.dicom_sc import write_overlay_sc
    from medsight.reporting.dicom_seg import write_seg
    from medsight.reporting.dicom_sr import write_sr

    written: list[str] = []
    notes: list[str] = []
    seg_path: Path | None = None
    if "seg" in outputs and prediction.label_map is not None and gate.withheld:
        notes.append("seg: the input gate withheld the answer, no SEG written")
    elif "seg" in outputs and prediction.label_map is not None:
        try:
            seg_path = write_seg(
                prediction, task, image, folder / "dicom" / f"{stem}_seg.dcm", revision=revision
            )
            if seg_path is None:
                notes.append("seg: nothing segmented, no SEG written")
            else:
                written.append(seg_path.relative_to(folder).as_posix())
        except MedsightError as exc:
            notes.append(f"seg: not written ({exc.message})")
    if "sr" in outputs:
        try:
            sr_path = write_sr(
                findings,
                task,
                image,
                folder / "dicom" / f"{stem}_sr.dcm",
                seg_path=seg_path,
                revision=revision,
                gate=gate,
                previous=previous_sr,
            )
            written.append(sr_path.relative_to(folder).as_posix())
        except MedsightError as exc:
            notes.append(f"sr: not written ({exc.message})")
    if "sc" in outputs and overlay is not None:
        try:
            sc_path = write_overlay_sc(
                overlay, task, image, folder / "dicom" / f"{stem}_sc.dcm", revision=revision
            )
            written.append(sc_path.relative_to(folder).as_posix())
        except MedsightError as exc:
            notes.append(f"sc: not written ({exc.message})")
    for note in notes:
        logger.info("%s: %s", stem, note)
    return written, notes
