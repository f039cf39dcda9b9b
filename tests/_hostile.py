"""Builders of hostile files: small on disk, enormous or pathological once read.

Each writes a real, otherwise valid file (from pydicom's CT_small.dcm or Pillow) whose header
or codestream declares something a reader must refuse before trying it.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from tests._builders import base_slice


def _image_dataset(rows: int, columns: int, syntax: str, *, bits: int = 8) -> Dataset:
    dataset = base_slice()
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.Rows, dataset.Columns = rows, columns
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def _encapsulated(dataset: Dataset, frames: list[bytes], path: Path) -> Path:
    dataset.PixelData = encapsulate(frames)
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    dataset.save_as(path, enforce_file_format=True)
    return path


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.zeros((16, 16), np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _patch_sof(codestream: bytes, rows: int, columns: int, markers: tuple[bytes, ...]) -> bytes:
    """The codestream with the height and width of its first SOF segment replaced."""
    data = bytearray(codestream)
    offset = 2
    while data[offset : offset + 2] not in markers:
        offset += struct.unpack(">H", data[offset + 2 : offset + 4])[0] + 2
    data[offset + 5 : offset + 9] = struct.pack(">HH", rows, columns)
    return bytes(data)


def jpeg_bomb(path: Path) -> Path:
    """A 16x16 DICOM whose baseline JPEG frame declares 65,000 x 65,000 pixels."""
    sof = tuple(bytes([0xFF, m]) for m in (0xC0, 0xC1, 0xC2))
    frame = _patch_sof(_small_jpeg(), 65_000, 65_000, sof)
    return _encapsulated(_image_dataset(16, 16, JPEGBaseline8Bit), [frame], path)


def jpegls_bomb(path: Path) -> Path:
    """A 16x16 DICOM whose JPEG-LS frame declares 65,000 x 65,000 pixels."""
    from jpeg_ls import encode_array  # pyjpegls, a medsight dependency

    stream = bytes(encode_array(np.zeros((16, 16), np.uint8)))
    frame = _patch_sof(stream, 65_000, 65_000, (b"\xff\xf7",))
    return _encapsulated(_image_dataset(16, 16, JPEGLSLossless), [frame], path)


def jpeg2000_bomb(path: Path) -> Path:
    """A 64x64 DICOM whose JPEG 2000 frame's SIZ declares 2^30 x 2^30 pixels."""
    from openjpeg.utils import encode_array  # pylibjpeg-openjpeg, a medsight dependency

    data = bytearray(encode_array(np.zeros((64, 64), np.uint8), codec_format=0))
    assert data[:4] == b"\xff\x4f\xff\x51", "a raw J2K codestream starts SOC, SIZ"
    data[8:16] = struct.pack(">II", 2**30, 2**30)  # Xsiz, Ysiz
    return _encapsulated(_image_dataset(64, 64, JPEG2000Lossless), [bytes(data)], path)


def rle_bomb(path: Path) -> Path:
    """RLE frames that declare 40,000 x 40,000 pixels with 64 bytes of runs (a 1:25,000,000
    expansion if decoded)."""
    dataset = _image_dataset(40_000, 40_000, RLELossless)
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    runs = bytes([0x81, 0]) * 24  # each run repeats 0 for 128 bytes
    return _encapsulated(dataset, [header + runs], path)


def deflate_bomb(path: Path, inflated_bytes: int = 400 * 2**20) -> Path:
    """A Deflated Explicit VR file whose dataset inflates to ``inflated_bytes`` (a private
    OB element of zeros), from a file of about 1/1000 of that."""
    dataset = _image_dataset(16, 16, ExplicitVRLittleEndian)
    dataset.PixelData = bytes(16 * 16)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta_only = io.BytesIO()
    dataset.save_as(meta_only, enforce_file_format=True)
    # build the deflated body by streaming, so the test itself never holds the inflated bytes
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    element = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, inflated_bytes)
    body = [compressor.compress(b"\x09\x00\x10\x00LO\x08\x00MEDSIGHT")]
    body.append(compressor.compress(element))
    chunk = bytes(2**20)
    for _ in range(inflated_bytes // len(chunk)):
        body.append(compressor.compress(chunk))
    body.append(compressor.flush())
    preamble_and_meta = _meta_bytes(dataset.file_meta)
    path.write_bytes(preamble_and_meta + b"".join(body))
    return path


def _meta_bytes(meta: FileMetaDataset) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def many_frames(path: Path, frames: int = 100_000) -> Path:
    """A header that declares ``frames`` frames of 512 x 512 (pixel data absent past 1)."""
    dataset = _image_dataset(512, 512, ExplicitVRLittleEndian, bits=16)
    dataset.NumberOfFrames = frames
    dataset.PixelData = bytes(512 * 512 * 2)
    dataset.save_as(path, enforce_file_format=True)
    return path


def huge_declared(path: Path) -> Path:
    """A header that declares one frame of 65,536 x 32,768 = 2^31 pixels."""
    dataset = _image_dataset(65_535, 32_768, ExplicitVRLittleEndian, bits=16)
    dataset.Rows = 65_535
    dataset.Columns = 32_768
    dataset.PixelData = bytes(1024)
    dataset.save_as(path, enforce_file_format=True)
    return path


def deep_sequence(path: Path, depth: int = 10_000) -> Path:
    """A valid 16x16 image whose header nests ``depth`` sequences (undefined lengths)."""
    dataset = _image_dataset(16, 16, ExplicitVRLittleEndian)
    dataset.PixelData = bytes(16 * 16)
    dataset.save_as(path, enforce_file_format=True)
    # written by hand: pydicom's writer recurses once per level and would itself overflow
    open_level = b"\x09\x00\x10\x10SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close_level = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    nested = open_level * depth + close_level * depth
    data = path.read_bytes()
    marker = b"\x10\x00\x10\x00"  # (0010,0010) Patient's Name: a private (0009,1010) goes before
    at = data.index(marker, 132)
    path.write_bytes(data[:at] + nested + data[at:])
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path, side: int) -> Path:
    """A real ``side`` x ``side`` 8-bit grayscale PNG of a horizontal gradient, written row by
    row (the test never holds the decoded image; a few MB on disk)."""
    row = (
        b"\x00"
        + (np.arange(side, dtype=np.uint64) * 255 // max(1, side - 1)).astype(np.uint8).tobytes()
    )
    compressor = zlib.compressobj(1)
    parts = [compressor.compress(row * 256) for _ in range(side // 256)]
    parts.append(compressor.compress(row * (side % 256)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
        handle.write(_png_chunk(b"IDAT", b"".join(parts)))
        handle.write(_png_chunk(b"IEND", b""))
    return path


__all__ = [
    "deep_sequence",
    "deflate_bomb",
    "huge_declared",
    "huge_png",
    "jpeg2000_bomb",
    "jpeg_bomb",
    "jpegls_bomb",
    "many_frames",
    "rle_bomb",
]


def unknown_vr(
    target: Path, group: int, element: int, vr: bytes, source: str = "CT_small.dcm"
) -> Path:
    """pydicom's ``source`` test file with element (group, element), stored with explicit VR
    ``vr``, given a VR that does not exist ("TI"): pydicom cannot convert its value."""
    from pydicom.data import get_testdata_file

    data = bytearray(Path(get_testdata_file(source)).read_bytes())
    where = data.index(struct.pack("<HH", group, element) + vr, 132)
    data[where + 4 : where + 6] = b"TI"
    target.write_bytes(bytes(data))
    return target
