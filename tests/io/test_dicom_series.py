"""Series discovery and geometry on built series: order, gaps, splits, tilt, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from medsight.errors import (
    AmbiguousInputError,
    DicomReadError,
    GantryTiltError,
    MedsightError,
    NoImageFoundError,
    NoPixelDataError,
)
from medsight.io.dicom import read_dicom, read_series, scan_dicom
from tests._builders import AXIAL, SAGITTAL, base_pixels, write_series
from tests.conftest import require_data

SLOPE_INTERCEPT = (1.0, -1024.0)  # CT_small's rescale


def hu(n: int) -> np.ndarray:
    """Expected slice n in HU, in medsight's (i, j) order."""
    return (base_pixels().astype(np.int32) + 10 * n + SLOPE_INTERCEPT[1]).T


def test_shuffled_files_sort_by_position_not_instance_number(tmp_path):
    paths = write_series(tmp_path, 8, spacing=2.5)
    image = read_dicom(tmp_path)
    assert image.shape == (128, 128, 8)
    for n in range(8):
        np.testing.assert_array_equal(image.array[0, :, :, n], hu(n))
    np.testing.assert_allclose(image.affine[:3, 2], [0, 0, 2.5])
    first = pydicom.dcmread(paths[0])
    np.testing.assert_allclose(image.origin, [float(v) for v in first.ImagePositionPatient])
    assert image.spacing == pytest.approx((0.661468, 0.661468, 2.5), rel=1e-5)
    assert image.orientation_code == "LPS"
    assert [f.path for f in image.frames] == paths
    assert image.warnings == ()


def test_spacing_comes_from_positions_not_slice_thickness(tmp_path):
    write_series(tmp_path, 5, spacing=3.0, extra={"SliceThickness": "5.0"})
    assert read_dicom(tmp_path).spacing[2] == pytest.approx(3.0)


def test_missing_slice_warns_and_resamples_when_asked(tmp_path):
    write_series(tmp_path, 8, spacing=2.0, skip=[4])
    image = read_dicom(tmp_path)
    assert image.shape == (128, 128, 7)
    assert any("missing slice" in w for w in image.warnings)
    regular = read_dicom(tmp_path, resample_irregular=True)
    assert regular.shape == (128, 128, 8)
    assert not any(w.startswith("irregular slice spacing") for w in regular.warnings)
    # slice 4 is interpolated halfway between slices 3 and 5
    np.testing.assert_allclose(regular.array[0, :, :, 4], hu(4), atol=1e-3)
    np.testing.assert_allclose(regular.array[0, :, :, 7], hu(7), atol=1e-3)
    assert regular.spacing[2] == pytest.approx(2.0)


def test_two_series_and_a_localizer_are_split_and_reported(tmp_path):
    study = pydicom.uid.generate_uid()
    series_a = pydicom.uid.generate_uid()
    write_series(tmp_path / "a", 6, study_uid=study, series_uid=series_a, series_number=2)
    write_series(
        tmp_path / "a",
        1,
        study_uid=study,
        series_uid=series_a,
        series_number=2,
        orientation=SAGITTAL,
    )
    write_series(tmp_path / "b", 4, study_uid=study, series_number=3, spacing=5.0)
    scan = scan_dicom(tmp_path)
    assert len(scan.studies) == 1
    assert [s.series_number for s in scan.series] == [2, 3]
    first = scan.series[0]
    assert sorted(stack.kind for stack in first.stacks) == ["2d", "volume"]
    assert any("orientation" in reason for reason in first.split_reasons)
    with pytest.raises(AmbiguousInputError, match="images found where one was expected"):
        read_dicom(tmp_path)
    volume = read_dicom(tmp_path, series_instance_uid=scan.series[1].series_instance_uid)
    assert volume.shape == (128, 128, 4)
    images = read_series(first)
    assert sorted(im.spatial_dims for im in images) == [2, 3]


def test_time_series_reads_as_one_sequence_in_acquisition_order(tmp_path):
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for t in (2, 0, 1):  # written out of order
        write_series(
            tmp_path,
            4,
            series_uid=series,
            study_uid=study,
            value_step=10,
            extra={"TemporalPositionIdentifier": t + 1, "AcquisitionNumber": t + 1},
            pixels=base_pixels() + 1000 * t,
        )
    scan = scan_dicom(tmp_path)
    (only,) = scan.series
    assert len(only.stacks) == 3
    assert any("3 volumes by temporal position" in r for r in only.split_reasons)
    image = read_dicom(tmp_path)
    assert image.is_sequence and image.array.shape == (1, 128, 128, 4, 3)
    for t in range(3):
        np.testing.assert_array_equal(image.array[0, :, :, 2, t], hu(2) + 1000 * t)


def test_multi_echo_is_split_by_echo_time(tmp_path):
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for echo in (30.0, 10.0):
        write_series(tmp_path, 3, series_uid=series, study_uid=study, extra={"EchoTime": echo})
    (only,) = scan_dicom(tmp_path).series
    assert [s.label for s in only.stacks] == ["echo time 10", "echo time 30"]
    assert any("by echo time" in r for r in only.split_reasons)


def test_gantry_tilt_is_refused_or_corrected(tmp_path):
    pixels = np.zeros((128, 128), dtype=np.int16)
    pixels[20, 64] = 3000  # one bright voxel at row 20 of every slice
    spacing_row = 0.661468
    write_series(
        tmp_path, 6, spacing=2.0, tilt_mm_per_slice=spacing_row, pixels=pixels, value_step=0
    )
    with pytest.raises(GantryTiltError, match=r"gantry tilt of 18\.30 degrees"):
        read_dicom(tmp_path)
    corrected = read_dicom(tmp_path, gantry_tilt="correct")
    assert any("tilt" in w for w in corrected.warnings)
    np.testing.assert_allclose(corrected.affine[:3, 2], [0, 0, 2.0], atol=1e-6)
    for k in range(6):  # the dot drifts one row per slice in the orthogonal grid
        column = corrected.array[0, 64, :, k]
        assert int(np.argmax(column)) == 20 + k


def test_multiframe_enhanced_mr_reads_as_volume(tmp_path):
    import gzip
    import shutil
    from pathlib import Path

    import nibabel

    source = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    target = tmp_path / "philips_mprage.dcm"
    with gzip.open(source) as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out)
    image = read_dicom(target)
    assert image.spatial_dims == 3 and image.shape[2] > 1
    assert len({f.frame_number for f in image.frames}) == image.shape[2]
    steps = np.diff([image.world_coordinates([0, 0, k])[0] for k in range(3)], axis=0)
    np.testing.assert_allclose(steps[0], steps[1], atol=1e-4)


def test_cine_multiframe_is_a_2d_sequence():
    from pathlib import Path

    import deid_data

    path = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "ultrasound-multiframe.dcm"
    image = read_dicom(path)
    assert image.spatial_dims == 2 and image.is_sequence
    assert image.num_timepoints == int(
        pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames
    )


def test_truncated_file_names_the_file(tmp_path):
    paths = write_series(tmp_path, 4)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 5000])
    with pytest.raises(DicomReadError) as caught:
        read_dicom(tmp_path)
    assert str(paths[2]) in str(caught.value)
    assert "truncated" in str(caught.value) or "length" in str(caught.value)


def test_non_dicom_file_is_skipped_with_a_note(tmp_path):
    write_series(tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    scan = scan_dicom(tmp_path)
    assert [(s.path.name, s.reason) for s in scan.skipped] == [("notes.txt", "not a DICOM file")]
    assert read_dicom(tmp_path).shape == (128, 128, 3)
    with pytest.raises(MedsightError, match="not a DICOM file"):
        read_dicom(tmp_path / "notes.txt")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NoImageFoundError, match="the folder is empty"):
        read_dicom(tmp_path)


def test_dicom_without_pixel_data_is_refused(tmp_path):
    (path,) = write_series(tmp_path, 1)
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)
    with pytest.raises(NoPixelDataError, match="no pixel data"):
        read_dicom(path)


def test_file_without_preamble_or_file_meta_is_read(tmp_path):
    (path,) = write_series(tmp_path / "src", 1)
    dataset = pydicom.dcmread(path)
    raw = tmp_path / "raw.dcm"
    dataset.preamble = None
    del dataset.file_meta
    pydicom.dcmwrite(raw, dataset, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert raw.read_bytes()[128:132] != b"DICM"
    image = read_dicom(raw)
    np.testing.assert_array_equal(image.array[0], hu(0))


def test_dicomdir_lists_its_images(tmp_path):
    paths = write_series(tmp_path / "src", 3)
    file_set = FileSet()
    for path in paths:
        file_set.add(pydicom.dcmread(path))
    file_set.write(tmp_path / "media")
    image = read_dicom(tmp_path / "media" / "DICOMDIR")
    assert image.shape == (128, 128, 3)
    np.testing.assert_array_equal(image.array[0, :, :, 2], hu(2))


def test_parallel_decode_equals_serial_and_reports_bad_files(tmp_path, monkeypatch):
    from medsight.io.dicom import pixels

    paths = write_series(tmp_path, 12)
    serial = read_dicom(tmp_path, workers=1)
    monkeypatch.setattr(pixels, "PARALLEL_MIN_BYTES", 0)
    # as in a process that runs no other thread (earlier tests may have left some running)
    monkeypatch.setattr(pixels.threading, "active_count", lambda: 1)
    parallel = read_dicom(tmp_path, workers=2)
    np.testing.assert_array_equal(serial.array, parallel.array)
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[:-3000])
    with pytest.raises(DicomReadError, match=paths[5].name):
        read_dicom(tmp_path, workers=2)


def test_projection_spacing_and_orientation(tmp_path):
    (path,) = write_series(tmp_path, 1)
    dataset = pydicom.dcmread(path)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(dataset, keyword)
    dataset.Modality = "DX"
    dataset.ImagerPixelSpacing = [0.2, 0.2]
    dataset.EstimatedRadiographicMagnificationFactor = 1.25
    dataset.PatientOrientation = ["P", "F"]
    dataset.save_as(path)
    image = read_dicom(path)
    assert image.spatial_dims == 2 and image.spacing_known and image.orientation_known
    assert image.spacing == pytest.approx((0.16, 0.16))
    np.testing.assert_allclose(image.direction[:, 0], [0, 1, 0])  # rows run posterior
    np.testing.assert_allclose(image.direction[:, 1], [0, 0, -1])  # columns run to the feet
    assert "magnification" in image.metadata["PixelSpacingSource"]
    del dataset.EstimatedRadiographicMagnificationFactor
    del dataset.PatientOrientation
    dataset.save_as(path)
    plain = read_dicom(path)
    assert plain.spacing == pytest.approx((0.2, 0.2)) and not plain.orientation_known
    assert any("detector" in w for w in plain.warnings)


def test_big_endian_equals_little_endian():
    from pydicom.data import get_testdata_file

    little = read_dicom(get_testdata_file("MR_small.dcm"))
    big = read_dicom(get_testdata_file("MR_small_bigendian.dcm"))
    np.testing.assert_array_equal(little.array, big.array)


def test_monochrome1_is_kept_and_inverted_only_for_display():
    from pathlib import Path

    import data_store

    from medsight.imaging import to_display

    path = Path(data_store.__file__).parent / "data" / "RG1_UNCI.dcm"
    image = read_dicom(path)
    assert image.photometric_interpretation == "MONOCHROME1"
    raw = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(image.array[0].T, raw)  # values untouched by the reader
    shown = to_display(image, window=(float(raw.mean()), float(raw.max() - raw.min())))
    brightest_raw = np.unravel_index(np.argmax(raw), raw.shape)
    assert shown[0].T[brightest_raw] == pytest.approx(0.0, abs=0.05)  # high value shows dark


def test_orientation_axial_and_sagittal_codes(tmp_path):
    write_series(tmp_path / "ax", 3, orientation=AXIAL)
    write_series(tmp_path / "sag", 3, orientation=SAGITTAL)
    assert read_dicom(tmp_path / "ax").orientation_code == "LPS"
    assert read_dicom(tmp_path / "sag").orientation_code == "PIR"  # normal = P x I = R


def test_a_process_with_other_threads_never_forks_to_decode(tmp_path, monkeypatch):
    """Forking while another thread holds a lock can hang the child: decode in-thread."""
    import multiprocessing

    from medsight.io.dicom import pixels

    write_series(tmp_path, 12)
    serial = read_dicom(tmp_path, workers=1)
    monkeypatch.setattr(pixels, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(pixels.threading, "active_count", lambda: 3)

    def no_fork(method=None):
        raise AssertionError(f"a process with threads asked for a {method} pool")

    monkeypatch.setattr(multiprocessing, "get_context", no_fork)
    np.testing.assert_array_equal(read_dicom(tmp_path, workers=2).array, serial.array)


@pytest.mark.parametrize(
    ("raw_dtype", "raw_range", "intercept", "target_dtype"),
    [
        (np.uint16, (0, 4095), -1024, np.int16),  # 12-bit CT
        (np.uint16, (0, 65535), -32768, np.int16),  # the whole range: every cast wraps
        (np.int16, (-2000, 3000), 1000, np.int16),
        (np.uint16, (0, 200), 20, np.uint8),  # a narrower target than the stored type
        (np.uint16, (0, 65535), 70000, np.int32),
    ],
)
def test_the_integer_rescale_is_exact_in_the_target_width(
    raw_dtype, raw_range, intercept, target_dtype
):
    from medsight.io.dicom.pixels import _rescale_into

    rng = np.random.default_rng(0)
    pixels = rng.integers(raw_range[0], raw_range[1] + 1, (64, 48)).astype(raw_dtype)
    pixels.flat[:2] = raw_range  # both ends
    target = np.zeros((3, 64, 48, 1), dtype=target_dtype)
    _rescale_into(target, 1, pixels, 1.0, float(intercept))
    np.testing.assert_array_equal(target[1, :, :, 0], pixels.astype(np.int64) + intercept)


def test_a_cine_whose_trigger_times_drift_between_slices_reads_as_one_volume_per_phase(
    tmp_path: Path,
) -> None:
    """Each slice of a cine is acquired over its own heartbeats, so one phase's trigger time
    differs from slice to slice; equal times would give a partial volume per time."""
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    drift = [0.0, 6.9, -11.0, 3.8]  # ms, per slice: the heart rate changes
    for time_ms, offset in ((280.0, 0), (700.0, 500)):
        write_series(
            tmp_path,
            4,
            series_uid=series,
            study_uid=study,
            per_slice={"TriggerTime": [f"{time_ms + d:.3f}" for d in drift]},
            pixels=base_pixels() + offset,
        )
    scan = scan_dicom(tmp_path)
    (only,) = scan.series
    assert [len(stack.frames) for stack in only.stacks] == [4, 4]
    assert any("2 volumes by temporal order" in r for r in only.split_reasons)
    image = read_dicom(tmp_path)
    assert image.is_sequence and image.array.shape == (1, 128, 128, 4, 2)
    np.testing.assert_array_equal(image.array[0, :, :, 1, 1], hu(1) + 500)


def test_a_cine_whose_phases_overlap_in_time_is_not_forced_into_phases(tmp_path: Path) -> None:
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    # slice by slice: (100, 200), (250, 600), ...: the first times (100, 250) reach past a
    # second time (200), so "the n-th time is phase n" would mix phases
    for times in (["100", "250", "100", "250"], ["200", "600", "200", "600"]):
        write_series(
            tmp_path, 4, series_uid=series, study_uid=study, per_slice={"TriggerTime": times}
        )
    (only,) = scan_dicom(tmp_path).series
    assert not any("temporal order" in r for r in only.split_reasons)


@pytest.mark.parametrize("patient", ["SCD0000101", "SCD0000201", "SCD0000501"])
def test_each_sunnybrook_patient_reads_as_its_two_contoured_phases(patient: str) -> None:
    folder = require_data("sunnybrook-cine", "dicoms", patient)
    (only,) = scan_dicom(folder).series
    assert len(only.stacks) == 2
    assert len({len(stack.frames) for stack in only.stacks}) == 1
    assert len(only.stacks[0].frames) >= 10
    times = [[f.temporal_position for f in stack.frames] for stack in only.stacks]
    assert max(times[0]) < min(times[1])  # ES (phase 7-9) before ED (19-20)


def test_a_cine_with_a_slice_missing_in_one_phase_is_refused_naming_the_phase(
    tmp_path: Path,
) -> None:
    """The other phase still groups by its times; the reader refuses the incomplete one."""
    import shutil

    from medsight.errors import GeometryError

    source = require_data("sunnybrook-cine", "dicoms", "SCD0000101")
    folder = tmp_path / "cine"
    shutil.copytree(source, folder)
    (folder / "28.dcm").unlink()  # slice 2 of phase 8 (file N = (slice - 1) x 20 + phase)
    (only,) = scan_dicom(folder).series
    assert sorted(len(stack.frames) for stack in only.stacks) == [11, 12]
    with pytest.raises(GeometryError, match=r"temporal order 1: 11, temporal order 2: 12"):
        read_dicom(folder)


def test_slices_of_different_thickness_are_said(tmp_path: Path) -> None:
    write_series(tmp_path, 4, per_slice={"SliceThickness": ["8", "8", "10", "8"]})
    image = read_dicom(tmp_path)
    assert image.metadata["SliceThicknesses"] == [8.0, 10.0]
    assert any("slices of different thickness" in w for w in image.warnings)
