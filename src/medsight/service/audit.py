"""The append-only audit log: who did what to which study, and when, including every
inference (input UIDs, task, model hash, operating point, outputs).

Each row carries the hash of the row before it, and its own hash over its content and that
link, so an edited, removed or reordered row breaks the chain (`verify`). ``prev_hash`` is
unique: two writers that read the same last row cannot both append after it; the loser
retries on the new end of the chain.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["AuditLog", "AuditVerification"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    rows: int
    first_bad_id: int | None = None
    problem: str = ""


def _row_hash(prev_hash: str, at: str, actor: str, action: str, subject: str, detail: str) -> str:
    canonical = json.dumps([prev_hash, at, actor, action, subject, detail], ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditLog:
    def __init__(self, engine: Any) -> None:
        from medsight.service import schema

        self.engine = engine
        schema.ensure_schema(engine)
        self.table = schema.audit_log

    def append(
        self, actor: str, action: str, subject: str, detail: Any, *, also: Any = None
    ) -> int:
        """Append one row, in its own transaction; ``also(connection)`` runs in that same
        transaction (e.g. the feedback row the entry describes), so both land or neither."""
        from sqlalchemy import insert, select
        from sqlalchemy.exc import IntegrityError, OperationalError

        table = self.table
        text = json.dumps(detail, sort_keys=True, default=str)
        for attempt in range(50):
            at = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
            try:
                with self.engine.begin() as connection:
                    last = connection.execute(
                        select(table.c.hash).order_by(table.c.id.desc()).limit(1)
                    ).scalar()
                    prev = last or GENESIS
                    if also is not None:
                        also(connection)
                    row = connection.execute(
                        insert(table).values(
                            at=at,
                            actor=actor,
                            action=action,
                            subject=subject,
                            detail=text,
                            prev_hash=prev,
                            hash=_row_hash(prev, at, actor, action, subject, text),
                        )
                    )
                    return int(row.inserted_primary_key[0])
            except (IntegrityError, OperationalError):  # another writer appended first
                time.sleep(0.01 * (attempt + 1))
        raise RuntimeError("could not append to the audit log (persistent contention)")

    def query(
        self,
        *,
        subject: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        from sqlalchemy import select

        table = self.table
        query = select(table).order_by(table.c.id.desc())
        for column, value in (("subject", subject), ("actor", actor), ("action", action)):
            if value:
                query = query.where(table.c[column] == value)
        query = query.limit(max(1, min(limit, 1000))).offset(max(0, offset))
        with self.engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def verify(self) -> AuditVerification:
        """Walk the chain from the first row; the first row whose link or hash does not
        match is reported."""
        from sqlalchemy import select

        table = self.table
        prev, count = GENESIS, 0
        with self.engine.connect() as connection:
            for row in connection.execute(select(table).order_by(table.c.id)).mappings():
                count += 1
                if row["prev_hash"] != prev:
                    return AuditVerification(False, count, row["id"], "broken link")
                expected = _row_hash(
                    prev, row["at"], row["actor"], row["action"], row["subject"], row["detail"]
                )
                if row["hash"] != expected:
                    return AuditVerification(False, count, row["id"], "content changed")
                prev = row["hash"]
        return AuditVerification(True, count)
