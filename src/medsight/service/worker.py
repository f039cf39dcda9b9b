"""The worker: turns quiet studies into jobs, leases one, analyses the study's stored
instances with the engine's task selection (or the task chosen at upload), and records the
outcome, with one audit entry per inference. Results go to ``DATA/results/<study key>/``;
the engine's deterministic result ids and DICOM UIDs make a retried job overwrite its own
earlier output rather than duplicate it.

A study that cannot be analysed (bad input: permanent; a crash of the model: after the
retries) still gets a result, NEEDS_REVIEW with the reason, so it reaches the worklist.
Logs carry study keys and UIDs, never patient names or IDs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from medsight.analysis import AnalysisOptions, TaskSource, analyze_study, find_studies
from medsight.analysis.inputs import study_key_of
from medsight.analysis.runner import write_unanalysed_study
from medsight.errors import MedsightError
from medsight.service.audit import AuditLog
from medsight.service.events import log_event
from medsight.service.outbound import Outbound
from medsight.service.queue import Job, worker_name
from medsight.service.store import InstanceStore
from medsight.service.worklist import Worklist, study_identifiers

logger = logging.getLogger(__name__)

__all__ = ["Worker"]


def _inference_record(analysis: dict[str, Any], result: str) -> dict[str, Any]:
    """What the audit keeps of one inference: inputs, model, gate, operating point, outputs."""
    source = analysis["input"]
    folder = result.split("/", 1)[0]  # <study key>/result.json: outputs relative to results
    classification = analysis.get("classification", {})
    return {
        "input": {
            k: source.get(k)
            for k in ("study_instance_uid", "series_instance_uid", "sop_instance_uids")
        },
        "task": {k: analysis["task"][k] for k in ("id", "version", "hash", "weights_sha256")},
        "operating_points": {
            name: {k: point.get(k) for k in ("output", "threshold", "flag")}
            for name, point in classification.get("operating_points", {}).items()
        },
        "findings": [
            {"name": f["name"], "probability": f.get("probability"), "flag": f.get("flag")}
            for f in analysis.get("findings", [])
        ],
        "state": analysis.get("state"),
        # the input gate: its decision and every check's outcome, score and threshold
        "gate": {
            "decision": analysis.get("gate", {}).get("decision"),
            "withheld": analysis.get("withheld", False),
            "checks": [
                {k: check.get(k) for k in ("name", "outcome", "score", "threshold")}
                for check in analysis.get("gate", {}).get("checks", [])
            ],
        },
        "outputs": [result, *(f"{folder}/{p}" for p in analysis.get("dicom_outputs", []))],
    }


class Worker:
    def __init__(
        self,
        store: InstanceStore,
        options: AnalysisOptions,
        *,
        quiet_seconds: float = 10.0,
        outbound: Outbound | None = None,
    ) -> None:
        self.store = store
        self.outbound = outbound
        self.options = options
        self.quiet_seconds = quiet_seconds
        self.name = worker_name()
        self.audit = AuditLog(store.engine)
        self.results = store.data_dir / "results"
        self.worklist = Worklist(store.engine)
        self._sources: dict[str, TaskSource] = {}

    def _tasks_for(self, study_instance_uid: str) -> TaskSource:
        """The site's selection, or the task chosen for this study at intake."""
        task = self.store.route_of(study_instance_uid) or self.options.task
        if task not in self._sources:
            self._sources[task] = TaskSource(dataclasses.replace(self.options, task=task))
        return self._sources[task]

    def run_once(self) -> Job | None:
        """One step: deliver what is due, queue quiet studies, run at most one job."""
        queue = self.store.queue
        if self.outbound is not None:
            self.outbound.deliver_due()
        for uid in queue.enqueue_quiet_studies(self.quiet_seconds):
            log_event("study-complete", study_key=study_key_of(uid), study_instance_uid=uid)
        job = queue.lease(self.name)
        if job is None:
            return None
        instances = self.store.instances_of(job.study_instance_uid)
        if not instances:
            self._failed(job, "no stored instances for this study", permanent=True)
            return job
        folder = instances[0].path.parent.parent  # DATA/instances/<study>/
        tasks = self._tasks_for(job.study_instance_uid)
        try:
            studies = find_studies(folder)
            outcomes = [analyze_study(s, self.results, tasks.options, tasks=tasks) for s in studies]
        except MedsightError as exc:  # the input itself: a retry would fail the same way
            self._failed(job, str(exc), permanent=True)
            return job
        except Exception as exc:  # a bug or a model failure must not stop the service
            logger.exception("study %s: internal error", study_key_of(job.study_instance_uid))
            self._failed(job, f"internal error: {type(exc).__name__}: {exc}")
            return job
        written = [o.result_path for o in outcomes if o.result_path is not None]
        documents = [json.loads(path.read_text()) for path in written]
        identifiers = self._identifiers(instances)
        for path, document in zip(written, documents, strict=True):
            relative = str(path.relative_to(self.results))
            for analysis in document["analyses"]:
                self.audit.append(
                    self.name,
                    "inference",
                    document["study_key"],
                    _inference_record(analysis, relative),
                )
            if self.outbound is not None:  # recorded before the job completes: never lost
                self.outbound.plan(path.parent, document, job.study_instance_uid)
            self.worklist.index(path, self.results, identifiers, job.study_instance_uid)
        queue.complete(job, ";".join(str(p.relative_to(self.results)) for p in written))
        for document in documents:
            log_event(
                "analysed",
                study_key=document["study_key"],
                study_instance_uid=job.study_instance_uid,
                priority=document["priority"]["level"],
                analyses=len(document["analyses"]),
                job=job.id,
                attempt=job.attempts,
            )
        return job

    def _failed(self, job: Job, reason: str, *, permanent: bool = False) -> None:
        key = study_key_of(job.study_instance_uid)
        reason = reason.replace(f"{self.store.files}/", "")  # the store's layout is not news
        state = self.store.queue.fail(job, reason, permanent=permanent)
        log_event(
            "failed",
            logging.WARNING,
            stage="analysis",
            study_key=key,
            study_instance_uid=job.study_instance_uid,
            job=job.id,
            attempt=job.attempts,
            state=state,
            reason=reason[:300],
        )
        if state == "dead":
            path = write_unanalysed_study(key, self.results, reason, self.options)
            instances = self.store.instances_of(job.study_instance_uid)
            self.worklist.index(
                path, self.results, self._identifiers(instances), job.study_instance_uid
            )
            self.audit.append(self.name, "analysis-failed", key, {"reason": reason})

    @staticmethod
    def _identifiers(instances: list[Any]) -> dict[str, Any] | None:
        if not instances:
            return None
        return study_identifiers(
            [i.path for i in instances], [i.series_instance_uid for i in instances]
        )

    def result_paths(self) -> list[Path]:
        return sorted(self.results.glob("*/result.json"))
