"""A labelled case (an image, its label or mask, its patient) and how to read it: shared by
evaluation and training (training lists and splits cases: `medsight.training.data`)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsight.errors import InvalidInputError
from medsight.findings.cardiac import PHASE_FILE
from medsight.image import Image
from medsight.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, read_image
from medsight.io.annotations import (
    CONTOUR_SUFFIXES,
    instance_classes,
    rasterize_instances,
    read_contour_xml,
)

__all__ = [
    "Case",
    "mask_folder_cases",
    "read_case_image",
    "read_case_instances",
    "read_case_mask",
]


@dataclass(frozen=True)
class Case:
    path: Path
    patient: str
    label: int = -1  # classification: output index; -1 for segmentation cases
    mask: Path | None = None
    roi: Path | None = None
    source: str = ""  # where the case was listed, for error messages ("labels.csv row 7")
    split: str | None = None  # a predefined split ("train" / "validation")
    attributes: dict[str, str] = field(default_factory=dict)  # subgroup columns
    npz_index: int | None = None  # position in an .npz array
    # sigmoid classification: one target per output (0, 1, or NaN where not graded); then
    # ``label`` is the case's stratum for patient folds (its highest grade or target)
    targets: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        return self.source or self.path.name


def read_case_image(case: Case) -> Image:
    """The case's image; an ``.npz`` entry becomes an image with unknown geometry."""
    if case.npz_index is None:
        try:
            return read_image(case.path)
        except Exception as exc:
            raise InvalidInputError(
                f"{case.name}: cannot read image ({exc})", path=case.path
            ) from exc
    prefix = "train" if case.split == "train" else "val"
    pixels = np.asarray(_npz_images(case.path, f"{prefix}_images")[case.npz_index])
    color = pixels.ndim == 3 and pixels.shape[-1] == 3
    dims = pixels.ndim - (1 if color else 0)
    # rows, columns(, slices) -> i = column, j = row, as the raster reader does
    array = np.swapaxes(pixels, 0, 1)[np.newaxis] if not color else pixels.transpose(2, 1, 0)
    return Image(
        array=np.ascontiguousarray(array),
        affine=np.eye(4),
        spatial_dims=dims,
        photometric_interpretation="RGB" if color else "MONOCHROME2",
        spacing_known=False,
        orientation_known=False,
        metadata={"source_format": "npz"},
    )


@functools.lru_cache(maxsize=2)
def _npz_images(path: Path, key: str) -> np.ndarray:
    """One image array of an .npz, loaded once (not once per case)."""
    with np.load(path) as archive:
        return np.asarray(archive[key])


def read_case_mask(case: Case, image: Image, which: str = "mask") -> Image:
    """The case's mask (or roi) as an integer label map on the image's grid; a mask whose
    geometry differs from its image is refused, naming the case."""
    path = case.mask if which == "mask" else case.roi
    assert path is not None
    if path.suffix.lower() in CONTOUR_SUFFIXES:
        instances = read_case_instances(case, image)
        labels = instance_classes(instances)[np.newaxis].astype(np.int16)
        return image.replace(array=labels, photometric_interpretation="MONOCHROME2")
    try:
        mask = read_image(path)
    except Exception as exc:
        raise InvalidInputError(f"{case.name}: cannot read {which} ({exc})", path=path) from exc
    if mask.shape != image.shape:
        raise InvalidInputError(
            f"{case.name}: {which} size {mask.shape} differs from its image {image.shape}",
            path=path,
        )
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InvalidInputError(
            f"{case.name}: {which} geometry (affine) differs from its image's", path=path
        )
    values = mask.array[:1] if mask.array.shape[0] > 1 else mask.array
    labels = np.rint(values).astype(np.int16)
    if labels.max(initial=0) > 1 and set(np.unique(labels).tolist()) <= {0, 255}:
        labels = (labels > 0).astype(np.int16)  # 0/255 binary images
    return mask.replace(array=labels)


def read_case_instances(case: Case, image: Image) -> np.ndarray:
    """The case's nucleus instance map (uint16, on the image's (i, j) = (column, row) grid)
    from its contour annotation (``medsight.io.annotations``)."""
    assert case.mask is not None
    if image.spatial_dims != 2:
        raise InvalidInputError(f"{case.name}: contour annotations need a 2D image")
    columns, rows = image.shape
    polygons = read_contour_xml(case.mask)
    return rasterize_instances(polygons, (rows, columns), source=case.mask).T.copy()


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, dot, suffix = name.rpartition(".")
    return (stem, dot + suffix) if dot else (name, "")


def mask_folder_cases(
    folder: Path, masks: str = "{stem}_gt{suffix}", patient_pattern: str | None = None
) -> list[Case]:
    """Every image in ``folder`` with its mask named by ``masks`` (``{stem}`` and
    ``{suffix}`` of the image's name; files that are masks are not images). The patient is
    group 1 of ``patient_pattern`` on the file name (default: each image its own patient);
    a cine phase in the name (``_ED``, ``_ES``) becomes the case's ``phase`` attribute, so
    the report gives each phase its own figures. Every problem is refused at once."""

    def is_image(path: Path) -> bool:
        name = path.name.lower()
        return path.is_file() and (
            name.endswith(NIFTI_SUFFIXES) or path.suffix.lower() in RASTER_SUFFIXES
        )

    files = sorted(p for p in folder.iterdir() if is_image(p))
    mask_of = {
        p: folder / masks.format(stem=_split_suffix(p.name)[0], suffix=_split_suffix(p.name)[1])
        for p in files
    }
    mask_files = set(mask_of.values())
    pattern = re.compile(patient_pattern) if patient_pattern else None
    cases: list[Case] = []
    problems: list[str] = []
    for path in files:
        if path in mask_files:
            continue
        if not mask_of[path].is_file():
            problems.append(f"{path.name}: no mask {mask_of[path].name}")
            continue
        patient = _split_suffix(path.name)[0]
        if pattern is not None:
            found = pattern.search(path.name)
            if found is None or not found.groups():
                problems.append(f"{path.name}: no patient id ({patient_pattern!r}, group 1)")
                continue
            patient = found.group(1)
        phase = PHASE_FILE.match(path.name)
        attributes = {"phase": phase["phase"].upper()} if phase else {}
        cases.append(Case(path, patient, mask=mask_of[path], attributes=attributes))
    if problems:
        shown = "; ".join(problems[:8])
        raise InvalidInputError(f"{len(problems)} problem(s) in the folder: {shown}", path=folder)
    if not cases:
        raise InvalidInputError(f"no image with a mask ({masks!r}) in the folder", path=folder)
    return cases
