"""A folder scan parses only the header elements it reads (``SCAN_TAGS``): over every DICOM
file the test packages install, that describes each file exactly as the whole parse does,
and a broken element the scan does not read no longer costs the file."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from medsight.io import read_image
from medsight.io.dicom import scan_dicom
from medsight.io.dicom._header import SCAN_TAGS, describe_frames, has_pixel_data, read_header
from medsight.io.limits import ResourceLimitError
from tests import _hostile
from tests._dicom_corpus import corpus_files


def _describe(path: Path, only: frozenset[int] | None) -> object:
    try:
        dataset = read_header(path, only=only)
        if not has_pixel_data(dataset):
            return "no pixel data"
        return describe_frames(path, dataset)
    except (ResourceLimitError, pydicom.errors.InvalidDicomError) as exc:
        return type(exc).__name__
    except Exception as exc:  # the same failure either way is what is compared
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.timeout(300)
def test_the_scan_parse_describes_every_corpus_file_as_the_whole_parse(tmp_path: Path) -> None:
    files = corpus_files(tmp_path)
    assert len(files) > 250
    described = 0
    for path in files:
        whole, scanned = _describe(path, None), _describe(path, SCAN_TAGS)
        assert scanned == whole, path.name
        described += isinstance(whole, list)
    assert described > 150  # most of the corpus holds images


def test_a_broken_element_the_scan_does_not_read_is_left_to_whoever_reads_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _hostile.unknown_vr(tmp_path / "ct.dcm", 0x0018, 0x0060, b"DS")
    scan = scan_dicom(path)
    assert len(scan.series) == 1 and not scan.skipped
    assert "ignored" not in caplog.text  # KVP is not a scan element
    read_image(path)  # the series' kept header is parsed whole: there it is dropped
    assert "unreadable element(s) ignored: (0018,0060)" in caplog.text


def test_a_broken_element_the_scan_reads_is_dropped_by_the_scan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _hostile.unknown_vr(tmp_path / "ct.dcm", 0x0020, 0x0011, b"IS")
    scan = scan_dicom(path)
    assert scan.series[0].frames[0].series_number is None  # SeriesNumber: dropped
    assert "unreadable element(s) ignored: (0020,0011)" in caplog.text
