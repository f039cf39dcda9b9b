"""Analyse many studies: one after another, or several at once in worker processes.

Each worker is a spawned process whose torch and ONNX Runtime use cores/jobs threads, for
machines with more cores than one study keeps busy. On the 2-core reference machine it makes
little difference for 3D segmentation, which already runs two window streams: four CT
volumes took 25.0 s with two jobs against 23.3 s with one in one run, 16.5 s against 18.4 s
in another (benchmarks/bench_inference.py); a worker takes about 4 s to start. Memory grows
with the number of jobs: each holds its own study and model.

Studies that share a key (the same file given twice) go to the same job, one after the
other, because they write to the same folder. A job process that dies (killed, out of
memory) takes none of the other studies with it: the studies it had not finished are rerun
one at a time, each in a fresh process, and a study whose process dies again is recorded as
failed with that reason (NEEDS_REVIEW in its result.json).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from medsight.analysis.inputs import StudyInput
from medsight.analysis.runner import (
    AnalysisOptions,
    StudyOutcome,
    TaskSource,
    analyze_study,
    write_unanalysed_study,
)

logger = logging.getLogger(__name__)

__all__ = ["analyze_studies"]

#: what a study whose process died is marked with (the study may hold the cause)
DIED = "the analysis process died while analysing this study (killed, or out of memory?)"

_worker_tasks: TaskSource | None = None  # one per worker process, reused across its studies


def analyze_studies(
    studies: list[StudyInput],
    out: Path,
    options: AnalysisOptions,
    *,
    jobs: int = 1,
    on_done: Callable[[StudyOutcome], None] | None = None,
    tasks: TaskSource | None = None,
) -> list[StudyOutcome]:
    """Analyse ``studies`` into ``out`` with ``jobs`` worker processes (1: in this process).
    Returns the outcomes in the order of ``studies``; ``on_done`` is called as each ends.
    Workers are spawned, so they import the caller's main module: a script that calls this
    with ``jobs`` > 1 needs the ``if __name__ == "__main__":`` guard. ``tasks``: tasks already
    loaded for ``options``, reused when the studies run in this process."""
    report = on_done or (lambda outcome: None)
    units = _units(studies)
    if jobs <= 1 or len(units) <= 1:
        tasks = tasks or TaskSource(options)
        outcomes = []
        for study in studies:
            outcomes.append(analyze_study(study, out, options, tasks=tasks))
            report(outcomes[-1])
        return outcomes

    threads = max(1, (os.cpu_count() or 1) // jobs)
    done: dict[int, StudyOutcome] = {}
    unfinished: list[int] = []
    with _pool(jobs, options, threads) as pool:
        futures: dict[Future[list[StudyOutcome]], list[int]] = {
            pool.submit(_analyze_unit, [studies[i] for i in unit], out): unit for unit in units
        }
        for future in as_completed(futures):
            unit = futures[future]
            try:
                results = future.result()
            except BrokenProcessPool:
                unfinished.extend(unit)
                continue
            for index, outcome in zip(unit, results, strict=True):
                done[index] = outcome
                report(outcome)
    if unfinished:
        logger.warning(
            "an analysis process died; rerunning %d unfinished study(ies) one at a time",
            len(unfinished),
        )
    for index in sorted(unfinished):
        done[index] = _rerun_alone(studies[index], out, options)
        report(done[index])
    return [done[index] for index in range(len(studies))]


def _units(studies: list[StudyInput]) -> list[list[int]]:
    """Indices of ``studies`` grouped by study key, in first-seen order."""
    by_key: dict[str, list[int]] = {}
    for index, study in enumerate(studies):
        by_key.setdefault(study.key, []).append(index)
    return list(by_key.values())


def _pool(jobs: int, options: AnalysisOptions, threads: int) -> ProcessPoolExecutor:
    # spawn, not fork: the parent may hold torch or ONNX Runtime thread pools, which a fork
    # copies in an unusable state
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(replace(options, threads=threads), threads),
    )


def _start_worker(options: AnalysisOptions, threads: int) -> None:
    import torch

    global _worker_tasks
    torch.set_num_threads(threads)
    _worker_tasks = TaskSource(options)


def _analyze_unit(studies: list[StudyInput], out: Path) -> list[StudyOutcome]:
    assert _worker_tasks is not None, "worker started without _start_worker"
    return [
        analyze_study(study, out, _worker_tasks.options, tasks=_worker_tasks) for study in studies
    ]


def _rerun_alone(study: StudyInput, out: Path, options: AnalysisOptions) -> StudyOutcome:
    """One study in a fresh process of its own, so that a second death is its own."""
    try:
        with _pool(1, options, os.cpu_count() or 1) as pool:
            (outcome,) = pool.submit(_analyze_unit, [study], out).result()
        return outcome
    except BrokenProcessPool:
        logger.error("the analysis process died again on study %s", study.key)
    path = write_unanalysed_study(study.key, out, DIED, options, exit_code=70)
    document = json.loads(path.read_text())
    return StudyOutcome(
        study.key, study.label, path, failures=document["failures"], priority=document["priority"]
    )
