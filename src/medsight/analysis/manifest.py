"""A manifest CSV as studies: which images, with which task, grouped into which studies.

Columns (only ``image`` is required; the same ``image`` column the training manifests use):

- ``image``: a file (DICOM, NIfTI, raster, slide) or a DICOM folder, relative to the CSV;
- ``task``: the task for this image (name, ``name@version`` or folder); empty: the run's task;
- ``study``: rows with the same value form one study (one result.json);
- ``patient``: rows of one patient with no ``study`` value form one study (a screening visit's
  images); never written to an output, only its hash; rows with neither are a study each,
  keyed as ``medsight analyze`` keys them;
- ``laterality``: ``R`` or ``L`` (an eye, a breast, a limb), written with the analysis;
- ``phase``: e.g. ``ED``/``ES`` of a cine, or a screening field; written with the analysis.

A missing or unreadable image is a study whose image fails to load: the batch records it
and goes on. Malformed manifests (no ``image`` column, a bad laterality, an empty file) are
refused before anything runs.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from medsight.analysis.inputs import ImageSource, StudyInput, find_studies
from medsight.errors import InvalidInputError, MedsightError, NoImageFoundError
from medsight.image import Image

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "manifest_studies", "read_manifest"]

MANIFEST_COLUMNS = ("image", "task", "study", "patient", "laterality", "phase")
_LATERALITY = {"r": "R", "right": "R", "l": "L", "left": "L"}


@dataclass(frozen=True)
class ManifestRow:
    line: int  # in the CSV, for messages
    image: Path
    task: str | None = None
    study: str | None = None
    patient: str | None = None
    laterality: str | None = None
    phase: str | None = None


def read_manifest(path: Path) -> list[ManifestRow]:
    """The manifest's rows, checked; a malformed manifest is refused with its line."""
    if not path.is_file():
        raise NoImageFoundError("manifest not found", path=path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "image" not in columns:
                raise InvalidInputError(
                    f"the manifest has no 'image' column (columns: {', '.join(columns) or 'none'};"
                    f" expected {', '.join(MANIFEST_COLUMNS)})",
                    path=path,
                )
            rows = [_row(path, number, raw) for number, raw in enumerate(reader, start=2)]
    except UnicodeDecodeError as exc:
        reason = f"the manifest is not UTF-8 text ({exc.reason})"
        raise InvalidInputError(reason, path=path) from exc
    except csv.Error as exc:
        raise InvalidInputError(f"the manifest is not valid CSV ({exc})", path=path) from exc
    if not rows:
        raise InvalidInputError("the manifest lists no image", path=path)
    return rows


def _row(path: Path, line: int, raw: dict[str | None, str | None]) -> ManifestRow:
    values = {
        (k or "").strip(): (v or "").strip() for k, v in raw.items() if isinstance(v, str | None)
    }
    image = values.get("image", "")
    if not image:
        raise InvalidInputError(f"line {line}: the image column is empty", path=path)
    laterality = values.get("laterality") or None
    if laterality is not None:
        if laterality.lower() not in _LATERALITY:
            raise InvalidInputError(
                f"line {line}: laterality {laterality!r} is not R or L (or right/left)", path=path
            )
        laterality = _LATERALITY[laterality.lower()]
    image_path = Path(image)
    if not image_path.is_absolute():
        image_path = path.parent / image_path
    return ManifestRow(
        line=line,
        image=image_path,
        task=values.get("task") or None,
        study=values.get("study") or None,
        patient=values.get("patient") or None,
        laterality=laterality,
        phase=values.get("phase") or None,
    )


def _unreadable(path: Path, reason: str) -> Image:
    raise NoImageFoundError(reason, path=path)


def _row_sources(row: ManifestRow, root: Path) -> tuple[list[ImageSource], str | None]:
    """The row's images (tagged with the row's task, laterality and phase), and the key
    ``medsight analyze`` would file them under when the row names no study."""
    try:
        found = find_studies(row.image)
    except MedsightError as exc:
        reason = exc.message
        source = ImageSource(
            row.image.name,
            "raster",
            partial(_unreadable, row.image, f"manifest line {row.line}: {reason}"),
            None,
            _relative(row.image, root),
        )
        return [_tagged(source, row)], None
    sources = [_tagged(s, row) for study in found for s in study.images]
    key = found[0].key if len(found) == 1 else None
    return sources, key


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return path.name


def _tagged(source: ImageSource, row: ManifestRow) -> ImageSource:
    return replace(source, task=row.task, laterality=row.laterality, phase=row.phase)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_studies(path: Path) -> list[StudyInput]:
    """The manifest's rows as studies: rows sharing a ``study`` value form one study (in
    the manifest's order), rows without one but sharing a ``patient`` one study per patient
    (both eyes of a screening visit); other rows are a study each, keyed as ``analyze``
    keys them."""
    rows = read_manifest(path)
    root = path.parent
    grouped: dict[str, StudyInput] = {}
    studies: list[StudyInput] = []
    for row in rows:
        sources, own_key = _row_sources(row, root)
        group = f"study\0{row.study}" if row.study else None
        group = group or (f"patient\0{row.patient}" if row.patient else None)
        if group is not None:
            study = grouped.get(group)
            if study is None:
                # the value may be an accession number or a patient id: only its hash is
                # written; the label names the manifest line instead
                study = StudyInput(key=_key(f"manifest-{group}"), label=f"manifest line {row.line}")
                grouped[group] = study
                studies.append(study)
            study.images.extend(sources)
        else:
            key = own_key or _key(f"manifest-row\0{row.image.resolve()}")
            studies.append(StudyInput(key=key, label=row.image.name, images=sources))
    return studies
