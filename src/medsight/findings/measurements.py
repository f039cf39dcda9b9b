"""Measurements in real units from the image geometry, each with its UCUM unit and method.

Masks are boolean arrays on an image's spatial grid (``array[i, j(, k)]``); the voxel size
comes from the image affine (column norms), so oblique volumes measure correctly. A photo
without pixel spacing measures in pixels, and says so in the unit (``{px}``/``{px2}``).
Every function refuses an empty mask with :class:`EmptyMaskError` naming the structure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from medsight.errors import EmptyMaskError, InvalidInputError
from medsight.image import Image

__all__ = [
    "Measurement",
    "asymmetry_index",
    "border_irregularity",
    "bounding_box_extents",
    "ejection_fraction",
    "intensity_statistics",
    "label_map_statistics",
    "lesion_area",
    "recist_diameters",
    "spoken_measurement",
    "spoken_number",
    "spoken_unit",
    "stroke_and_ejection",
    "surface_area",
    "vessel_area_fraction",
    "vessel_tortuosity",
    "volume",
]


@dataclass(frozen=True)
class Measurement:
    """One number a clinician reads: ``value`` in ``unit`` (UCUM), by ``method``."""

    name: str
    value: float
    unit: str
    method: str
    structure: str = ""  # the segment or structure measured

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# UCUM codes as people write them (result.json and DICOM SR keep the UCUM code)
_SPOKEN_UNITS = {
    "1": "",
    "{px}": "pixels",
    "{px2}": "pixels",
    "{voxel}": "voxels",
    "[hnsf'U]": "HU",
    "mm3": "mm³",
    "mm2": "mm²",
    "um2": "µm²",
    "/mm2": "per mm²",
    "{nuclei}": "nuclei",
    "{nuclei}/10*6{px2}": "per million pixels",
    "cm3": "cm³",
}


def spoken_unit(unit: str) -> str:
    """The unit as a reader writes it: mm², mL, HU, "pixels" when the spacing is unknown."""
    return _SPOKEN_UNITS.get(unit, unit)


def spoken_number(value: float) -> str:
    """4 significant digits, but whole numbers from 1,000 up (never 9.754e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def spoken_measurement(value: float, unit: str) -> str:
    """``value`` with its unit in words, saying so when the image had no spacing."""
    words = spoken_unit(unit)
    text = f"{spoken_number(value)} {words}".rstrip()
    if unit in ("{px}", "{px2}", "{voxel}", "{nuclei}/10*6{px2}"):
        text += " (no pixel spacing: not in mm)"
    return text


def _spacing(image: Image) -> np.ndarray:
    return np.asarray(image.spacing, dtype=np.float64)


def _length_unit(image: Image) -> str:
    return "mm" if image.spacing_known else "{px}"


def _mask(mask: np.ndarray, image: Image, structure: str) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(image.shape):
        raise InvalidInputError(
            f"mask of {structure or 'the structure'} has shape {mask.shape}; its image has "
            f"{tuple(image.shape)}"
        )
    if not mask.any():
        raise EmptyMaskError(f"cannot measure {structure or 'the structure'}: its mask is empty")
    return mask


def volume(mask: np.ndarray, image: Image, structure: str = "") -> Measurement:
    """Voxel count times voxel volume, in mL."""
    mask = _mask(mask, image, structure)
    if image.spatial_dims != 3:
        raise InvalidInputError("volume needs a 3D image; use lesion_area for 2D")
    millilitres = float(mask.sum()) * float(np.prod(_spacing(image))) / 1000.0
    unit = "mL" if image.spacing_known else "{voxel}"
    value = millilitres if image.spacing_known else float(mask.sum())
    return Measurement("volume", value, unit, "voxel count x voxel volume", structure)


def surface_area(mask: np.ndarray, image: Image, structure: str = "") -> Measurement:
    """Area of the marching-cubes surface (mm2) in 3D; the perimeter (mm) in 2D."""
    from skimage import measure

    mask = _mask(mask, image, structure)
    spacing = _spacing(image)
    if image.spatial_dims == 2:
        from scipy import ndimage

        # the 0.5 contour of the lightly smoothed mask: on the raw pixels the contour
        # follows the staircase and overstates a circle's perimeter by about 5%
        smooth = ndimage.gaussian_filter(np.pad(mask, 2).astype(np.float64), sigma=1.0)
        total = 0.0
        for contour in measure.find_contours(smooth, 0.5):
            steps = np.diff(contour, axis=0) * spacing
            total += float(np.linalg.norm(steps, axis=1).sum())
        return Measurement(
            "perimeter", total, _length_unit(image), "marching squares, smoothed mask", structure
        )
    padded = np.pad(mask, 1).astype(np.float32)
    vertices, faces, _, _ = measure.marching_cubes(padded, 0.5, spacing=tuple(spacing))
    area = float(measure.mesh_surface_area(vertices, faces))
    unit = "mm2" if image.spacing_known else "{px2}"
    return Measurement("surface area", area, unit, "marching cubes", structure)


def bounding_box_extents(mask: np.ndarray, image: Image, structure: str = "") -> list[Measurement]:
    """Extent along each image axis (i, j, k), outer voxel edge to outer voxel edge."""
    mask = _mask(mask, image, structure)
    spacing = _spacing(image)
    found = np.argwhere(mask)
    extents = (found.max(axis=0) - found.min(axis=0) + 1) * spacing
    return [
        Measurement(
            f"extent along {axis}",
            float(extent),
            _length_unit(image),
            "bounding box on the image axes",
            structure,
        )
        for axis, extent in zip("ijk", extents, strict=False)
    ]


def _longest_and_perpendicular(points: np.ndarray, step: float) -> tuple[float, float]:
    """Longest distance between two points, and the longest extent perpendicular to it
    (RECIST short axis): points are binned along the long axis, ``step`` mm wide."""
    from scipy.spatial import ConvexHull, QhullError

    if len(points) == 1:
        return 0.0, 0.0
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # collinear points
        hull = points
    distances = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    a, b = np.unravel_index(np.argmax(distances), distances.shape)
    longest = float(distances[a, b])
    axis = (hull[b] - hull[a]) / longest
    normal = np.array([-axis[1], axis[0]])
    along = points @ axis
    across = points @ normal
    bins = np.floor((along - along.min()) / step).astype(int)
    widest = 0.0
    for value in np.unique(bins):
        members = across[bins == value]
        widest = max(widest, float(members.max() - members.min()))
    return longest, widest


def recist_diameters(mask: np.ndarray, image: Image, structure: str = "") -> list[Measurement]:
    """Longest in-plane diameter and the longest diameter perpendicular to it, on the slice
    where the longest diameter is found (RECIST 1.1 style), between voxel centres."""
    mask = _mask(mask, image, structure)
    spacing = _spacing(image)
    slices = [mask] if mask.ndim == 2 else [mask[..., k] for k in range(mask.shape[2])]
    best = (-1.0, 0.0, 0)
    for index, plane in enumerate(slices):
        if not plane.any():
            continue
        points = np.argwhere(plane) * spacing[:2]
        longest, perpendicular = _longest_and_perpendicular(points, float(spacing[:2].min()))
        if longest > best[0]:
            best = (longest, perpendicular, index)
    where = f" (slice {best[2]})" if mask.ndim == 3 else ""
    unit = _length_unit(image)
    return [
        Measurement(
            "long axis diameter",
            best[0],
            unit,
            f"longest in-plane distance between voxel centres{where}",
            structure,
        ),
        Measurement(
            "short axis diameter",
            best[1],
            unit,
            f"longest extent perpendicular to the long axis{where}",
            structure,
        ),
    ]


def intensity_statistics(mask: np.ndarray, image: Image, structure: str = "") -> list[Measurement]:
    """Mean, standard deviation, minimum and maximum of the stored values inside the mask
    (Hounsfield units for CT, after the Modality LUT)."""
    mask = _mask(mask, image, structure)
    values = np.asarray(image.array[0], dtype=np.float64)[mask]
    unit = "[hnsf'U]" if image.modality == "CT" else "1"
    method = "inside the mask, modality values"
    return [
        Measurement("mean intensity", float(values.mean()), unit, method, structure),
        Measurement(
            "standard deviation of intensity", float(values.std()), unit, method, structure
        ),
        Measurement("minimum intensity", float(values.min()), unit, method, structure),
        Measurement("maximum intensity", float(values.max()), unit, method, structure),
    ]


def label_map_statistics(
    label_map: np.ndarray, image: Image, names: dict[int, str]
) -> dict[str, list[Measurement]]:
    """Volume and mean intensity of every named label present in a label map (one pass
    over the voxels with bincount, not one mask per label)."""
    labels = np.asarray(label_map)
    if labels.shape != tuple(image.shape):
        raise InvalidInputError(
            f"label map shape {labels.shape} differs from its image's {tuple(image.shape)}"
        )
    flat = labels.ravel().astype(np.int64)
    counts = np.bincount(flat)
    sums = np.bincount(flat, weights=np.asarray(image.array[0], dtype=np.float64).ravel())
    voxel_ml = float(np.prod(_spacing(image))) / 1000.0
    unit = "[hnsf'U]" if image.modality == "CT" else "1"
    result: dict[str, list[Measurement]] = {}
    for label, name in names.items():
        if label == 0 or label >= len(counts) or counts[label] == 0:
            continue
        result[name] = [
            Measurement(
                "volume", float(counts[label]) * voxel_ml, "mL", "voxel count x voxel volume", name
            ),
            Measurement(
                "mean intensity",
                float(sums[label] / counts[label]),
                unit,
                "inside the label, modality values",
                name,
            ),
        ]
    return result


def lesion_area(mask: np.ndarray, image: Image, structure: str = "") -> Measurement:
    """Area of a 2D mask (mm2, or pixels when the spacing is unknown)."""
    mask = _mask(mask, image, structure)
    if image.spatial_dims != 2:
        raise InvalidInputError("lesion area needs a 2D image")
    value = float(mask.sum()) * float(np.prod(_spacing(image)))
    unit = "mm2" if image.spacing_known else "{px2}"
    return Measurement("area", value, unit, "pixel count x pixel area", structure)


def asymmetry_index(mask: np.ndarray, image: Image, structure: str = "") -> Measurement:
    """ABCD-style asymmetry: the mask mirrored about each principal axis through its
    centroid; the share of the area that does not overlap, averaged over both axes
    (0 = symmetric)."""
    from scipy import ndimage

    mask = _mask(mask, image, structure)
    if image.spatial_dims != 2:
        raise InvalidInputError("asymmetry needs a 2D image")
    points = np.argwhere(mask).astype(np.float64)
    centre = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    scores = []
    for axis in vectors.T:  # mirror about the line through the centre along ``axis``
        normal = np.array([-axis[1], axis[0]])
        reflection = np.eye(2) - 2 * np.outer(normal, normal)
        offset = centre - reflection @ centre
        mirrored = (
            ndimage.affine_transform(mask.astype(np.float32), reflection, offset=offset, order=0)
            > 0.5
        )
        scores.append(float((mask ^ mirrored).sum()) / float(mask.sum()))
    return Measurement(
        "asymmetry index",
        float(np.mean(scores)),
        "1",
        "non-overlapping area after mirroring about both principal axes",
        structure,
    )


def border_irregularity(mask: np.ndarray, image: Image, structure: str = "") -> Measurement:
    """Compactness index P^2 / (4 pi A): 1 for a circle, larger for irregular borders."""
    area = lesion_area(mask, image, structure).value
    perimeter = surface_area(mask, image, structure).value
    return Measurement(
        "border irregularity (compactness)",
        perimeter**2 / (4 * np.pi * area),
        "1",
        "perimeter^2 / (4 pi area)",
        structure,
    )


def _field_of_view(image: Image) -> np.ndarray:
    """Fundus field of view: the largest bright region of the photograph."""
    from scipy import ndimage

    values = np.asarray(image.array, dtype=np.float32).mean(axis=0)
    inside = values > max(20.0, float(values.max()) * 0.08)
    labelled, count = ndimage.label(inside)
    if count == 0:
        raise EmptyMaskError("no field of view found in the fundus photograph")
    largest = np.argmax(np.bincount(labelled.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(labelled == largest)


def vessel_area_fraction(
    vessels: np.ndarray, image: Image, field_of_view: np.ndarray | None = None
) -> Measurement:
    """Share of the field of view covered by vessels."""
    vessels = np.asarray(vessels).astype(bool)
    inside = _field_of_view(image) if field_of_view is None else np.asarray(field_of_view) > 0
    if not inside.any():
        raise EmptyMaskError("the field of view is empty")
    fraction = float((vessels & inside).sum()) / float(inside.sum())
    return Measurement(
        "vessel area fraction",
        fraction,
        "1",
        "vessel pixels / field-of-view pixels",
        "retinal vessels",
    )


def vessel_tortuosity(vessels: np.ndarray, image: Image, min_length: float = 10.0) -> Measurement:
    """Length-weighted mean of arc length / chord length over the vessel segments of the
    skeleton (segments split at branch points; shorter than ``min_length`` ignored)."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    vessels = _mask(vessels, image, "retinal vessels")
    skeleton = skeletonize(vessels)
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.ones((3, 3)), mode="constant")
    branch_points = skeleton & (neighbours > 3)  # itself plus three or more neighbours
    segments, count = ndimage.label(
        skeleton & ~ndimage.binary_dilation(branch_points), structure=np.ones((3, 3))
    )
    spacing = _spacing(image)
    total_arc = total_weighted = 0.0
    for index in range(1, count + 1):
        points = np.argwhere(segments == index) * spacing
        if len(points) < 3:
            continue
        # order is unknown: arc length from the pixel count with diagonal steps weighted
        arc = _path_length(segments == index, spacing)
        ends = points[np.argmax(np.linalg.norm(points - points[0], axis=1))]
        other = points[np.argmax(np.linalg.norm(points - ends, axis=1))]
        chord = float(np.linalg.norm(ends - other))
        if arc < min_length or chord == 0:
            continue
        total_arc += arc
        total_weighted += arc * (arc / chord)
    if total_arc == 0:
        raise EmptyMaskError("no vessel segment long enough to measure tortuosity")
    return Measurement(
        "vessel tortuosity",
        total_weighted / total_arc,
        "1",
        "length-weighted arc/chord ratio of skeleton segments",
        "retinal vessels",
    )


def _path_length(segment: np.ndarray, spacing: np.ndarray) -> float:
    """Length of a one-pixel-wide 8-connected path (chain code): each neighbouring pair
    counted once with its true length; a diagonal pair only when no pixel turns the corner
    (else the two orthogonal steps already count)."""
    height, width = segment.shape

    def pairs(di: int, dj: int) -> tuple[np.ndarray, np.ndarray]:
        first = segment[: height - di, max(0, -dj) : width - max(0, dj)]
        second = segment[di:, max(0, dj) : width + min(0, dj)]
        return first, second

    length = 0.0
    for di, dj in ((1, 0), (0, 1)):
        first, second = pairs(di, dj)
        length += float((first & second).sum()) * float(spacing[0] if di else spacing[1])
    diagonal = float(np.hypot(spacing[0], spacing[1]))
    for dj in (1, -1):
        first, second = pairs(1, dj)
        # the corner pixels of the step (i+1, j) and (i, j+dj)
        below = segment[1:, max(0, -dj) : width - max(0, dj)]
        beside = segment[:-1, max(0, dj) : width + min(0, dj)]
        length += float((first & second & ~below & ~beside).sum()) * diagonal
    return length


def stroke_and_ejection(edv: Measurement, esv: Measurement) -> list[Measurement]:
    """Stroke volume (EDV - ESV, in the volumes' unit) and ejection fraction ((EDV - ESV) /
    EDV, %) of one cavity; InvalidInputError when the volumes cannot be two phases of it."""
    if edv.unit != esv.unit:
        raise InvalidInputError(f"volumes in {edv.unit} and {esv.unit}: not one cavity's")
    if edv.value <= 0.0:
        raise InvalidInputError("no end-diastolic volume: no ejection fraction")
    if esv.value > edv.value:
        raise InvalidInputError(
            f"end-systolic volume {esv.value:.1f} {esv.unit} exceeds end-diastolic "
            f"{edv.value:.1f} {edv.unit}: are the two phases swapped?"
        )
    structure = edv.structure
    return [
        Measurement("stroke volume", edv.value - esv.value, edv.unit, "EDV - ESV", structure),
        Measurement(
            "ejection fraction",
            100.0 * (edv.value - esv.value) / edv.value,
            "%",
            "(EDV - ESV) / EDV",
            structure,
        ),
    ]


def ejection_fraction(
    end_diastolic: np.ndarray,
    end_systolic: np.ndarray,
    image: Image,
    structure: str = "left ventricle",
) -> list[Measurement]:
    """End-diastolic and end-systolic volumes (mL) and the ejection fraction (%) of two
    masks on one grid (findings.cardiac derives a whole cine's function from these parts)."""
    edv = replace(volume(end_diastolic, image, structure), name="end-diastolic volume")
    esv = replace(volume(end_systolic, image, structure), name="end-systolic volume")
    _, fraction = stroke_and_ejection(edv, esv)
    return [edv, esv, fraction]
