"""`medsight deidentify` on a real series: geometry and series structure intact, pseudonyms
consistent under a key and different under another, no original identifier left in any
byte written, keys that others can read refused."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsight.io import read_image
from tests._builders import write_series
from tests.cli.test_bad_input_lines import medsight

IDENTIFIERS = {
    "PatientName": "Smithers^Waylon^J",
    "PatientID": "HOSP-99812",
    "AccessionNumber": "ACC77123",
    "InstitutionName": "Springfield General",
    "ReferringPhysicianName": "Hibbert^Julius",
    "PatientBirthDate": "19610412",
    "StudyDate": "20240102",
    "PatientAge": "063Y",
    "PatientSex": "M",
    "OperatorsName": "Nurse^Ratched",
}


def run_ok(*args: str) -> subprocess.CompletedProcess[str]:
    done = medsight(*args)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def series(tmp_path: Path) -> Path:
    folder = tmp_path / "Smithers_Waylon"  # a folder named after the patient, as they are
    write_series(folder, 6, extra=dict(IDENTIFIERS))
    return folder


def _originals(folder: Path) -> set[str]:
    values = set(IDENTIFIERS.values()) - {"063Y", "M"}
    for path in folder.glob("*"):
        dataset = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            values.add(str(dataset.get(keyword)))
        if "FrameOfReferenceUID" in dataset:
            values.add(str(dataset.FrameOfReferenceUID))
    return values


def _all_bytes(folder: Path) -> bytes:
    return b"".join(
        p.read_bytes() + str(p.relative_to(folder)).encode()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    )


@pytest.mark.timeout(120)
def test_a_series_is_deidentified_with_geometry_intact_and_no_identifier_left(
    series: Path, tmp_path: Path
) -> None:
    key = tmp_path / "site.key"
    out = tmp_path / "out"
    done = medsight("deidentify", str(series), str(out), "--key", str(key), "--new-key")
    assert done.returncode == 0, done.stderr
    assert "research use only" in done.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"

    before, after = read_image(series), read_image(next(p for p in out.iterdir() if p.is_dir()))
    assert np.array_equal(before.array, after.array)
    assert np.allclose(before.affine, after.affine)
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 6 and len({p.parent for p in written}) == 1  # one series still

    everything = _all_bytes(out)
    for original in _originals(series):
        assert original.encode() not in everything, f"{original!r} left in the output"
    first = pydicom.dcmread(written[0])
    assert first.PatientAge == "063Y" and first.PatientSex == "M"  # characteristics kept
    assert first.PatientIdentityRemoved == "YES" and first.PatientBirthDate in ("", None)
    assert first.StudyDate != "20240102" and len(first.StudyDate) == 8  # shifted, not blanked

    with (out / "deidentification-report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    actions = {(row["keyword"], row["action"]) for row in rows}
    assert ("PatientName", "pseudonym") in actions and ("StudyDate", "date-shifted") in actions
    assert ("StudyInstanceUID", "uid-replaced") in actions


@pytest.mark.timeout(120)
def test_the_same_key_gives_the_same_pseudonyms_and_another_key_others(
    series: Path, tmp_path: Path
) -> None:
    key, other = tmp_path / "a.key", tmp_path / "b.key"
    run_ok("deidentify", str(series), str(tmp_path / "one"), "--key", str(key), "--new-key")
    run_ok("deidentify", str(series), str(tmp_path / "two"), "--key", str(key))
    run_ok("deidentify", str(series), str(tmp_path / "three"), "--key", str(other), "--new-key")

    def names(folder: str) -> list[str]:
        return sorted(
            str(p.relative_to(tmp_path / folder)) for p in (tmp_path / folder).rglob("*.dcm")
        )

    def patient(folder: str) -> tuple[str, str]:
        dataset = pydicom.dcmread(next((tmp_path / folder).rglob("*.dcm")))
        return str(dataset.PatientID), str(dataset.StudyDate)

    assert names("one") == names("two") and patient("one") == patient("two")
    assert set(names("one")).isdisjoint(names("three"))
    assert patient("one")[0] != patient("three")[0]


def test_a_key_others_can_read_is_refused(series: Path, tmp_path: Path) -> None:
    key = tmp_path / "open.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o644)
    done = medsight("deidentify", str(series), str(tmp_path / "out"), "--key", str(key))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "open to other users" in lines[0] and "open.key" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_keys_and_destinations_end_with_exit_2(series: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    run_ok("deidentify", str(series), str(tmp_path / "o1"), "--key", str(key), "--new-key")
    again = medsight(
        "deidentify", str(series), str(tmp_path / "o2"), "--key", str(key), "--new-key"
    )
    assert again.returncode == 2 and "exists already" in again.stderr
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    bad = medsight("deidentify", str(series), str(tmp_path / "o3"), "--key", str(garbage))
    assert bad.returncode == 2 and "not a medsight key file" in bad.stderr
    missing = medsight(
        "deidentify", str(series), str(tmp_path / "o4"), "--key", str(tmp_path / "none")
    )
    assert missing.returncode == 2 and "not found" in missing.stderr
    full = medsight("deidentify", str(series), str(tmp_path / "o1"), "--key", str(key))
    assert full.returncode == 2 and "not empty" in full.stderr


def test_burned_in_text_is_flagged_for_review(tmp_path: Path) -> None:
    folder = tmp_path / "us"
    write_series(folder, 1, extra={"Modality": "US", "PatientID": "P1"})
    out = tmp_path / "out"
    key = tmp_path / "k.key"
    done = medsight("deidentify", str(folder), str(out), "--key", str(key), "--new-key")
    assert done.returncode == 0 and "1 to review" in done.stderr
    report = (out / "deidentification-report.csv").read_text()
    assert "review pixels for burned-in text: modality US" in report


def test_a_file_that_is_not_dicom_is_reported_and_the_batch_ends_with_exit_1(
    series: Path, tmp_path: Path
) -> None:
    (series / "notes.txt").write_text("Smithers^Waylon said hello")
    done = medsight(
        "deidentify", str(series), str(tmp_path / "out"), "--key", str(tmp_path / "k"), "--new-key"
    )
    assert done.returncode == 1
    assert "not written: input" in done.stderr and "notes.txt" not in done.stderr
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 6


def test_results_deidentified_with_their_source_keep_their_references_and_conform(
    tmp_path: Path,
) -> None:
    """Export of results: a SEG and its source de-identified under one key still point at
    each other (same pseudonymous UIDs) and the SEG still passes dciodvfy."""
    import shutil as shell

    from medsight.deid import Pseudonyms, deidentify_tree
    from medsight.reporting.dicom_seg import write_seg
    from tests.reporting._sources import prediction_for
    from tests.reporting.test_dicom_seg import dciodvfy_errors
    from tests.reporting.test_projection_results_conform import SAMPLE, _projection_task

    export = tmp_path / "export"
    export.mkdir()
    shell.copy(SAMPLE, export / "source.dcm")
    image = read_image(export / "source.dcm")
    label_map = np.zeros(image.shape, dtype=np.uint8)
    label_map[10:40, 20:60] = 1
    task = _projection_task(tmp_path)
    write_seg(prediction_for(task, image, label_map), task, image, export / "seg.dcm")
    written, skipped = deidentify_tree(export, tmp_path / "out", Pseudonyms(bytes(32)))
    assert not skipped and len(written) == 2
    by_modality = {pydicom.dcmread(w.output).Modality: pydicom.dcmread(w.output) for w in written}
    seg, source = by_modality["SEG"], by_modality["DX"]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    seg_path = next(w.output for w in written if pydicom.dcmread(w.output).Modality == "SEG")
    assert dciodvfy_errors(seg_path) == []
