"""Drive an archive run: hand studies to the Ray actors, record each as it finishes.

Back-pressure: each actor holds at most ``QUEUE_PER_ACTOR`` studies (one analysing, one
waiting), so reading never runs ahead of inference and the driver's memory holds only the
study list. An actor that dies (its node stopped, the process killed or out of memory)
has its studies given to the others; a study is tried ``attempts`` times in all, then
recorded as failed with the reason and a NEEDS_REVIEW result. Actors are replaced while
the cluster has free CPUs for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsight.analysis import AnalysisOptions, StudyInput, StudyOutcome
from medsight.analysis.devices import device_key
from medsight.analysis.runner import OUT_OF_ROOM, write_unanalysed_study
from medsight.archive.cluster import connect, make_actor_class
from medsight.archive.state import ArchiveState, StorageError
from medsight.errors import ConfigurationError
from medsight.reporting import append_provenance

logger = logging.getLogger(__name__)

__all__ = ["ArchiveProgress", "ArchiveReport", "request_of", "run_archive"]

QUEUE_PER_ACTOR = 2
DIED = "the worker analysing this study died {n} time(s) (node lost, killed, or out of memory?)"
#: how long to wait for a worker when every actor has died and none can be started
NO_WORKER_GRACE_S = 120.0


@dataclass
class ArchiveProgress:
    total: int  # studies to analyse in this run (already done ones excluded)
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed

    @property
    def per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60.0 * (self.done + self.failed) / elapsed if elapsed > 0 else 0.0


@dataclass
class ArchiveReport:
    studies: int  # found in SOURCE
    already_done: int  # skipped: done by an earlier run of the same request
    duplicates: int  # the same study listed again (analysed once)
    progress: ArchiveProgress
    failed: list[dict[str, Any]] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)  # host:pid of each actor that started


def request_of(study: StudyInput, options: AnalysisOptions) -> str:
    """What was asked of a study: the same study under another request is not done."""
    asked = [
        f"task={options.task}",
        "image_tasks=" + ",".join(sorted({s.task or "" for s in study.images})),
        "outputs=" + ",".join(sorted(options.outputs)),
        f"backend={options.backend}",
        f"tta={options.tta}",
        f"level={options.slide_level}",
        "dirs=" + ",".join(str(d) for d in options.tasks_dirs),
    ]
    return hashlib.sha256("|".join(asked).encode()).hexdigest()[:16]


class _Workers:
    """The live actors, the ones starting, and the studies each holds."""

    def __init__(self, ray: Any, options: AnalysisOptions, target: int, cpus: float) -> None:
        self.ray = ray
        self.actor_class = make_actor_class(cpus)
        self.options = options
        self.target = target
        self.cpus = cpus
        self.live: dict[int, Any] = {}
        self.starting: dict[Any, tuple[int, Any]] = {}  # ready ref -> (id, handle)
        self.load: dict[int, int] = {}
        self.names: list[str] = []
        self._next = 0

    def top_up(self) -> None:
        """Start actors up to the target while the cluster has CPUs for them."""
        free = self.ray.available_resources().get("CPU", 0.0)
        while len(self.live) + len(self.starting) < self.target and free >= self.cpus:
            handle = self.actor_class.remote(self.options)
            self.starting[handle.ready.remote()] = (self._next, handle)
            self._next += 1
            free -= self.cpus

    def started(self, ref: Any) -> None:
        number, handle = self.starting.pop(ref)
        try:
            self.names.append(self.ray.get(ref))
        except self.ray.exceptions.RayError as exc:
            logger.warning("an analysis worker failed to start: %s", exc)
            return
        self.live[number] = handle
        self.load[number] = 0

    def lost(self, number: int) -> None:
        handle = self.live.pop(number, None)
        self.load.pop(number, None)
        if handle is not None:
            with contextlib.suppress(Exception):  # already gone is what we want
                self.ray.kill(handle, no_restart=True)

    def free_slot(self) -> int | None:
        open_ = [n for n, used in self.load.items() if used < QUEUE_PER_ACTOR]
        return min(open_, key=lambda n: self.load[n]) if open_ else None


def run_archive(
    studies: list[StudyInput],
    dest: Path,
    options: AnalysisOptions,
    *,
    address: str | None = None,
    cpus: int | None = None,
    cpus_per_actor: float = 1.0,
    attempts: int = 3,
    on_progress: Callable[[ArchiveProgress], None] | None = None,
) -> ArchiveReport:
    """Analyse ``studies`` into ``dest`` on Ray; resumable (studies done by an earlier run
    of the same request are skipped)."""
    report_progress = on_progress or (lambda progress: None)
    with ArchiveState(dest) as state:
        try:
            options.device_key = options.device_key or device_key(dest)
        except OSError as exc:
            raise StorageError(f"cannot write to DEST ({exc.strerror or exc})", path=dest) from exc
        unique: dict[str, StudyInput] = {}
        for study in studies:
            unique.setdefault(study.key, study)
        requests = {key: request_of(study, options) for key, study in unique.items()}
        todo = [s for k, s in unique.items() if not state.is_done(k, requests[k])]
        report = ArchiveReport(
            studies=len(studies),
            already_done=len(unique) - len(todo),
            duplicates=len(studies) - len(unique),
            progress=ArchiveProgress(total=len(todo)),
        )
        report_progress(report.progress)
        if not todo:
            return report
        resources = connect(address, cpus=cpus)
        import ray

        try:
            target = max(1, int(resources.get("CPU", 1) // cpus_per_actor))
            workers = _Workers(ray, options, target, cpus_per_actor)
            _drive(
                ray,
                workers,
                todo,
                requests,
                dest,
                options,
                state,
                report,
                attempts,
                report_progress,
            )
            report_progress(report.progress)
            report.workers = workers.names
        finally:
            ray.shutdown()
    return report


def _drive(
    ray: Any,
    workers: _Workers,
    todo: list[StudyInput],
    requests: dict[str, str],
    dest: Path,
    options: AnalysisOptions,
    state: ArchiveState,
    report: ArchiveReport,
    attempts: int,
    report_progress: Callable[[ArchiveProgress], None],
) -> None:
    pending: deque[tuple[StudyInput, int]] = deque((study, 0) for study in todo)
    inflight: dict[Any, tuple[int, StudyInput, int, float]] = {}
    alone_since: float | None = None
    while pending or inflight:
        workers.top_up()
        while pending and (slot := workers.free_slot()) is not None:
            study, tries = pending.popleft()
            ref = workers.live[slot].analyze.remote(study, str(dest))
            inflight[ref] = (slot, study, tries + 1, time.monotonic())
            workers.load[slot] += 1
        waiting = list(inflight) + list(workers.starting)
        if not waiting:  # no worker alive and none can start now
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > NO_WORKER_GRACE_S:
                raise ConfigurationError(
                    f"no analysis worker is left in the Ray cluster ({len(pending)} studies "
                    "not analysed; rerun the same command to continue)"
                )
            time.sleep(1.0)
            continue
        alone_since = None
        ready, _ = ray.wait(waiting, num_returns=1, timeout=2.0)
        report_progress(report.progress)
        for ref in ready:
            if ref in workers.starting:
                workers.started(ref)
                continue
            slot, study, tries, began = inflight.pop(ref)
            if slot in workers.load:
                workers.load[slot] -= 1
            try:
                outcome: StudyOutcome = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the analysis itself raised
                cause = exc.cause if exc.cause is not None else exc
                if isinstance(cause, OSError) and cause.errno in OUT_OF_ROOM:
                    raise StorageError(
                        f"cannot write the results ({cause.strerror}); the studies recorded "
                        "so far stay done: rerun the same command when DEST has room",
                        path=dest,
                    ) from None
                _fail(
                    study,
                    f"internal error: {type(cause).__name__}: {cause}",
                    requests,
                    dest,
                    options,
                    state,
                    report,
                    tries,
                )
                continue
            except ray.exceptions.RayError as exc:  # the worker or its node is gone
                workers.lost(slot)
                if tries < attempts:
                    logger.warning(
                        "study %s: worker lost (%s); retrying", study.key, type(exc).__name__
                    )
                    pending.append((study, tries))
                else:
                    _fail(
                        study,
                        DIED.format(n=tries),
                        requests,
                        dest,
                        options,
                        state,
                        report,
                        tries,
                        unanalysed=True,
                    )
                continue
            _finish(
                outcome,
                study,
                requests[study.key],
                dest,
                state,
                report,
                tries,
                time.monotonic() - began,
            )


def _finish(
    outcome: StudyOutcome,
    study: StudyInput,
    request: str,
    dest: Path,
    state: ArchiveState,
    report: ArchiveReport,
    tries: int,
    seconds: float,
) -> None:
    """Provenance first, then the state line: a crash between the two re-analyses the
    study on the rerun rather than leaving it done without provenance."""
    try:
        for entry in outcome.provenance:
            append_provenance(dest / "provenance.jsonl", entry)
    except OSError as exc:
        raise StorageError(f"cannot append provenance ({exc.strerror or exc})", path=dest) from exc
    failures = [f"{f['what']}: {f['reason']}" for f in outcome.failures]
    if outcome.failed:
        state.record(
            study.key,
            "failed",
            request,
            attempts=tries,
            error="; ".join(failures),
            label=study.label,
            seconds=round(seconds, 3),
        )
        report.progress.failed += 1
        report.failed.append(
            {
                "key": study.key,
                "label": study.label,
                "error": "; ".join(failures),
                "exit_code": outcome.exit_code,
            }
        )
    else:
        state.record(
            study.key,
            "done",
            request,
            attempts=tries,
            label=study.label,
            partial_failures=failures,
            seconds=round(seconds, 3),
        )
        report.progress.done += 1


def _fail(
    study: StudyInput,
    reason: str,
    requests: dict[str, str],
    dest: Path,
    options: AnalysisOptions,
    state: ArchiveState,
    report: ArchiveReport,
    tries: int,
    *,
    unanalysed: bool = False,
) -> None:
    """Record a study that could not be analysed (and, when no result.json was written,
    a NEEDS_REVIEW one with the reason: it reaches the worklist, never reads as negative)."""
    if unanalysed or not (dest / study.key / "result.json").is_file():
        try:
            write_unanalysed_study(study.key, dest, reason, options)
        except OSError as exc:
            raise StorageError(f"cannot write a result ({exc.strerror or exc})", path=dest) from exc
    state.record(
        study.key, "failed", requests[study.key], attempts=tries, error=reason, label=study.label
    )
    report.progress.failed += 1
    report.failed.append({"key": study.key, "label": study.label, "error": reason, "exit_code": 1})
