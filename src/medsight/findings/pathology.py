"""Nucleus measurements of one analysed region: count, density per tissue area, sizes.

Areas come from the image's pixel spacing (micrometres squared per pixel); a tile without a
stated resolution is measured in pixels, and its density is per million pixels, with that
said in the unit and in the method.
"""

from __future__ import annotations

import numpy as np

from medsight.errors import EmptyMaskError
from medsight.findings.measurements import Measurement
from medsight.image import Image
from medsight.imaging.tissue import tissue_mask

__all__ = ["nucleus_measurements", "nucleus_summary"]

_STRUCTURE = "nucleus"


def nucleus_measurements(instances: np.ndarray, image: Image) -> list[Measurement]:
    """Count, tissue area, density and mean / SD nucleus area of an instance map (0 is
    background) on ``image``'s grid; the tissue is the image's stained area
    (medsight.imaging.tissue) together with every nucleus."""
    _, sizes = np.unique(instances[instances > 0], return_counts=True)
    tissue_pixels = int((tissue_mask(image.array[:3]) | (instances > 0)).sum())
    known = image.spacing_known
    pixel_area_um2 = float(np.prod(image.spacing[:2])) * 1e6 if known else 1.0
    return nucleus_summary(
        sizes.astype(np.float64) * pixel_area_um2,
        tissue_pixels * pixel_area_um2 / 1e6 if known else float(tissue_pixels),
        known=known,
    )


def nucleus_summary(areas: np.ndarray, tissue_area: float, *, known: bool) -> list[Measurement]:
    """The measurements from each nucleus's area (um2, or pixels when ``known`` is False)
    and the tissue area (mm2, or pixels)."""
    if tissue_area <= 0:
        raise EmptyMaskError("no tissue in the image: nothing to measure")
    count = len(areas)
    area_unit = "um2" if known else "{px2}"
    density = count / tissue_area if known else count / tissue_area * 1e6
    method = "instances of the nucleus segmentation"
    found = [
        Measurement("nucleus count", float(count), "{nuclei}", method, _STRUCTURE),
        Measurement(
            "tissue area",
            float(tissue_area),
            "mm2" if known else "{px2}",
            "stained pixels and nuclei x pixel area",
            "tissue",
        ),
        Measurement(
            "nucleus density",
            float(density),
            "/mm2" if known else "{nuclei}/10*6{px2}",
            "nucleus count / tissue area"
            + ("" if known else " (no pixel spacing: per million pixels)"),
            _STRUCTURE,
        ),
    ]
    if count:
        found += [
            Measurement("mean nucleus area", float(areas.mean()), area_unit, method, _STRUCTURE),
            Measurement(
                "SD of nucleus area",
                float(areas.std(ddof=1)) if count > 1 else 0.0,
                area_unit,
                method + " (sample standard deviation)",
                _STRUCTURE,
            ),
        ]
    return found
