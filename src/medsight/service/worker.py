"""The worker: turns quiet studies into jobs, leases one, analyses the study's stored
instances with the engine's task selection, and records the outcome. Results go to
``DATA/results/<study key>/``; the engine's deterministic result ids and DICOM UIDs make a
retried job overwrite its own earlier output rather than duplicate it."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from medsight.analysis import AnalysisOptions, TaskSource, analyze_study, find_studies
from medsight.errors import MedsightError
from medsight.service.outbound import Outbound
from medsight.service.queue import Job
from medsight.service.store import InstanceStore

logger = logging.getLogger(__name__)

__all__ = ["Worker"]


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
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.tasks = TaskSource(options)
        self.results = store.data_dir / "results"

    def run_once(self) -> Job | None:
        """One step: queue quiet studies, then run at most one job. Returns the job run."""
        queue = self.store.queue
        if self.outbound is not None:
            self.outbound.deliver_due()
        queue.enqueue_quiet_studies(self.quiet_seconds)
        job = queue.lease(self.name)
        if job is None:
            return None
        instances = self.store.instances_of(job.study_instance_uid)
        if not instances:
            queue.fail(job, "no stored instances for this study")
            return job
        folder = instances[0].path.parent.parent  # DATA/instances/<study>/
        try:
            outcomes = [
                analyze_study(study, self.results, self.options, tasks=self.tasks)
                for study in find_studies(folder)
            ]
        except MedsightError as exc:
            state = queue.fail(job, str(exc))
            logger.warning("study %s: %s (%s)", job.study_instance_uid, exc, state)
            return job
        except Exception as exc:  # a bug must not stop the service: dead-letter with it
            state = queue.fail(job, f"internal error: {exc!r}")
            logger.exception("study %s: internal error (%s)", job.study_instance_uid, state)
            return job
        written = [o.result_path for o in outcomes if o.result_path is not None]
        if self.outbound is not None:  # recorded before the job completes: never lost
            for path in written:
                document = json.loads(path.read_text())
                self.outbound.plan(path.parent, document, job.study_instance_uid)
        queue.complete(job, ";".join(str(p.relative_to(self.results)) for p in written))
        logger.info("study %s analysed: %s", job.study_instance_uid, written)
        return job

    def result_paths(self) -> list[Path]:
        return sorted(self.results.glob("*/result.json"))
