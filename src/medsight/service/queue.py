"""Durable job queue in the database: study completion by a quiet period, leases that expire
(a worker killed mid-job leaves its job to be taken again), retries with exponential backoff,
and a dead-letter state that keeps the last error.

Every state change is one committed transaction, and a job is claimed by a compare-and-set
update, so two workers never run the same lease.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.service import schema
from medsight.service.schema import ensure_schema

__all__ = ["Job", "JobQueue", "worker_name"]


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None when no such
    process runs: with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the name, which may hold spaces
    if fields[0] in ("Z", "X"):  # a zombie nobody reaped (a container's init may not): gone
        return None
    return fields[19]  # field 22: start time


def worker_name(pid: int | None = None) -> str:
    """``worker:<host>:<pid>:<start>``: enough to tell, after a crash, that it is gone."""
    pid = os.getpid() if pid is None else pid
    return f"worker:{socket.gethostname()[:32]}:{pid}:{_started(pid) or 0}"


def _gone(worker: str, host: str) -> bool:
    """True when ``worker`` ran on this host and that process no longer exists."""
    parts = worker.split(":")
    if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
        return False  # another host's worker (or an older name): its lease must expire
    return _started(int(parts[2])) != parts[3]


@dataclass(frozen=True)
class Job:
    id: int
    study_instance_uid: str
    revision: int
    attempts: int


class JobQueue:
    def __init__(
        self,
        engine: Any,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 5.0,
        lease_seconds: float = 600.0,
    ) -> None:

        self.engine = engine
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.lease_seconds = lease_seconds
        ensure_schema(engine)
        self.studies = schema.studies
        self.jobs = schema.jobs

    # --- intake side -----------------------------------------------------------------------
    def received(self, study_instance_uid: str, connection: Any, now: float | None = None) -> None:
        """Record an instance arrival inside the store's transaction. An instance arriving
        after the study was queued or analysed opens a new revision (a superseding result)."""
        from sqlalchemy import insert, select, update

        now = time.time() if now is None else now
        table = self.studies
        row = connection.execute(
            select(table.c.state, table.c.revision).where(
                table.c.study_instance_uid == study_instance_uid
            )
        ).first()
        if row is None:
            connection.execute(
                insert(table).values(
                    study_instance_uid=study_instance_uid,
                    last_received=now,
                    state="receiving",
                    revision=1,
                )
            )
            return
        revision = row.revision + (0 if row.state == "receiving" else 1)
        connection.execute(
            update(table)
            .where(table.c.study_instance_uid == study_instance_uid)
            .values(last_received=now, state="receiving", revision=revision)
        )

    def enqueue_quiet_studies(self, quiet_seconds: float, now: float | None = None) -> list[str]:
        """Queue every study that has received nothing for ``quiet_seconds``."""
        from sqlalchemy import and_, insert, select, update

        now = time.time() if now is None else now
        table = self.studies
        queued = []
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(table.c.study_instance_uid, table.c.revision, table.c.last_received).where(
                    and_(table.c.state == "receiving", table.c.last_received <= now - quiet_seconds)
                )
            ).all()
            for row in rows:
                connection.execute(
                    insert(self.jobs).values(
                        study_instance_uid=row.study_instance_uid,
                        revision=row.revision,
                        state="queued",
                        attempts=0,
                        failures=0,
                        available_at=now,
                        last_received=row.last_received,
                    )
                )
                connection.execute(
                    update(table)
                    .where(table.c.study_instance_uid == row.study_instance_uid)
                    .values(state="queued")
                )
                queued.append(row.study_instance_uid)
        return queued

    # --- worker side -----------------------------------------------------------------------
    def lease(self, worker: str, now: float | None = None) -> Job | None:
        """Claim the oldest runnable job: queued and due, or leased by a worker whose lease
        ran out (it crashed or was killed)."""
        from sqlalchemy import and_, or_, select, update

        now = time.time() if now is None else now
        jobs = self.jobs
        runnable = or_(
            and_(jobs.c.state == "queued", jobs.c.available_at <= now),
            and_(jobs.c.state == "leased", jobs.c.lease_until < now),
        )
        with self.engine.begin() as connection:
            for row in connection.execute(
                select(jobs).where(runnable).order_by(jobs.c.available_at, jobs.c.id).limit(5)
            ).mappings():
                claimed = connection.execute(
                    update(jobs)
                    .where(and_(jobs.c.id == row["id"], runnable))
                    .values(
                        state="leased",
                        lease_until=now + self.lease_seconds,
                        worker=worker,
                        attempts=row["attempts"] + 1,
                        started_at=now,
                    )
                )
                if claimed.rowcount == 1:
                    return Job(
                        row["id"], row["study_instance_uid"], row["revision"], row["attempts"] + 1
                    )
        return None

    def reclaim_leases_of_gone_workers(self, now: float | None = None) -> list[str]:
        """Put back at once the jobs leased by workers of this host that no longer exist (a
        killed server's, a crashed worker's): a crash delays a study by seconds, not by the
        lease time. Workers on other hosts keep their leases until they expire."""
        from sqlalchemy import and_, select, update

        now = time.time() if now is None else now
        host = socket.gethostname()[:32]
        jobs = self.jobs
        reclaimed = []
        with self.engine.begin() as connection:
            for row in connection.execute(
                select(jobs.c.id, jobs.c.worker, jobs.c.study_instance_uid).where(
                    jobs.c.state == "leased"
                )
            ):
                if not _gone(row.worker or "", host):
                    continue
                connection.execute(
                    update(jobs)
                    .where(and_(jobs.c.id == row.id, jobs.c.state == "leased"))
                    .values(state="queued", available_at=now, lease_until=None)
                )
                reclaimed.append(row.study_instance_uid)
        return reclaimed

    def complete(self, job: Job, result: str) -> None:
        from sqlalchemy import and_, update

        with self.engine.begin() as connection:
            connection.execute(
                update(self.jobs)
                .where(self.jobs.c.id == job.id)
                .values(
                    state="done",
                    result=result,
                    lease_until=None,
                    error=None,
                    finished_at=time.time(),
                )
            )
            connection.execute(
                update(self.studies)
                .where(
                    and_(
                        self.studies.c.study_instance_uid == job.study_instance_uid,
                        self.studies.c.revision == job.revision,
                        self.studies.c.state == "queued",
                    )
                )
                .values(state="done")
            )

    def fail(
        self, job: Job, error: str, now: float | None = None, *, permanent: bool = False
    ) -> str:
        """Retry later (exponential backoff) or, after ``max_attempts`` or for a
        ``permanent`` failure (bad input: a retry would fail the same way), dead-letter."""
        from sqlalchemy import update

        now = time.time() if now is None else now
        dead = permanent or job.attempts >= self.max_attempts
        values: dict[str, Any] = {
            "error": error[:4000],
            "lease_until": None,
            "failures": self.jobs.c.failures + 1,
        }
        if dead:
            values["state"] = "dead"
            values["finished_at"] = now
        else:
            values["state"] = "queued"
            values["available_at"] = now + self.backoff_seconds * 2 ** (job.attempts - 1)
        with self.engine.begin() as connection:
            connection.execute(update(self.jobs).where(self.jobs.c.id == job.id).values(**values))
        return str(values["state"])

    def states(self) -> dict[str, int]:
        from sqlalchemy import func, select

        with self.engine.connect() as connection:
            rows = connection.execute(
                select(self.jobs.c.state, func.count()).group_by(self.jobs.c.state)
            ).all()
        return {state: int(count) for state, count in rows}

    def jobs_of(self, study_instance_uid: str) -> list[dict[str, Any]]:
        from sqlalchemy import select

        with self.engine.connect() as connection:
            return [
                dict(row)
                for row in connection.execute(
                    select(self.jobs)
                    .where(self.jobs.c.study_instance_uid == study_instance_uid)
                    .order_by(self.jobs.c.id)
                ).mappings()
            ]
