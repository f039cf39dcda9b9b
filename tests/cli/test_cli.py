"""`medsight info` and `medsight convert`: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medsight.cli import app
from tests._builders import SAGITTAL, base_pixels, write_series

runner = CliRunner()


def medsight(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed entry point for real, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "medsight", *args], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str):
    assert result.returncode == code, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_info_table_and_json(tmp_path):
    write_series(tmp_path, 5, spacing=3.0)
    result = medsight("info", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "CT" in result.stdout and "3" in result.stdout and "LPS" in result.stdout
    as_json = runner.invoke(app, ["info", str(tmp_path), "--json"])
    payload = json.loads(as_json.stdout)
    (row,) = payload["images"]
    assert row["size"] == [128, 128, 5] and row["spacing_mm"][2] == pytest.approx(3.0)
    assert row["transfer_syntax"] == "Explicit VR Little Endian"


def test_info_reports_splits_and_skipped_files(tmp_path):
    series = pydicom.uid.generate_uid()
    study = pydicom.uid.generate_uid()
    write_series(tmp_path, 4, series_uid=series, study_uid=study)
    write_series(tmp_path, 1, series_uid=series, study_uid=study, orientation=SAGITTAL)
    (tmp_path / "readme.txt").write_text("hello")
    payload = json.loads(runner.invoke(app, ["info", str(tmp_path), "--json"]).stdout)
    assert len(payload["images"]) == 2
    assert any("orientation" in w for row in payload["images"] for w in row["warnings"])
    assert payload["skipped"] == [
        {"path": str(tmp_path / "readme.txt"), "reason": "not a DICOM file"}
    ]


def test_info_on_other_formats(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    payload = json.loads(runner.invoke(app, ["info", str(tmp_path / "v.nii.gz"), "--json"]).stdout)
    assert payload["images"][0]["size"] == [4, 5, 6]


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda p: p / "missing", ["missing", "no such file"]),
        (lambda p: p, ["the folder is empty"]),
        (lambda p: (p / "x.txt").write_text("x") and p / "x.txt", ["x.txt", "not a DICOM file"]),
    ],
    ids=["missing", "empty-folder", "not-dicom"],
)
def test_info_bad_input_is_one_line_exit_2(tmp_path, setup, words):
    assert_one_line_error(medsight("info", str(setup(tmp_path))), 2, *words)


def test_convert_several_series_writes_one_file_each(tmp_path):
    study = pydicom.uid.generate_uid()
    write_series(
        tmp_path / "in" / "a",
        4,
        study_uid=study,
        series_number=2,
        extra={"SeriesDescription": "axial"},
    )
    write_series(
        tmp_path / "in" / "b",
        3,
        study_uid=study,
        series_number=5,
        extra={"SeriesDescription": "thin"},
    )
    result = medsight("convert", str(tmp_path / "in"), str(tmp_path / "out" / "study.nii.gz"))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["study_2_axial_CT.nii.gz", "study_5_thin_CT.nii.gz"]
    assert nib.load(tmp_path / "out" / "study_5_thin_CT.nii.gz").shape == (128, 128, 3)


def test_convert_time_series_is_4d_in_acquisition_order(tmp_path):
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for t in (1, 0):
        write_series(
            tmp_path / "in",
            3,
            series_uid=series,
            study_uid=study,
            extra={"TemporalPositionIdentifier": t + 1, "RepetitionTime": 2500},
            pixels=base_pixels() + 500 * t,
        )
    out = tmp_path / "t.nii.gz"
    result = medsight("convert", str(tmp_path / "in"), str(out))
    assert result.returncode == 0, result.stderr
    assert "(shape 128 x 128 x 3 x 2;" in result.stderr  # says what it wrote
    written = nib.load(out)
    assert written.header.get_zooms()[3] == 2.5  # the repetition time, in seconds
    data = np.asarray(written.dataobj)
    assert data.shape == (128, 128, 3, 2)
    np.testing.assert_array_equal(data[..., 1] - data[..., 0], np.full((128, 128, 3), 500))


def test_convert_bad_inputs(tmp_path):
    paths = write_series(tmp_path / "in", 4)
    assert_one_line_error(
        medsight("convert", str(tmp_path / "in"), str(tmp_path / "x.png")), 2, ".nii"
    )
    paths[1].write_bytes(paths[1].read_bytes()[:-4000])
    assert_one_line_error(
        medsight("convert", str(tmp_path / "in"), str(tmp_path / "x.nii.gz")), 2, paths[1].name
    )


def test_convert_gantry_tilt_refused_then_corrected(tmp_path):
    write_series(tmp_path / "in", 4, tilt_mm_per_slice=0.5)
    out = tmp_path / "x.nii.gz"
    assert_one_line_error(medsight("convert", str(tmp_path / "in"), str(out)), 2, "gantry tilt")
    assert not out.exists()
    result = medsight("convert", str(tmp_path / "in"), str(out), "--correct-tilt")
    assert result.returncode == 0, result.stderr
    assert out.exists()


def test_internal_error_exits_70_and_shows_traceback_only_with_debug(tmp_path, monkeypatch):
    from medsight.cli import info as info_module

    def broken(_path):
        raise RuntimeError("boom")

    monkeypatch.setattr(info_module, "_dicom_rows", broken)
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 70
    assert "internal error" in result.output and "Traceback" not in result.output
    debug = runner.invoke(app, ["info", str(tmp_path), "--debug"])
    assert debug.exit_code == 70 and "Traceback" in debug.output


def test_usage_error_exits_2():
    result = medsight("convert")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_convert_partial_batch_exits_1_and_keeps_the_good_series(tmp_path):
    study = pydicom.uid.generate_uid()
    write_series(tmp_path / "in" / "a", 3, study_uid=study, series_number=1)
    bad = write_series(tmp_path / "in" / "b", 3, study_uid=study, series_number=2)
    bad[1].write_bytes(bad[1].read_bytes()[:-4000])
    result = medsight("convert", str(tmp_path / "in"), str(tmp_path / "out" / "s.nii.gz"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s_1_CT.nii.gz"]
    assert "1 of 2 image(s) failed" in result.stderr


def test_info_on_a_cine_with_odd_uids_shows_its_phases_without_pydicom_log_lines():
    """Sunnybrook's de-identified UIDs have parts with leading zeros on every file: pydicom
    logs each one at WARNING, which used to fill the terminal ahead of the table."""
    from tests.conftest import require_data

    folder = require_data("sunnybrook-cine", "dicoms", "SCD0000201")
    result = medsight("info", str(folder))
    assert result.returncode == 0, result.stderr
    assert "pydicom" not in result.stderr + result.stdout
    assert "2 volumes by temporal order" in " ".join(result.stdout.split())
