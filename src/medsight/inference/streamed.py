"""3D segmentation of large volumes in bounded memory.

For a volume the network runs on at its own grid (no resampling; reorientation is a view),
everything is done band by band along the network grid's first axis as the sliding window
finishes it: softmax, the argmax into a uint8 label map, and the foreground probabilities
into uint16 (:mod:`medsight.inference.quantized`). The preprocessing (display mapping and
z-score) is applied to each window as it is cut out. What the whole volume takes is then:

    input (int16: 2 bytes/voxel) + labels (1) + (outputs - 1) x 2 bytes of probabilities

which for three outputs is 7 bytes per voxel, 3.5x the int16 input (a 512x512x800 CT: 1.47
GB), against (outputs + 2) float32 volumes (20 bytes per voxel) for the general path. Resampled
inputs (a task spacing other than the image's) still take the general path.
"""

from __future__ import annotations

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


def segment_streamed(
    predictor: Predictor, image: Image, work: Image, prediction: Prediction
) -> tuple[np.ndarray, QuantizedProbabilities]:
    """The label map and quantised probabilities of ``image`` (source layout)."""
    from medsight.inference.predictor import _argmax_uint8, _softmax_inplace

    spec = predictor.task.spec
    prep = spec.preprocessing
    assert prep.patch_size is not None
    started = time.perf_counter()
    values = MappedVolume(work.array, _mapping(work, predictor))
    outputs = max(o.index for o in spec.outputs) + 1
    labels = np.empty((1, *work.shape), dtype=np.uint8)
    foreground = np.empty((outputs - 1, *work.shape), dtype=np.uint16)
    prediction.timings["preprocess"] = time.perf_counter() - started

    def finish(first: int, stop: int, block: np.ndarray) -> None:
        probabilities = _softmax_inplace(block)
        labels[0, first:stop] = _argmax_uint8(probabilities)
        quantize(probabilities[1:], foreground[:, first:stop])

    started = time.perf_counter()
    with predictor._features_of(None) as feature_rows:
        sliding_window_rows(
            values,
            prep.patch_size,
            predictor._run,
            finish,
            overlap=prep.overlap,
            batch_size=prep.batch_size,
            streams=getattr(predictor.backend(), "streams", 1),
        )
    if feature_rows:  # windows in the order they finished: sort so the mean repeats
        prediction.features = np.sort(np.concatenate(feature_rows), axis=0).mean(axis=0)
    prediction.timings["inference"] = time.perf_counter() - started
    prediction.details["probabilities_stored"] = "uint16 (steps of 1/65535), bounded memory"
    return (
        _to_source(labels, work, image)[0],
        QuantizedProbabilities(_to_source(foreground, work, image)),
    )
