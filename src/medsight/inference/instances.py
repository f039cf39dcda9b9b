"""Object instances (nuclei) from a three-class segmentation: interior, boundary, background.

The network marks each nucleus's interior and its rim; touching nuclei share a rim, so
their interiors are separate regions. A marker-controlled watershed (scikit-image) grows
one instance from each seed over the nucleus pixels (interior or rim), along the interior
probability, so that rim pixels join the nucleus they belong to. The seeds are either each
connected interior region ("interior", after Caicedo et al., Cytometry A 2019) or the
peaks of the nucleus pixels' distance transform ("distance", the classical cell-detection
split); the task says which (chosen by measurement, see the task's card).
"""

from __future__ import annotations

import numpy as np

from medsight.tasks.spec import Instances

__all__ = ["instance_map", "relabel_sequential"]

#: a seed smaller than this share of the smallest object is noise on a rim, not a nucleus
_SEED_SHARE = 0.25


def instance_map(
    probabilities: np.ndarray,
    interior_index: int,
    boundary_index: int,
    options: Instances,
    pixel_area_um2: float | None,
) -> np.ndarray:
    """uint32 instance ids (0 background) on the probabilities' grid (k, i, j).

    ``pixel_area_um2`` converts the task's ``min_area_um2`` into pixels; None (spacing
    unknown) reads it as pixels at the model's resolution (the tile is taken at it)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    interior = probabilities[interior_index]
    boundary = probabilities[boundary_index]
    objects = (interior + boundary) > 0.5
    # spacing unknown: the tile is taken at the model's resolution (without one, the area
    # limit is in pixels)
    model_pixel = options.mpp**2 if options.mpp is not None else 1.0
    area = pixel_area_um2 if pixel_area_um2 is not None else model_pixel
    min_pixels = max(1, round(options.min_area_um2 / area))
    if options.seeds == "interior":
        cores = (interior > boundary) & (interior > 0.5) & objects
        seeds, _ = ndimage.label(cores)
        sizes = np.bincount(seeds.ravel())
        small = sizes < max(1, int(min_pixels * _SEED_SHARE))
        small[0] = False
        seeds[small[seeds]] = 0
        elevation = 1.0 - interior
    else:
        distance = ndimage.distance_transform_edt(objects)
        seeds = _distance_peaks(distance, objects, min_pixels)
        elevation = -distance
    grown = watershed(elevation, markers=seeds, mask=objects)
    # nucleus pixels no seed reached (a small blob without a core) keep their own id
    unreached, _ = ndimage.label(objects & (grown == 0))
    grown = np.where(unreached > 0, unreached + grown.max(), grown)
    sizes = np.bincount(grown.ravel())
    tiny = sizes < min_pixels
    tiny[0] = False
    grown[tiny[grown]] = 0
    return relabel_sequential(grown)


def _distance_peaks(distance: np.ndarray, objects: np.ndarray, min_pixels: int) -> np.ndarray:
    from scipy import ndimage
    from skimage.feature import peak_local_max

    radius = max(2, int(np.sqrt(min_pixels / np.pi)))
    regions, _ = ndimage.label(objects)
    peaks = peak_local_max(distance, min_distance=radius, labels=regions, exclude_border=False)
    seeds = np.zeros(distance.shape, dtype=np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return seeds


def relabel_sequential(instances: np.ndarray) -> np.ndarray:
    """Ids 1..n in the order of the old ids (gaps closed), as uint32."""
    from skimage.segmentation import relabel_sequential as relabel

    relabelled, _, _ = relabel(np.asarray(instances, dtype=np.int64))
    return relabelled.astype(np.uint32)
