"""What a path holds, as studies of images to analyse (loaded lazily, one at a time)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from medsight.errors import NoImageFoundError
from medsight.findings.cardiac import PHASE_FILE
from medsight.image import Image
from medsight.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, read_image
from medsight.io.limits import ResourceLimitError
from medsight.io.slide import SLIDE_SUFFIXES, is_slide_file
from medsight.io.slide_dicom import WSI_SOP_CLASS
from medsight.tasks.task import sha256_file

__all__ = ["ImageSource", "StudyInput", "find_studies", "studies_of"]

log = logging.getLogger(__name__)


@dataclass
class ImageSource:
    """One image of a study: how to describe it and how to load it."""

    description: str
    kind: str  # "dicom", "nifti", "raster" or "wsi"
    load: Callable[[], Image]  # picklable (a partial), so a study can go to a worker
    path: Path | None = None  # the file, for non-DICOM inputs
    # the (first) file relative to the path the user gave; it may name a patient, so it is
    # written to result.json (input.path), never to the worklist or a DICOM output
    relative_path: str | None = None
    # from a manifest row: the task asked for this image (None: the run's), and what the
    # image shows that its pixels may not say (written with the analysis)
    task: str | None = None
    laterality: str | None = None  # "R" or "L"
    phase: str | None = None  # e.g. "ED" / "ES", or a screening field


@dataclass
class StudyInput:
    key: str  # pseudonymous: a hash, never a patient identifier
    label: str
    images: list[ImageSource] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def with_stated_spacing(image: Image, spacing_mm: float | None) -> Image:
    """A 2D image whose file states no pixel spacing, given the one the user stated
    (``analyze --mpp``: a histology tile's micrometres per pixel). A file's own spacing is
    kept (it describes these pixels); the stated one is then noted as not applied."""
    if spacing_mm is None or image.spatial_dims != 2:
        return image
    if image.spacing_known:
        note = (
            f"--mpp {spacing_mm * 1000:g} not applied: the file states "
            f"{image.spacing[0] * 1000:g} um per pixel"
        )
        return image.replace(warnings=(*image.warnings, note))
    affine = image.affine.copy()
    for axis in range(2):
        length = float(np.linalg.norm(affine[:3, axis])) or 1.0
        affine[:3, axis] *= spacing_mm / length
    return image.replace(affine=affine, spacing_known=True)


def _hash(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def study_key_of(study_instance_uid: str) -> str:
    """The pseudonymous key a DICOM study's results are filed under."""
    return _hash(study_instance_uid)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.name


def _file_study(path: Path, root: Path | None = None) -> StudyInput:
    if is_slide_file(path):
        kind = "wsi"
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        kind = "nifti"
    else:
        kind = "raster"
    source = ImageSource(
        path.name, kind, partial(read_image, path), path, _relative(path, root or path)
    )
    return StudyInput(key=_hash(sha256_file(path)), label=path.name, images=[source])


def _refuse(path: Path, reason: str, limit: str) -> Image:
    raise ResourceLimitError(reason, path=path, limit=limit)


def _refused_study(path: Path, root: Path, reason: str, limit: str) -> StudyInput:
    """A DICOM file over a resource limit, as a study whose one image fails to load (so the
    batch records it); keyed by its path, since hashing a huge file is what is refused."""
    source = ImageSource(
        path.name, "dicom", partial(_refuse, path, reason, limit), path, _relative(path, root)
    )
    return StudyInput(key=_hash(str(path.resolve())), label=path.name, images=[source])


# label maps stored beside their images (ACDC style)
_LABEL_FILE = re.compile(r"^(?P<image>.+)_gt\.nii(\.gz)?$", re.IGNORECASE)


def _nifti_stem(path: Path) -> Path:
    """The file without its .nii / .nii.gz suffix, in its folder."""
    return path.with_name(re.sub(r"\.nii(\.gz)?$", "", path.name, flags=re.IGNORECASE))


def _image_file_studies(files: list[Path], root: Path) -> list[StudyInput]:
    """One study per image file, except that the end-diastole and end-systole volumes of one
    cine (``<stem>_ED`` and ``<stem>_ES`` in one folder) form one study, and ``*_gt`` label
    maps are set aside with a note on their image's study (never analysed as images)."""
    studies: list[StudyInput] = []
    pairs: dict[Path, list[tuple[str, Path]]] = {}
    labels: list[Path] = []
    by_stem: dict[Path, StudyInput] = {}
    for path in files:
        if _LABEL_FILE.match(path.name):
            labels.append(path)
        elif phase := PHASE_FILE.match(path.name):
            stem = path.with_name(phase["stem"])
            pairs.setdefault(stem, []).append((phase["phase"].upper(), path))
        else:
            studies.append(_file_study(path, root))
            by_stem[_nifti_stem(path)] = studies[-1]
    for stem, members in pairs.items():
        members.sort()
        sources = [
            replace(_file_study(path, root).images[0], phase=phase) for phase, path in members
        ]
        digest = _hash("".join(sha256_file(path) for _, path in members))
        studies.append(StudyInput(key=digest, label=stem.name, images=sources))
        by_stem.update({_nifti_stem(path): studies[-1] for _, path in members})
    for path in labels:
        note = f"{_relative(path, root)}: a label map (*_gt), not an image: not analysed"
        owner = by_stem.get(path.with_name(re.sub(r"_gt$", "", _nifti_stem(path).name)))
        if owner is not None:
            owner.skipped.append(note)
        else:
            log.info("%s", note)
    return studies


def _is_image_file(path: Path) -> bool:
    return (
        path.name.lower().endswith(NIFTI_SUFFIXES)
        or path.suffix.lower() in RASTER_SUFFIXES
        or path.suffix.lower() in SLIDE_SUFFIXES
    )


def find_studies(path: Path, *, workers: int | None = None) -> list[StudyInput]:
    """Studies under ``path``: DICOM studies (by StudyInstanceUID) and one per image file."""
    from medsight.io.dicom import read_volumes, scan_dicom

    if not path.exists():
        raise NoImageFoundError("no such file or folder", path=path)
    if path.is_file() and _is_image_file(path):
        return [_file_study(path)]
    scan = scan_dicom(path, workers=workers)
    studies: list[StudyInput] = []
    for study in scan.studies:
        entry = StudyInput(
            key=study_key_of(study.study_instance_uid),
            label=study.study_description or f"DICOM study {study.study_date or ''}".strip(),
        )
        for series in study.series:
            if any(f.sop_class_uid == WSI_SOP_CLASS for f in series.frames):
                # a DICOM whole slide: read as a pyramid, its level files found from one
                first = series.frames[0].path
                entry.images.append(
                    ImageSource(
                        f"{series.series_number or ''} whole slide".strip(),
                        "wsi",
                        partial(read_image, first),
                        first,
                        _relative(first, path),
                    )
                )
                continue
            for group in series.volume_groups():
                # a sequence is named by its number of time points, not its first one's label
                label = f"{len(group)} time points" if len(group) > 1 else group[0].label
                description = " ".join(
                    str(v)
                    for v in (
                        series.series_number,
                        series.series_description,
                        series.modality,
                        label,
                    )
                    if v not in (None, "")
                )
                # a partial, not a closure: studies are pickled to `analyze --jobs` workers
                load = partial(read_volumes, group)
                entry.images.append(
                    ImageSource(
                        description,
                        "dicom",
                        load,
                        relative_path=_relative(group[0].frames[0].path, path),
                    )
                )
        studies.append(entry)
    image_files = [skip.path for skip in scan.skipped if _is_image_file(skip.path)]
    studies += _image_file_studies(image_files, path)
    for skip in scan.skipped:
        if skip.limit is not None and not _is_image_file(skip.path):
            # recorded as refused, never silently left out
            studies.append(_refused_study(skip.path, path, skip.reason, skip.limit))
    if not studies:
        reason = scan.skipped[0].reason if scan.skipped else "the folder is empty"
        raise NoImageFoundError(f"no image found ({reason})", path=path)
    return studies


def studies_of(path: Path | None, manifest: Path | None) -> list[StudyInput]:
    """The studies of a path, or of a manifest CSV (exactly one of the two)."""
    from medsight.errors import InvalidInputError

    if (path is None) == (manifest is None):
        raise InvalidInputError("give either a PATH to analyse or --manifest CSV, not both")
    if manifest is not None:
        from medsight.analysis.manifest import manifest_studies

        return manifest_studies(manifest)
    assert path is not None
    return find_studies(path)
