"""Inputs the fuzz targets found that escaped as non-medsight errors, each now refused with
a reason (kept as fixed reproducers, independent of the fuzzer's choices)."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medsight.errors import MedsightError
from medsight.io import read_image
from tests import _hostile


def test_an_element_with_an_unknown_vr_is_dropped_and_the_image_still_read(tmp_path, caplog):
    original = Path(get_testdata_file("CT_small.dcm"))
    # SOPClassUID given a VR that does not exist: pydicom raised NotImplementedError
    path = _hostile.unknown_vr(tmp_path / "vr.dcm", 0x0008, 0x0016, b"UI")
    image = read_image(path)  # one broken element does not make the file unreadable
    np.testing.assert_array_equal(image.array, read_image(original).array)
    assert "unreadable element(s) ignored: (0008,0016)" in caplog.text


def _nifti(tmp_path, name: str, edit) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.int16), np.eye(4)), path)
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    return path


def test_a_nifti_with_an_empty_axis_is_refused(tmp_path):
    def empty(data: bytearray) -> None:
        data[42:44] = struct.pack("<h", 0)  # dim[1] = 0

    with pytest.raises(MedsightError):
        read_image(_nifti(tmp_path, "empty.nii", empty))


def test_a_nifti_with_an_unknown_unit_code_is_refused(tmp_path):
    def units(data: bytearray) -> None:
        data[123] = 7  # xyzt_units: no such spatial unit

    with pytest.raises(MedsightError, match="NIfTI header"):
        read_image(_nifti(tmp_path, "units.nii", units))


def test_a_nifti_with_a_zero_voxel_size_is_refused(tmp_path):
    def flat(data: bytearray) -> None:
        data[252:256] = struct.pack("<hh", 0, 2)  # the sform decides
        data[280:296] = struct.pack("<4f", 0.0, 0.0, 0.0, 0.0)  # srow_x: a flat voxel

    with pytest.raises(MedsightError, match="not a valid geometry"):
        read_image(_nifti(tmp_path, "flat.nii", flat))


def test_an_impossible_bits_allocated_is_refused(tmp_path):
    import pydicom

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.BitsAllocated = 65528  # the fuzzer's: numpy was asked for a 'u8191' dtype
    path = tmp_path / "bits.dcm"
    dataset.save_as(path)
    with pytest.raises(MedsightError, match="BitsAllocated 65528"):
        read_image(path)


def test_a_transfer_syntax_uid_that_is_not_one_is_refused_naming_the_file(tmp_path: Path) -> None:
    # found by the fuzzer once codestreams were checked: UID.is_compressed raised ValueError
    from tests._builders import base_slice

    path = tmp_path / "odd-syntax.dcm"
    base_slice().save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    syntax = b"1.2.840.10008.1.2.1\x00"  # Explicit VR Little Endian, as written
    assert data.count(syntax) == 1
    path.write_bytes(data.replace(syntax, b"1.2.840.10008.9.9.9\x00"))  # not a syntax
    with pytest.raises(MedsightError) as caught:
        read_image(path)
    assert "odd-syntax.dcm" in str(caught.value)


def test_a_png_declaring_over_twice_the_pixel_limit_is_refused_by_the_limit(tmp_path: Path) -> None:
    """Found by the long run: Pillow's own bomb error (over twice its guard, which medsight
    sets to the limit) escaped from the header check."""
    import zlib

    from medsight.io.limits import ResourceLimitError

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 65535, 65535, 8, 0, 0, 0, 0)
    path = tmp_path / "declared.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ResourceLimitError, match="frame_pixels"):
        read_image(path)


def test_a_jpeg2000_frame_with_a_broken_pixel_module_element_reads_as_pydicom_would(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The threaded JPEG 2000 path (io/dicom/j2k.py) reads its own small header: a broken
    element there is dropped as in the whole read, never raised as a foreign error."""
    source = "MR_small_jp2klossless.dcm"
    original = Path(get_testdata_file(source))
    path = _hostile.unknown_vr(tmp_path / "j2k.dcm", 0x0028, 0x0101, b"US", source)  # BitsStored
    image = read_image(path)
    np.testing.assert_array_equal(image.array, read_image(original).array)
    assert "unreadable element(s) ignored: (0028,0101)" in caplog.text
