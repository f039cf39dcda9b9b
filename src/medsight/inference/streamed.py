"""3D segmentation of large volumes in bounded memory.

For a volume the network runs on at its own grid (no resampling; reorientation is a view),
everything is done band by band along the network grid's longest axis as the sliding window
finishes it: softmax, the uint8 label map (the float argmax, as on the general path) and the
foreground probabilities into uint8 (:mod:`medsight.inference.quantized`). The preprocessing
(display mapping and z-score) is applied to each window as it is cut out. What the whole
volume takes is then:

    input (int16: 2 bytes/voxel) + labels (1) + (outputs - 1) x 1 byte of probabilities

plus one window's height of float32 outputs along the longest axis: for three outputs 5 bytes
per voxel, 2.5x the int16 input, against (outputs + 2) float32 volumes (20 bytes per voxel) on
the general path. Measured figures: docs/archive.md (``benchmarks/bench_archive.py
--ct-memory-only``). Resampled inputs (a task spacing other than the image's) still take the
general path.
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
from medsight.inference.quantized import DTYPE, QuantizedProbabilities, quantize
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
        and not prep.local_contrast
        and int(np.prod(work.shape)) >= threshold
        and voxelwise_display(work, predictor.task.spec.display) is not None
        and predictor.task.spec.chain is None
        and max(o.index for o in predictor.task.spec.outputs) < 256  # uint8 labels
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


def _argmax_into(probabilities: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = probabilities.argmax(0)`` (out uint8) a few slices at a time: numpy's
    argmax writes intp, 8 bytes per voxel, so a whole band at once would cost more than the
    label map it fills."""
    step = max(1, (1 << 20) // max(1, int(np.prod(out.shape[1:]))))
    for first in range(0, out.shape[0], step):
        out[first : first + step] = np.argmax(probabilities[:, first : first + step], axis=0)


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
    foreground = np.empty((outputs - 1, *work.shape), dtype=DTYPE)
    labels = np.empty(work.shape, dtype=np.uint8)
    # bands along the longest axis: the band held is then the smallest share of the volume
    axis = int(np.argmax(work.shape))
    prediction.timings["preprocess"] = time.perf_counter() - started

    def finish(first: int, stop: int, block: np.ndarray) -> None:
        # the band axis first, so the slab-wise softmax and argmax run over it
        probabilities = _softmax_inplace(np.moveaxis(block, axis + 1, 1))
        spatial = tuple(slice(first, stop) if a == axis else slice(None) for a in range(3))
        # the label first (the float argmax): quantize overwrites the probabilities
        _argmax_into(probabilities, np.moveaxis(labels[spatial], axis, 0))
        quantize(np.moveaxis(probabilities[1:], 1, axis + 1), foreground[(slice(None), *spatial)])

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
    _release_freed_memory()  # the windows' freed buffers
    prediction.details["probabilities_stored"] = (
        "uint8 (steps of 1/255, a fractional DICOM SEG's precision), bounded memory"
    )
    return (
        _to_source(labels[np.newaxis], work, image)[0],
        QuantizedProbabilities(_to_source(foreground, work, image)),
    )
