"""A file that disappears between discovery and reading (a PACS export still moving files,
an archive being cleaned): that image is recorded with the reason and the batch finishes the
others, ending with exit 1 (partly done), never 70."""

from __future__ import annotations

import pydicom
from pydicom.uid import generate_uid

from medsight.analysis import AnalysisOptions, analyze_studies, find_studies
from tests.service.test_serve_recovery import SAMPLE


def test_a_file_gone_after_discovery_is_recorded_and_the_rest_analysed(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("kept", "gone"):
        dataset = pydicom.dcmread(SAMPLE)
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(source / f"{name}.dcm")
    studies = find_studies(source)
    assert len(studies) == 2
    (source / "gone.dcm").unlink()  # after discovery, before reading
    outcomes = analyze_studies(
        studies, tmp_path / "out", AnalysisOptions(task="cxr-pneumonia", outputs=("json",))
    )
    failed = [o for o in outcomes if o.failed]
    analysed = [o for o in outcomes if not o.failed]
    assert len(failed) == 1 and len(analysed) == 1
    (failure,) = failed[0].failures
    assert "gone.dcm" in failure["reason"] and "cannot be read" in failure["reason"]
    assert failure["exit_code"] == 2
    # the command's rule: some studies failed, not all of them -> exit 1
    assert len(failed) < len(outcomes)
