"""Nucleus outlines of a DICOM whole slide as DICOM Microscopy Bulk Simple Annotations
(highdicom), referencing the slide's level-0 instance: one annotation group of polygons in
the slide's 3D frame of reference (mm, from the GeoJSON's level-0 pixel outlines through the
instance's origin, orientation and spacing), with each nucleus's area as a measurement.

The outlines are read back from the slide's GeoJSON (written as they were found): every
polygon is held while the object is built, about 0.3 kB a nucleus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medsight.reporting._dicom_common import result_uid, series_uid
from medsight.tasks import Task

__all__ = ["write_nucleus_annotations"]


def _level_zero(files: list[Path]) -> Any:
    """The header of the series' largest (level-0, VOLUME) instance."""
    import pydicom

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    volumes = [h for h in headers if len(h.ImageType) > 2 and h.ImageType[2] == "VOLUME"]
    return max(volumes or headers, key=lambda h: int(h.TotalPixelMatrixColumns))


def write_nucleus_annotations(
    geojson: Path, slide_files: list[Path], task: Task, path: Path
) -> Path:
    """Write ``path``: the GeoJSON's nucleus polygons as bulk annotations of the slide."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medsight import __version__

    source = _level_zero(slide_files)
    features = json.loads(geojson.read_text())["features"]
    # total-pixel-matrix image coordinates (column, row; the first pixel's top-left corner
    # at 0, 0, as in the GeoJSON) -> the slide's frame of reference in mm
    to_slide = hd.spatial.ImageToReferenceTransformer.for_image(source, for_total_pixel_matrix=True)
    polygons = [
        to_slide(np.asarray(f["geometry"]["coordinates"][0][:-1], dtype=np.float64))
        for f in features
    ]
    unit_key = next(iter(features[0]["properties"]["measurements"])) if features else ""
    areas = np.asarray(
        [f["properties"]["measurements"][unit_key] for f in features], dtype=np.float32
    )
    measurements = (
        [hd.ann.Measurements(name=codes.SCT.Area, values=areas, unit=codes.UCUM.SquareMicrometer)]
        if unit_key.endswith("um2") and len(areas)
        else None
    )
    group = hd.ann.AnnotationGroup(
        number=1,
        uid=result_uid(task, source, "ann-group-nuclei"),
        label="nuclei",
        annotated_property_category=codes.SCT.AnatomicalStructure,
        annotated_property_type=codes.SCT.Nucleus,
        graphic_type=hd.ann.GraphicTypeValues.POLYGON,
        graphic_data=polygons,
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=task.id,
            family=codes.cid7162.ArtificialIntelligence,
            version=task.version,
            parameters={"task_hash": task.task_hash[:64]},
        ),
        measurements=measurements,
        description="research use only, not for diagnostic use",
    )
    annotations = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source],
        # 3D slide coordinates: dicom3tools' dciodvfy reports an error on every 2D (SCOORD)
        # bulk annotation, highdicom's own test file included
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD3D,
        annotation_groups=[group],
        series_instance_uid=series_uid(task, source, "ann"),
        series_number=9100,
        sop_instance_uid=result_uid(task, source, "ann-instance"),
        instance_number=1,
        manufacturer="medsight",
        manufacturer_model_name=task.id,
        software_versions=__version__,
        device_serial_number="none",
        content_description="nuclei (research use only, not for diagnostic use)",
        content_label="NUCLEI",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    annotations.save_as(path)
    return path
