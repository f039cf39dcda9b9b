"""Bad input found by trying medsight as a new user: each ends with one clear line and its
exit code, never an internal error (issue 17's first cases)."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import nibabel as nib
import numpy as np


def medsight(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medsight", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (its pixels are never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_a_declared_decompression_bomb_is_refused_with_the_limit(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(20000, 20000))
    result = medsight("info", str(bomb))
    assert result.returncode == 2, result.stderr
    assert "over the limit frame_pixels=268,435,456: a frame of 20,000 x 20,000" in result.stderr
    assert "internal error" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_out_of_range_limits_end_with_exit_2_and_one_line(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(20000, 20000))
    for setting in ("frame_pixels=0", "frames=-1", "nonsense=3", "frame_pixels=lots"):
        result = medsight("--limit", setting, "info", str(bomb))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, (setting, lines)
    raised = medsight("--limit", "frame_pixels=500000000", "info", str(bomb))
    assert "over the limit" not in raised.stderr  # raised: the header is now described


def test_a_corrupt_nifti_header_gives_one_line_without_nibabel_log_lines(tmp_path):
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), good)
    broken = bytearray(good.read_bytes())
    broken[108:112] = struct.pack("<f", 0.0)  # vox_offset 0: nibabel logs, then we refuse
    corrupt = tmp_path / "corrupt.nii"
    corrupt.write_bytes(bytes(broken))
    result = medsight("info", str(corrupt))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 0:  # nibabel repaired it: no log lines either way
        assert not lines
    else:
        assert result.returncode == 2 and len(lines) == 1, lines
        assert lines[0].startswith("error:") and "nibabel" not in lines[0]


def test_users_add_reads_a_piped_password(tmp_path):
    data = str(tmp_path / "data")
    piped = medsight(
        "users",
        "add",
        "piper",
        "--role",
        "clinician",
        "--data-dir",
        data,
        stdin="a-long-piped-password\n",
    )
    assert piped.returncode == 0, piped.stderr + piped.stdout
    empty = medsight("users", "add", "nobody", "--data-dir", data, stdin="")
    assert empty.returncode == 2 and "no password on standard input" in empty.stderr


def test_out_of_range_option_values_end_with_exit_2_and_one_line():
    for args in (
        ("analyze", "x", "--jobs", "99999999999999999999"),
        ("select-for-labelling", "cxr-pneumonia", ".", "--top", "1e23"),
        ("select-for-labelling", "cxr-pneumonia", ".", "--top", "0"),
    ):
        result = medsight(*args)
        assert result.returncode == 2, (args, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Invalid value" in errors[0], result.stderr


def test_library_warnings_about_a_non_conformant_file_do_not_reach_the_terminal(tmp_path):
    """pydicom warns (UserWarning) about values that break their VR; medsight reads the
    file and the terminal shows medsight's output only."""
    from pydicom import config

    from tests._builders import base_slice

    dataset = base_slice()
    with config.disable_value_validation():
        dataset.BodyPartExamined = "chest, lower part (not a CS value)"
        dataset.PatientAge = "sixty"
    path = tmp_path / "odd.dcm"
    dataset.save_as(path)
    result = medsight("info", str(path))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stdout + result.stderr


def test_zero_pixel_spacing_is_read_as_unknown_without_a_warning(tmp_path):
    import warnings

    from medsight.io import read_image
    from tests._builders import base_slice

    dataset = base_slice()
    dataset.PixelSpacing = [0, 0]
    path = tmp_path / "zero.dcm"
    dataset.save_as(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy divide warning would fail here
        image = read_image(path)
    assert not image.spacing_known
