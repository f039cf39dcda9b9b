"""Resource limits: hostile files are refused quickly, by name of the limit, with memory
bounded; the defaults admit real inputs; limits are configurable and checked themselves."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsight.analysis.inputs import find_studies
from medsight.errors import InvalidInputError
from medsight.io import read_image
from medsight.io.limits import ReadLimits, ResourceLimitError, current_limits, parse_limit_setting
from tests import _hostile

#: what a refusal may allocate (Python and numpy, as tracemalloc sees them)
REFUSAL_BYTES = 64 * 2**20


def _refused(path: Path) -> ResourceLimitError:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ResourceLimitError) as caught:
            read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 20
    assert peak < REFUSAL_BYTES, f"{peak:,} bytes allocated to refuse {path.name}"
    assert path.name in str(caught.value)
    return caught.value


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("build", "limit", "words"),
    [
        (_hostile.jpeg_bomb, "frame_pixels", "codestream declaring 65,000 x 65,000"),
        (_hostile.jpegls_bomb, "frame_pixels", "codestream declaring 65,000 x 65,000"),
        (_hostile.jpeg2000_bomb, "frame_pixels", "codestream declaring 1,073,741,824"),
        (_hostile.rle_bomb, "frame_pixels", "40,000 x 40,000"),
        (_hostile.many_frames, "frames", "100,000 frames"),
        (_hostile.huge_declared, "frame_pixels", "65,535 x 32,768"),
        (_hostile.deep_sequence, "sequence_depth", "nested"),
    ],
    ids=["jpeg", "jpeg-ls", "jpeg2000", "rle", "100k-frames", "2^31-pixels", "10k-deep"],
)
def test_a_hostile_dicom_is_refused_by_its_limit(
    tmp_path: Path, build: Callable[[Path], Path], limit: str, words: str
) -> None:
    error = _refused(build(tmp_path / "hostile.dcm"))
    assert error.limit == limit
    assert f"over the limit {limit}=" in error.message
    assert words in error.message
    assert f"--limit {limit}=N" in error.message  # and how to raise it


@pytest.mark.timeout(120)
def test_a_deflate_bomb_is_refused_before_it_is_inflated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _hostile.deflate_bomb(tmp_path / "deflated.dcm", inflated_bytes=400 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    monkeypatch.setenv("MEDSIGHT_LIMIT_IMAGE_BYTES", str(100 * 2**20))
    error = _refused(path)
    assert error.limit == "image_bytes"
    assert "deflated dataset inflating" in error.message


@pytest.mark.timeout(120)
def test_a_20000_pixel_square_png_is_refused_before_decoding(tmp_path: Path) -> None:
    error = _refused(_hostile.huge_png(tmp_path / "huge.png", 20_000))
    assert error.limit == "frame_pixels"
    assert "20,000 x 20,000" in error.message


@pytest.mark.timeout(120)
def test_a_nifti_declaring_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    """A gzip of zeros declaring 2048^3 float32 voxels (32 GiB) is refused from its header."""
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float32)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + b"\x00" * 4)
        handle.write(bytes(2**20))  # a megabyte of the declared 32 GiB
    error = _refused(path)
    assert error.limit == "image_bytes"


def test_limits_are_set_by_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_limits() == ReadLimits()
    monkeypatch.setenv("MEDSIGHT_LIMIT_FRAMES", "5000")
    monkeypatch.setenv("MEDSIGHT_LIMIT_DECODE_SECONDS", "2.5")
    assert current_limits().frames == 5000
    assert current_limits().decode_seconds == 2.5
    for bad in ("0", "-3", "1.5", "lots", "inf", "nan"):
        monkeypatch.setenv("MEDSIGHT_LIMIT_FRAMES", bad)
        with pytest.raises(InvalidInputError, match="limit frames must be"):
            current_limits()
    with pytest.raises(InvalidInputError, match="NAME one of"):
        parse_limit_setting("pixels=10")
    assert parse_limit_setting("frame-pixels=1e6") == ("frame_pixels", 1_000_000)


def test_the_defaults_admit_a_512_by_512_by_800_ct_and_a_13000_pixel_photograph() -> None:
    limits = ReadLimits()
    limits.check_frame(512, 512, 1, 2, None)
    limits.check("frames", 800, "", None)
    limits.check("image_bytes", 512 * 512 * 800 * 4, "", None)
    limits.check_frame(13_000, 13_000, 3, 1, None)
    limits.check_frame(4096, 4096, 3, 1, None)  # a slide region read at a time


@pytest.mark.timeout(120)
def test_raising_a_limit_admits_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame limit is what refused the 100,000-frame header: raised, the header is
    described (its pixel data is then found truncated, a different, honest refusal)."""
    path = _hostile.many_frames(tmp_path / "frames.dcm", frames=30_000)
    with pytest.raises(ResourceLimitError):
        read_image(path)
    monkeypatch.setenv("MEDSIGHT_LIMIT_FRAMES", "40000")
    monkeypatch.setenv("MEDSIGHT_LIMIT_IMAGE_BYTES", str(32 * 2**30))
    with pytest.raises(InvalidInputError) as caught:
        read_image(path)
    assert not isinstance(caught.value, ResourceLimitError)
    assert "truncated" in str(caught.value) or "length" in str(caught.value)


def test_a_refused_file_in_a_folder_is_a_study_that_fails_not_a_silent_skip(
    tmp_path: Path,
) -> None:
    _hostile.huge_declared(tmp_path / "big.dcm")
    studies = find_studies(tmp_path)
    assert [s.label for s in studies] == ["big.dcm"]
    with pytest.raises(ResourceLimitError, match="frame_pixels"):
        studies[0].images[0].load()


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large pytest
# process would report the parent's size
_MEASURE = """
import sys
from medsight.cli import app
code = 0
try:
    app(sys.argv[1:], standalone_mode=True)
except SystemExit as exc:
    code = exc.code
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print("PEAK_KB", status, "EXIT", code)
"""


@pytest.mark.timeout(300)
def test_a_13000_pixel_square_png_is_analysed_by_the_chest_model_within_1_gb(
    tmp_path: Path,
) -> None:
    image = _hostile.huge_png(tmp_path / "large.png", 13_000)
    out = tmp_path / "results"
    command = [sys.executable, "-c", _MEASURE, "analyze", str(image), "--task", "cxr-pneumonia"]
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=280
    )
    last = done.stdout.strip().splitlines()[-1].split()
    peak_kb, exit_code = int(last[1]), last[3]
    assert exit_code in ("0", "None"), done.stdout + done.stderr
    assert peak_kb < 1024 * 1024, f"peak resident memory {peak_kb / 1024:.0f} MB"
    assert list(out.rglob("result.json"))
