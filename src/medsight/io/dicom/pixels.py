"""Decode DICOM pixel data, apply the Modality LUT, and do it on all cores.

The value stored in an :class:`~medsight.image.Image` is pydicom's ``pixel_array`` after one
documented step, the *modality* transform:

- PALETTE COLOR: the palette is applied (pydicom ``apply_color_lut``), giving RGB;
- a Modality LUT Sequence: applied (pydicom ``apply_modality_lut``);
- otherwise ``value * RescaleSlope + RescaleIntercept`` per frame (HU for CT);
- colour images (SamplesPerPixel 3) come out as decoded: the Modality LUT applies to
  grayscale only (PS3.3 C.11.1), even when a secondary capture carries a rescale.

YBR photometric interpretations come out as RGB (pydicom converts them while decoding).
The VOI LUT (window) and MONOCHROME1 inversion are *not* applied here: they are display
steps, offered by :mod:`medsight.imaging.window`.

Storage type: integers stay integers when the slope is 1 and the intercept whole (the smallest
signed or unsigned type that holds the full stored range); any other rescale gives float32.

Decoding: a large JPEG 2000 series (the common compressed CT and MR syntax) is decoded by
threads through imagecodecs, which releases the GIL (:mod:`j2k`). pydicom's decoders (openjpeg,
libjpeg, RLE) hold the GIL, so threads do not help them: another large compressed series is
decoded by forked worker processes that write straight into one shared, anonymous memory map,
so the volume is held once (no per-worker copies are sent back), and only in a process with
no other thread (see ``decode_frames``).
"""

from __future__ import annotations

import itertools
import logging
import mmap
import multiprocessing
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medsight.errors import (
    DicomReadError,
    NoPixelDataError,
    UnreadableFileError,
    UnsupportedTransferSyntaxError,
)
from medsight.io.dicom import j2k
from medsight.io.dicom._header import (
    FrameInfo,
    check_bits_allocated,
    check_declared_size,
    infer_transfer_syntax,
    is_compressed_syntax,
    parse_elements,
)
from medsight.io.dicom.codestream import declared_size
from medsight.io.limits import DecodeClock, ResourceLimitError, current_limits

logger = logging.getLogger(__name__)

#: below this many bytes of output a series is decoded in-process (forking costs more)
PARALLEL_MIN_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class _FrameSlot:
    frame_index: int | None
    slot: int
    slope: float
    intercept: float


def _stored_range(dataset: Dataset, pixel_dtype: np.dtype) -> tuple[float, float]:
    bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 16)
    if pixel_dtype.kind == "f":
        return float("-inf"), float("inf")
    if int(dataset.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def output_dtype(frames: Sequence[FrameInfo], dataset: Dataset) -> np.dtype:
    """The storage dtype of a stack after the modality transform (see module doc)."""
    photometric = frames[0].photometric_interpretation
    bits_allocated = int(dataset.get("BitsAllocated") or 16)
    check_bits_allocated(bits_allocated, frames[0].path)
    if "FloatPixelData" in dataset:
        return np.dtype(np.float32)
    if "DoubleFloatPixelData" in dataset:
        return np.dtype(np.float64)
    if photometric == "PALETTE COLOR":
        lut_bits = 16
        descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
        if descriptor is not None and int(descriptor[2]) <= 8:
            lut_bits = 8
        return np.dtype(np.uint8 if lut_bits == 8 else np.uint16)
    if frames[0].has_modality_lut_sequence:
        return np.dtype(np.float32)  # whatever the LUT maps to, float32 holds a 16-bit LUT exactly
    if bits_allocated == 1:
        return np.dtype(np.uint8)
    representation = int(dataset.get("PixelRepresentation", 0) or 0)
    stored = np.dtype(f"{'i' if representation else 'u'}{max(1, bits_allocated // 8)}")
    if frames[0].samples_per_pixel > 1:
        return stored
    slopes = {f.rescale_slope for f in frames}
    intercepts = {f.rescale_intercept for f in frames}
    if slopes != {1.0} or any(i != int(i) for i in intercepts):
        return np.dtype(np.float32)
    low, high = _stored_range(dataset, stored)
    low += min(intercepts)
    high += max(intercepts)
    for candidate in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float64)


def read_dataset(path: Path) -> Dataset:
    """Read a whole DICOM file (with or without preamble) or raise a medsight error.

    A file without a Transfer Syntax UID in its file meta (older exports) gets the one it was
    actually encoded with, as pydicom detected while parsing, so its pixels can be decoded.
    """
    try:
        dataset = pydicom.dcmread(path, force=True)
    except FileNotFoundError as exc:
        raise UnreadableFileError("file not found", path=path) from exc
    except Exception as exc:
        raise UnreadableFileError(f"cannot parse DICOM file ({exc})", path=path) from exc
    infer_transfer_syntax(dataset)
    try:  # elements that cannot be parsed are dropped, as when the header was read
        return parse_elements(dataset, path)
    except RecursionError:
        raise DicomReadError("sequences nested too deep to parse", path=path) from None


def decode(dataset: Dataset, path: Path) -> np.ndarray:
    """pydicom's ``pixel_array`` with errors turned into medsight errors naming the file."""
    if not any(t in dataset for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = dataset.get("SOPClassUID")
        raise NoPixelDataError(
            f"no pixel data ({getattr(sop, 'name', sop) or 'unknown SOP class'}): "
            "not an image; nothing to read",
            path=path,
        )
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    check_declared_size(path, dataset)
    if is_compressed_syntax(syntax) and "PixelData" in dataset:
        _check_codestreams(dataset, path)
    try:
        return np.asarray(dataset.pixel_array)
    except NotImplementedError as exc:
        name = getattr(syntax, "name", syntax)
        raise UnsupportedTransferSyntaxError(
            f"no installed decoder handles transfer syntax {name} ({syntax}); "
            f"reinstall medsight so its DICOM codecs are present ({exc})",
            path=path,
        ) from exc
    except (
        ValueError,
        EOFError,
        OSError,
        RuntimeError,
        AttributeError,
        KeyError,
        TypeError,
        IndexError,
    ) as exc:
        message = " ".join(str(exc).split())[:400] or type(exc).__name__
        if "length" in message.lower() and (
            "pixel" in message.lower() or "frame" in message.lower()
        ):
            message = f"pixel data is truncated or has the wrong length ({message})"
        elif "exceptions were raised by all available plugins" in message:
            message = f"compressed pixel data is corrupt or non-conformant ({message})"
        elif "no pixel data decoders" in message.lower() or "unable to decode" in message.lower():
            raise UnsupportedTransferSyntaxError(
                f"cannot decode transfer syntax {getattr(syntax, 'name', syntax)}: {message}",
                path=path,
            ) from exc
        raise DicomReadError(f"cannot decode pixel data: {message}", path=path) from exc


def _check_codestreams(dataset: Dataset, path: Path) -> None:
    """Each compressed frame's own declared size against the header and the limits, before
    a decoder allocates what the codestream asks for (see :mod:`codestream`)."""
    from pydicom.encaps import generate_frames

    limits = current_limits()
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    count = int(dataset.get("NumberOfFrames") or 1)
    frames = generate_frames(dataset.PixelData, number_of_frames=count)
    for index in itertools.count():
        try:
            frame = next(frames)
        except StopIteration:
            break
        except Exception as exc:  # fragments that cannot be split (pydicom raises several)
            raise DicomReadError(
                f"encapsulated pixel data is malformed ({exc})", path=path
            ) from exc
        size = declared_size(frame)
        if size is None or size == (rows, columns):
            continue
        limits.check(
            "frame_pixels",
            size[0] * size[1],
            f"frame {index + 1}'s codestream declaring {size[0]:,} x {size[1]:,} pixels",
            path,
        )
        raise DicomReadError(
            f"frame {index + 1}'s codestream declares {size[0]} x {size[1]} pixels where "
            f"the header says {rows} x {columns}: the pixel data is corrupt",
            path=path,
        )


def modality_transform(
    pixels: np.ndarray, dataset: Dataset, slope: float, intercept: float, out_dtype: np.dtype
) -> np.ndarray:
    """Apply the modality step of one frame (see module doc) and cast to the storage type."""
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return np.asarray(apply_color_lut(pixels, dataset)).astype(out_dtype, copy=False)
    if "ModalityLUTSequence" in dataset:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(pixels, dataset)).astype(out_dtype, copy=False)
    if int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
        return pixels.astype(out_dtype, copy=False)
    if slope == 1.0 and intercept == 0.0:
        return pixels.astype(out_dtype, copy=False)
    if out_dtype.kind == "f":
        return (pixels.astype(np.float64) * slope + intercept).astype(out_dtype)
    return (pixels.astype(np.int64) + int(intercept)).astype(out_dtype)


# --- decoding a whole stack ------------------------------------------------------------------

#: the output buffer of the current parallel decode; forked workers inherit it (see module doc)
_SHARED_TARGET: np.ndarray | None = None


def _read_native(path: Path, frame: FrameInfo) -> np.ndarray:
    """Uncompressed grayscale pixels straight from the file, as pydicom's native decoder
    gives them (unused high bits masked, signed values sign-extended from BitsStored).

    pydicom would parse the whole header again for every file; the scan already found where
    the pixels lie, so one read of the bytes is enough (half the time on an uncompressed CT).
    """
    native = frame.native
    assert native is not None
    count = frame.rows * frame.columns
    try:
        with path.open("rb") as handle:
            handle.seek(native.offset)
            pixels = np.fromfile(handle, dtype=native.dtype, count=count)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read pixel data ({exc})", path=path) from exc
    if pixels.size != count:
        raise DicomReadError(
            f"pixel data is truncated: {pixels.size * pixels.itemsize} of "
            f"{count * pixels.itemsize} bytes present",
            path=path,
        )
    pixels = pixels.reshape(frame.rows, frame.columns).astype(native.dtype[1:], copy=False)
    unused = pixels.itemsize * 8 - native.bits_stored
    if unused:
        if pixels.dtype.kind == "u":
            pixels &= (1 << native.bits_stored) - 1
        else:
            pixels = (pixels << unused) >> unused
    return pixels


def _store(target: np.ndarray, slot: int, values: np.ndarray, path: Path) -> None:
    """Write one frame (rows, columns[, samples]) into ``target[slot]``."""
    if values.ndim == 2:
        values = values[..., np.newaxis]
    if values.shape != target.shape[1:]:
        raise DicomReadError(
            f"frame has shape {values.shape[:2]} x {values.shape[2]} samples where the "
            f"stack expects {target.shape[1:3]} x {target.shape[3]}",
            path=path,
        )
    target[slot] = values


def _rescale_into(
    target: np.ndarray, slot: int, pixels: np.ndarray, slope: float, intercept: float
) -> None:
    """Grayscale modality rescale written straight into the target (no full-size temporary)."""
    view = target[slot, :, :, 0]
    if slope == 1.0 and intercept == int(intercept) and target.dtype.kind in "iu":
        # in the target's own width: two's-complement addition wraps consistently, so the sum
        # is exact whenever the true value fits the target, which output_dtype guarantees
        # (50x faster than going through int64)
        offset = np.array(int(intercept), dtype=np.int64).astype(target.dtype)
        np.add(pixels, offset, out=view, casting="unsafe", dtype=target.dtype)
    else:  # computed in float64 and rounded once, as pydicom's apply_modality_lut does
        view[...] = pixels.astype(np.float64) * slope + intercept


def _decode_file_into(
    target: np.ndarray,
    path: Path,
    slots: list[_FrameSlot],
    frames: list[FrameInfo],
    out_dtype: np.dtype,
) -> None:
    if len(slots) == 1 and frames[0].native is not None and not frames[0].has_modality_lut_sequence:
        pixels = _read_native(path, frames[0])
        _rescale_into(target, slots[0].slot, pixels, slots[0].slope, slots[0].intercept)
        return
    if len(slots) == 1 and j2k.decodable(frames[0]) and j2k.available():
        fast = _decode_j2k(path)
        if fast is not None:
            _rescale_into(target, slots[0].slot, fast, slots[0].slope, slots[0].intercept)
            return
    dataset = read_dataset(path)
    pixels = decode(dataset, path)
    multiframe = "NumberOfFrames" in dataset and int(dataset.NumberOfFrames or 1) > 1
    grayscale = (
        int(dataset.get("SamplesPerPixel", 1) or 1) == 1
        and str(dataset.get("PhotometricInterpretation", "")) != "PALETTE COLOR"
        and "ModalityLUTSequence" not in dataset
    )
    for slot in slots:
        frame = pixels[slot.frame_index] if multiframe and slot.frame_index is not None else pixels
        if grayscale and frame.ndim == 2 and frame.shape == target.shape[1:3]:
            _rescale_into(target, slot.slot, frame, slot.slope, slot.intercept)
        else:
            values = modality_transform(frame, dataset, slot.slope, slot.intercept, out_dtype)
            _store(target, slot.slot, values, path)


def _decode_j2k(path: Path) -> np.ndarray | None:
    """A JPEG 2000 frame through j2k.py after the size and bomb checks; None where that
    path declines or fails, so pydicom's path decodes it or gives its error for the file."""
    try:
        light = j2k.read_decode_header(path)
    except Exception:
        return None
    light = parse_elements(light, path)  # as the whole read: broken elements are dropped
    check_declared_size(path, light)
    _check_codestreams(light, path)  # before the decoder allocates what the stream declares
    try:
        return j2k.decode_frame(light)
    except Exception:
        return None


_Task = tuple[Path, list[_FrameSlot], list[FrameInfo], np.dtype]


def _decode_in_threads(
    tasks: list[_Task],
    shape: tuple[int, ...],
    out_dtype: np.dtype,
    workers: int,
    clock: DecodeClock,
) -> np.ndarray:
    """Files decoded by a thread pool straight into one array (decoders that release the
    GIL); the first failure is raised with its file's name once the running ones finish."""
    from concurrent.futures import ThreadPoolExecutor

    target = np.empty(shape, dtype=out_dtype)
    with ThreadPoolExecutor(workers, thread_name_prefix="medsight-decode") as pool:
        futures = [pool.submit(_decode_file_into, target, *task) for task in tasks]
        try:
            for future in futures:
                future.result()
                clock.check()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return target


def _worker(task: _Task) -> tuple[str, str, str | None] | None:
    """Decode one file in a forked worker; a failure comes back as (path, message, limit)."""
    path, slots, frames, out_dtype = task
    assert _SHARED_TARGET is not None
    try:
        _decode_file_into(_SHARED_TARGET, path, slots, frames, out_dtype)
    except ResourceLimitError as exc:
        return (str(path), exc.message, exc.limit)
    except DicomReadError as exc:
        return (str(path), exc.message, None)
    except Exception as exc:  # reported to the parent, which raises it with the file name
        return (str(path), f"cannot decode pixel data: {exc}", None)
    return None


def decode_frames(
    frames: Sequence[FrameInfo],
    *,
    out_dtype: np.dtype,
    channels: int,
    workers: int | None = None,
) -> np.ndarray:
    """Decode frames into one array of shape ``(len(frames), rows, columns, channels)``.

    Frame ``n`` of the result is ``frames[n]``. Uses worker processes for large outputs.
    """
    global _SHARED_TARGET
    rows, columns = frames[0].rows, frames[0].columns
    shape = (len(frames), rows, columns, channels)
    nbytes = int(np.prod(shape)) * out_dtype.itemsize
    limits = current_limits()
    where = frames[0].path
    limits.check("frames", len(frames), f"a stack of {len(frames):,} frames", where)
    limits.check("image_bytes", nbytes, f"an image of {nbytes:,} decoded bytes", where)
    clock = DecodeClock(limits, where)
    by_file: dict[Path, list[_FrameSlot]] = defaultdict(list)
    frames_by_file: dict[Path, list[FrameInfo]] = defaultdict(list)
    for slot, frame in enumerate(frames):
        by_file[frame.path].append(
            _FrameSlot(frame.frame_index, slot, frame.rescale_slope, frame.rescale_intercept)
        )
        frames_by_file[frame.path].append(frame)
    tasks: list[_Task] = [
        (path, slots, frames_by_file[path], out_dtype) for path, slots in by_file.items()
    ]

    cpu = os.cpu_count() or 1
    workers = min(cpu, len(tasks)) if workers is None else workers
    all_native = all(f.native is not None for f in frames)
    # JPEG 2000 decodes outside the GIL (j2k.py): threads, whatever else the process runs
    use_threads = (
        workers > 1
        and nbytes >= PARALLEL_MIN_BYTES
        and all(len(t[1]) == 1 and j2k.decodable(t[2][0]) for t in tasks)
        and j2k.available()
    )
    use_processes = (
        not use_threads
        and workers > 1
        and not all_native
        and nbytes >= PARALLEL_MIN_BYTES
        and "fork" in multiprocessing.get_all_start_methods()
        # forking a process that runs other threads (zarr's I/O loop after a slide was read,
        # a server's workers) can copy a lock another thread holds: the child then waits
        # forever (a CI run hung here for 300 s). Such a process decodes in this thread.
        and threading.active_count() == 1
    )
    if use_threads:
        return _decode_in_threads(tasks, shape, out_dtype, workers, clock)
    if not use_processes:
        target = np.empty(shape, dtype=out_dtype)
        for path, slots, file_frames, _ in tasks:
            _decode_file_into(target, path, slots, file_frames, out_dtype)
            clock.check()
        return target

    buffer = mmap.mmap(-1, max(nbytes, 1))
    target = np.frombuffer(buffer, dtype=out_dtype, count=int(np.prod(shape))).reshape(shape)
    _SHARED_TARGET = target
    try:
        context = multiprocessing.get_context("fork")
        chunk = max(1, len(tasks) // (workers * 8))
        with context.Pool(workers) as pool:
            for failure in pool.imap_unordered(_worker, tasks, chunksize=chunk):
                clock.check()
                if failure is not None:
                    path_text, message, limit = failure
                    if limit is not None:
                        raise ResourceLimitError(message, path=path_text, limit=limit)
                    raise DicomReadError(message, path=path_text)
    finally:
        _SHARED_TARGET = None
    return target
