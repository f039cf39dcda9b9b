"""3D segmentation of large volumes in bounded memory.

For a volume the network runs on at its own grid (no resampling; reorientation is a view),
everything is done band by band along the network grid's longest axis as the sliding window
finishes it: softmax and the foreground probabilities into uint16
(:mod:`medsight.inference.quantized`); the uint8 label map is their argmax, taken afterwards.
The preprocessing (display mapping and z-score) is applied to each window as it is cut out.
What the whole volume takes is then:

    input (int16: 2 bytes/voxel) + labels (1) + (outputs - 1) x 2 bytes of probabilities

plus one window's height of float32 outputs along the longest axis: for three outputs 7 bytes
per voxel, 3.5x the int16 input, against (outputs + 2) float32 volumes (20 bytes per voxel) on
the general path. Measured (``benchmarks/bench_archive.py --ct-memory-only``): a 512x512x800
CT through ``medsight analyze`` peaks 1.76 GB above the same command on a tiny volume, 4.4x
its int16 size (the general path: 7.6x, 3.7 GB peak). Resampled inputs (a task spacing other
than the image's) still take the general path.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from medsight.image import Image
from medsight.inference.prediction import Prediction
from medsight.inference.preprocess import MappedVolume, reorient, voxelwise_display, zscore_mapping
from medsight.inference.quantized import QuantizedProbabilities, quantize
from medsight.inference.sliding_window import sliding_window_rows

if TYPE_CHECKING:
    from medsight.inference.predictor import Predictor

__all__ = ["STREAM_VOXELS", "segment_streamed", "streamable"]

#: volumes from this many voxels on take the bounded path (256^3); smaller ones keep float32
#: probabilities, which a fractional DICOM SEG and the evaluation read exactly
STREAM_VOXELS = 1 << 24


def _mapping(work: Image, predictor: Predictor) -> Any:
    prep = predictor.task.spec.preprocessing
    display = voxelwise_display(work, predictor.task.spec.display)
    if display is None:
        return None
    if prep.normalize in ("none", "unit"):
        return display
    return zscore_mapping(work.array, display, nonzero=prep.normalize == "zscore_nonzero")


def streamable(work: Image, size: tuple[int, ...], predictor: Predictor, threshold: int) -> bool:
    """Whether this input can take the bounded path (and is large enough to need it)."""
    prep = predictor.task.spec.preprocessing
    return (
        work.spatial_dims == 3
        and not work.is_sequence
        and prep.patch_size is not None
        and size == work.shape
        and not prep.equalize
        and not prep.border_mask
        and int(np.prod(work.shape)) >= threshold
        and voxelwise_display(work, predictor.task.spec.display) is not None
        and predictor.task.spec.chain is None
    )


def _to_source(array: np.ndarray, work: Image, source: Image) -> np.ndarray:
    """A (c, *network grid) array in the source's layout: a view, never a copy."""
    if work is source:
        return array
    return reorient(work.replace(array=array, frames=()), source.orientation_code).array


def _release_freed_memory() -> None:
    """Give the heap's freed pages back to the system (glibc keeps the window batches' freed
    buffers, a few hundred MB over a CT, for reuse that the rest of the analysis never makes)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _labels_of(foreground: np.ndarray) -> np.ndarray:
    """The argmax label map of quantised probabilities (background: what the foreground
    outputs leave of 65535), slab by slab along the first spatial axis."""
    labels = np.empty(foreground.shape[1:], dtype=np.uint8)
    step = max(1, (1 << 20) // max(1, int(np.prod(foreground.shape[2:]))))
    for first in range(0, foreground.shape[1], step):
        slab = foreground[:, first : first + step].astype(np.int32)
        background = 65535 - slab.sum(axis=0, keepdims=True)
        labels[first : first + step] = np.argmax(np.concatenate([background, slab]), axis=0)
    return labels


def segment_streamed(
    predictor: Predictor, image: Image, work: Image, prediction: Prediction
) -> tuple[np.ndarray, QuantizedProbabilities]:
    """The label map and quantised probabilities of ``image`` (source layout)."""
    from medsight.inference.predictor import _softmax_inplace

    spec = predictor.task.spec
    prep = spec.preprocessing
    assert prep.patch_size is not None
    started = time.perf_counter()
    values = MappedVolume(work.array, _mapping(work, predictor))
    outputs = max(o.index for o in spec.outputs) + 1
    foreground = np.empty((outputs - 1, *work.shape), dtype=np.uint16)
    # bands along the longest axis: the band held is then the smallest share of the volume
    axis = int(np.argmax(work.shape))
    prediction.timings["preprocess"] = time.perf_counter() - started

    def finish(first: int, stop: int, block: np.ndarray) -> None:
        # the band axis first, so the slab-wise softmax and argmax run over it
        probabilities = _softmax_inplace(np.moveaxis(block, axis + 1, 1))
        rows = (slice(None), *(slice(first, stop) if a == axis else slice(None) for a in range(3)))
        quantize(np.moveaxis(probabilities[1:], 1, axis + 1), foreground[rows])

    started = time.perf_counter()
    with predictor._features_of(None) as feature_rows:
        sliding_window_rows(
            values,
            prep.patch_size,
            predictor._run,
            finish,
            axis=axis,
            overlap=prep.overlap,
            batch_size=prep.batch_size,
            streams=getattr(predictor.backend(), "streams", 1),
        )
    if feature_rows:  # windows in the order they finished: sort so the mean repeats
        prediction.features = np.sort(np.concatenate(feature_rows), axis=0).mean(axis=0)
    prediction.timings["inference"] = time.perf_counter() - started
    _release_freed_memory()  # the windows' freed buffers, before the label map is made
    # the label map only now, the band gone: it never adds to the band's memory
    labels = _labels_of(foreground)[np.newaxis]
    prediction.details["probabilities_stored"] = "uint16 (steps of 1/65535), bounded memory"
    return (
        _to_source(labels, work, image)[0],
        QuantizedProbabilities(_to_source(foreground, work, image)),
    )
