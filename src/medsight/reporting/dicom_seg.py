"""DICOM SEG (highdicom) of a segmentation prediction, on the source's frame of reference.

Binary SEGs come from the label map; fractional SEGs from the segment probabilities. Only
segments with voxels are written (highdicom numbers segments 1..n without gaps; each
segment's label keeps the task's output name). One SEG frame per source frame, in the
source's own frame order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from medsight.errors import InvalidInputError
from medsight.image import Image
from medsight.inference import Prediction
from medsight.reporting._dicom_common import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    algorithm_identification,
    contributing_equipment,
    result_uid,
    series_uid,
    source_datasets,
)
from medsight.tasks import Task

__all__ = ["write_seg"]


def _frames(volume: np.ndarray, image: Image, sources: list[Any]) -> np.ndarray:
    """(frames, rows, columns[, ...]) in the sources' frame order from an (i, j[, k], ...)
    array on the image grid."""
    if image.spatial_dims == 2:
        return np.swapaxes(volume, 0, 1)[np.newaxis]
    by_position = {}
    for k, frame in enumerate(image.frames):
        by_position[(str(frame.path), frame.frame_number or 1)] = k
    slices = []
    for dataset_path, dataset in zip(_paths(image), sources, strict=True):
        count = int(dataset.get("NumberOfFrames", 1) or 1)
        for number in range(1, count + 1):
            position = by_position.get((str(dataset_path), number))
            if position is None:
                raise InvalidInputError(
                    f"frame {number} of the source is not part of the analysed volume",
                    path=dataset_path,
                )
            slices.append(np.swapaxes(volume[:, :, position], 0, 1))
    return np.stack(slices)


def _paths(image: Image) -> list[Path]:
    paths: list[Path] = []
    for frame in image.frames:
        if frame.path is not None and frame.path not in paths:
            paths.append(frame.path)
    return paths


def _has_plane_orientation(seg: Any) -> bool:
    shared = seg.get("SharedFunctionalGroupsSequence") or []
    return bool(shared) and "PlaneOrientationSequence" in shared[0]


def write_seg(
    prediction: Prediction,
    task: Task,
    image: Image,
    path: Path,
    *,
    segmentation_type: Literal["binary", "fractional"] = "binary",
    revision: int = 0,
) -> Path | None:
    """Write the SEG to ``path``; None when no segment has any voxel (nothing to store)."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.sr.codedict import codes

    import medsight

    if prediction.label_map is None:
        raise InvalidInputError(f"task {task.id} produced no segmentation to write as SEG")
    if tuple(prediction.shape) != tuple(image.shape) or not np.allclose(
        prediction.affine, image.affine, atol=1e-4
    ):
        raise InvalidInputError(
            f"the prediction's geometry {tuple(prediction.shape)} does not match its source "
            f"image {tuple(image.shape)}"
        )
    sources = source_datasets(image)
    # one image, one frame of reference: instances whose UIDs differ although their geometry
    # forms one volume (the reader warns) are referenced in the first instance's
    reference = image.identifiers.frame_of_reference_uid
    if reference and len({str(d.get("FrameOfReferenceUID", "")) for d in sources}) > 1:
        for dataset in sources:
            dataset.FrameOfReferenceUID = reference
    outputs = [o for o in task.spec.outputs if o.index > 0]
    present = [o for o in outputs if (prediction.label_map == o.index).any()]
    if not present:
        return None
    descriptions = []
    for number, output in enumerate(present, start=1):
        lesion = output.critical or "lesion" in output.name
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=output.name[:64],
                segmented_property_category=(
                    codes.SCT.MorphologicallyAbnormalStructure
                    if lesion
                    else codes.SCT.AnatomicalStructure
                ),
                segmented_property_type=CodedConcept(
                    output.code.value, output.code.scheme, output.code.meaning
                ),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_identification(task),
            )
        )
    if segmentation_type == "binary":
        renumber = np.zeros(int(prediction.label_map.max()) + 1, dtype=np.uint8)
        for number, output in enumerate(present, start=1):
            renumber[output.index] = number
        pixels = _frames(renumber[prediction.label_map], image, sources)
        kind = hd.seg.SegmentationTypeValues.BINARY
    else:
        if prediction.segment_probabilities is None:
            raise InvalidInputError("a fractional SEG needs segment probabilities")
        stacked = np.stack(
            [prediction.segment_probabilities[o.index] for o in present], axis=-1
        ).astype(np.float32)
        pixels = _frames(np.clip(stacked, 0.0, 1.0), image, sources)
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid(task, first, f"seg-series-{segmentation_type}"),
        series_number=9101 if segmentation_type == "binary" else 9102,
        sop_instance_uid=result_uid(task, first, f"seg-{segmentation_type}", revision=revision),
        instance_number=1 + revision,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{task.id} {task.version}"[:64],
        software_versions=f"medsight {medsight.__version__}",
        device_serial_number=task.task_hash[:16],
        content_description=f"AI segmentation, {NOT_FOR_DIAGNOSIS}"[:64],
        content_label="MEDSIGHT_AI",
        contributing_equipment=contributing_equipment(task),
        omit_empty_frames=False,
    )
    seg.SeriesDescription = f"AI SEG {task.id} - research use only"[:64]
    if "PatientOrientation" not in seg and not _has_plane_orientation(seg):
        # General Image, Type 2C when frames carry no Image Orientation (Patient): a
        # photograph or a projection radiograph. The source's value, or empty.
        seg.PatientOrientation = first.get("PatientOrientation", "")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
