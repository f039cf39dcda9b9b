"""The worker's bad-input and failure paths, in process: a model that fails at inference is
retried and then dead-lettered, and the study still reaches the worklist as NEEDS_REVIEW
with the reason; nothing received is dropped."""

from __future__ import annotations

import json

from medsight.analysis import AnalysisOptions
from medsight.analysis.inputs import study_key_of
from medsight.inference import Predictor
from medsight.service import InstanceStore
from medsight.service.audit import AuditLog
from medsight.service.worker import Worker
from tests.service.test_serve_recovery import SAMPLE


def stored_sample(store: InstanceStore) -> str:
    import pydicom

    dataset = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    identifiers = {
        "SOPInstanceUID": dataset.SOPInstanceUID,
        "StudyInstanceUID": dataset.StudyInstanceUID,
        "SeriesInstanceUID": dataset.SeriesInstanceUID,
        "SOPClassUID": dataset.SOPClassUID,
    }
    assert store.store(SAMPLE.read_bytes(), identifiers, "MODALITY")
    return str(dataset.StudyInstanceUID)


def test_a_model_failure_is_retried_then_reaches_the_worklist_for_review(tmp_path, monkeypatch):
    store = InstanceStore(tmp_path, max_attempts=2, backoff_seconds=0.0)
    study = stored_sample(store)

    def explode(self, image):  # a model crash: not an input problem, so it is retried
        raise RuntimeError("out of memory in the network")

    monkeypatch.setattr(Predictor, "predict", explode)
    worker = Worker(store, AnalysisOptions(task="cxr-pneumonia"), quiet_seconds=0.0)
    ran = [worker.run_once() for _ in range(4)]
    assert sum(job is not None for job in ran) == 2  # two attempts, then dead
    (job,) = store.queue.jobs_of(study)
    assert job["state"] == "dead" and job["failures"] == 2
    assert "out of memory in the network" in job["error"]
    document = json.loads((tmp_path / "results" / study_key_of(study) / "result.json").read_text())
    assert document["priority"]["level"] == "NEEDS_REVIEW"
    assert any("out of memory" in reason for reason in document["priority"]["reasons"])
    assert store.count() == 1  # the instance is kept
    (entry,) = AuditLog(store.engine).query(action="analysis-failed")
    assert entry["subject"] == study_key_of(study)


def test_an_input_problem_is_not_retried(tmp_path):
    store = InstanceStore(tmp_path, max_attempts=3, backoff_seconds=0.0)
    study = stored_sample(store)
    worker = Worker(store, AnalysisOptions(task="hippocampus-mr"), quiet_seconds=0.0)
    assert worker.run_once() is not None
    (job,) = store.queue.jobs_of(study)
    document = json.loads((tmp_path / "results" / study_key_of(study) / "result.json").read_text())
    # a 2D X-ray refused by a 3D MR task: a result needing review, on the first attempt
    assert job["attempts"] == 1
    assert document["priority"]["level"] == "NEEDS_REVIEW"
    assert document["failures"] and "hippocampus-mr" in json.dumps(document["failures"])
