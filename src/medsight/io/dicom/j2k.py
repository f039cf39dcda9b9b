"""JPEG 2000 frames decoded outside the GIL, so a series decodes on all cores in threads.

pydicom's JPEG 2000 decoder (pylibjpeg-openjpeg) holds the GIL, so a series was decoded in
forked processes, and only in a process with no other thread (forking a threaded process can
copy a held lock): a service worker or the benchmark's memory sampler decoded serially.
imagecodecs wraps the same OpenJPEG library and releases the GIL while decoding, so threads
share the work whatever else the process runs (300 CT slices on 2 cores: 4.0 s in 2 threads
against 8.5 s in one).

The result is what pydicom gives: the codestream's samples viewed as the header's Pixel
Representation, with pydicom's correction when the codestream's signedness disagrees with it
(``pydicom.pixels.decoders.base._process_color_space``'s JPEG 2000 branch). A frame that is
not a plain grayscale single frame, or whose decoded shape or sample size disagrees with the
header, returns None and goes through pydicom. tests/io/test_dicom_corpus.py compares every
JPEG 2000 file of the test corpora with pydicom's own decode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medsight.io.dicom._header import FrameInfo

#: JPEG 2000 Image Compression (Lossless Only) and JPEG 2000 Image Compression
J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})

#: what the decode reads from the header (the pixels and how to interpret them)
_DECODE_KEYWORDS = [
    "PixelData",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
]


def available() -> bool:
    try:
        import imagecodecs
    except ImportError:  # a minimal install: pydicom's decoder does it, on one core
        return False
    return bool(imagecodecs.JPEG2K.available)


def decodable(frame: FrameInfo) -> bool:
    """True for a single-frame grayscale JPEG 2000 image without a Modality LUT Sequence."""
    return (
        frame.transfer_syntax_uid in J2K_SYNTAXES
        and frame.frame_index is None
        and frame.samples_per_pixel == 1
        and frame.photometric_interpretation.startswith("MONOCHROME")
        and not frame.has_modality_lut_sequence
    )


def read_decode_header(path: Path) -> Dataset:
    """The header elements the decode needs and the pixel data, nothing else parsed."""
    import pydicom

    return pydicom.dcmread(path, force=True, specific_tags=_DECODE_KEYWORDS)


def decode_frame(dataset: Dataset) -> np.ndarray | None:
    """The frame's stored values as pydicom decodes them, or None (see module doc)."""
    import imagecodecs
    from pydicom.encaps import generate_frames
    from pydicom.pixels.utils import get_j2k_parameters

    rows, columns = int(dataset.Rows), int(dataset.Columns)
    bits = int(dataset.BitsAllocated)
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        return None
    codestream = next(generate_frames(dataset.PixelData, number_of_frames=1))
    decoded = imagecodecs.jpeg2k_decode(codestream)  # releases the GIL
    expected = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    if decoded.shape != (rows, columns) or decoded.dtype.itemsize != expected.itemsize:
        return None
    pixels = decoded.view(expected)
    info = get_j2k_parameters(codestream)
    precision = int(info.get("precision", dataset.get("BitsStored") or bits))
    shift = 8 * pixels.itemsize - precision
    if shift and bool(info.get("is_signed", signed)) != signed:
        np.left_shift(pixels, shift, out=pixels)
        np.right_shift(pixels, shift, out=pixels)
    return pixels
