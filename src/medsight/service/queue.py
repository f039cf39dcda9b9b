"""Durable job queue in the database: study completion by a quiet period, leases that expire
(a worker killed mid-job leaves its job to be taken again), retries with exponential backoff,
and a dead-letter state that keeps the last error.

Every state change is one committed transaction, and a job is claimed by a compare-and-set
update, so two workers never run the same lease.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Job", "JobQueue"]


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
        from sqlalchemy import (
            Column,
            Float,
            Integer,
            MetaData,
            String,
            Table,
            Text,
            UniqueConstraint,
        )

        self.engine = engine
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.lease_seconds = lease_seconds
        metadata = MetaData()
        self.studies = Table(
            "studies",
            metadata,
            Column("study_instance_uid", String(64), primary_key=True),
            Column("last_received", Float, nullable=False),
            Column("state", String(16), nullable=False),  # receiving | queued | done
            Column("revision", Integer, nullable=False),
        )
        self.jobs = Table(
            "jobs",
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("study_instance_uid", String(64), nullable=False, index=True),
            Column("revision", Integer, nullable=False),
            Column("state", String(16), nullable=False),  # queued | leased | done | dead
            Column("attempts", Integer, nullable=False),
            Column("available_at", Float, nullable=False),
            Column("lease_until", Float),
            Column("worker", String(64)),
            Column("error", Text),
            Column("failures", Integer, nullable=False, default=0),
            Column("result", Text),
            # for the latency metrics: the study's last arrival, the lease, the outcome
            Column("last_received", Float),
            Column("started_at", Float),
            Column("finished_at", Float),
            UniqueConstraint("study_instance_uid", "revision"),
        )
        metadata.create_all(engine)

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
