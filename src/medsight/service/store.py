"""Durable instance store: each received DICOM instance is written to the file store
(temporary file, fsync, rename, fsync of the folder) and recorded in the database in one
committed transaction before its sender is told it was stored. A SOP Instance UID is stored
exactly once: a resend is acknowledged without storing it again.

SQLite in WAL mode under the data directory by default; any SQLAlchemy URL otherwise.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.errors import InvalidInputError
from medsight.service.queue import JobQueue
from medsight.tasks.task import sha256_file

__all__ = ["InstanceStore", "StoredInstance"]

_UID_CHARACTERS = set("0123456789.")


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    path: Path
    sha256: str
    calling_ae: str
    received_at: str


def _check_uid(name: str, value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 64 or not set(value) <= _UID_CHARACTERS:
        raise InvalidInputError(f"{name} {value!r} is not a valid DICOM UID")
    return value


class InstanceStore:
    def __init__(
        self, data_dir: Path, database_url: str | None = None, **queue_options: Any
    ) -> None:
        from sqlalchemy import (
            Column,
            Integer,
            MetaData,
            String,
            Table,
            create_engine,
            event,
        )

        self.data_dir = Path(data_dir)
        self.files = self.data_dir / "instances"
        self.files.mkdir(parents=True, exist_ok=True)
        url = database_url or f"sqlite:///{self.data_dir / 'medsight.db'}"
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _pragmas(connection: Any, _record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        metadata = MetaData()
        self.instances = Table(
            "instances",
            metadata,
            Column("sop_instance_uid", String(64), primary_key=True),
            Column("study_instance_uid", String(64), nullable=False, index=True),
            Column("series_instance_uid", String(64), nullable=False),
            Column("sop_class_uid", String(64), nullable=False),
            Column("path", String(1024), nullable=False),
            Column("sha256", String(64), nullable=False),
            Column("size", Integer, nullable=False),
            Column("calling_ae", String(64), nullable=False),  # or the HTTP intake and user
            Column("received_at", String(32), nullable=False),
        )
        self.routes = Table(  # a task chosen for a study at intake (photo uploads)
            "routes",
            metadata,
            Column("study_instance_uid", String(64), primary_key=True),
            Column("task", String(128), nullable=False),
        )
        metadata.create_all(self.engine)
        self.queue = JobQueue(self.engine, **queue_options)
        self._lock = threading.Lock()  # one writer per process; the database serialises others

    def _path(self, study: str, series: str, sop: str) -> Path:
        return self.files / study / series / f"{sop}.dcm"

    def store(self, encoded: bytes, identifiers: dict[str, str], calling_ae: str) -> bool:
        """Store one encoded DICOM file (preamble and file meta included); True when new,
        False for a resend of a stored SOP Instance UID. Returns only once the file and its
        row are durable."""
        from sqlalchemy.exc import IntegrityError

        sop = _check_uid("SOPInstanceUID", identifiers.get("SOPInstanceUID", ""))
        study = _check_uid("StudyInstanceUID", identifiers.get("StudyInstanceUID", ""))
        series = _check_uid("SeriesInstanceUID", identifiers.get("SeriesInstanceUID", ""))
        sop_class = _check_uid("SOPClassUID", identifiers.get("SOPClassUID", ""))
        try:
            return self._store(encoded, sop, study, series, sop_class, calling_ae)
        except IntegrityError:  # another process stored the same instance first
            return False

    def _store(
        self, encoded: bytes, sop: str, study: str, series: str, sop_class: str, calling_ae: str
    ) -> bool:
        from sqlalchemy import insert, select

        if self._known(sop):
            return False
        # The file is written and made durable outside the database transaction, so
        # parallel associations write and fsync at the same time; only the short
        # transaction is serialised. The row commits after the file is durable, so a
        # recorded instance always has its file; a crash in between leaves a file
        # without a row, which the sender's resend replaces.
        path = self._path(study, series, sop)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{threading.get_ident()}.partial")
        with partial.open("wb") as handle:
            handle.write(encoded)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        with self._lock, self.engine.begin() as connection:
            known = connection.execute(
                select(self.instances.c.sop_instance_uid).where(
                    self.instances.c.sop_instance_uid == sop
                )
            ).first()
            if known is not None:  # a parallel resend won: its file has the same name
                return False
            connection.execute(
                insert(self.instances).values(
                    sop_instance_uid=sop,
                    study_instance_uid=study,
                    series_instance_uid=series,
                    sop_class_uid=sop_class,
                    path=str(path.relative_to(self.data_dir)),
                    sha256=hashlib.sha256(encoded).hexdigest(),
                    size=len(encoded),
                    calling_ae=calling_ae,
                    received_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
                )
            )
            self.queue.received(study, connection)
        return True

    def _known(self, sop: str) -> bool:
        from sqlalchemy import select

        with self.engine.connect() as connection:
            return (
                connection.execute(
                    select(self.instances.c.sop_instance_uid).where(
                        self.instances.c.sop_instance_uid == sop
                    )
                ).first()
                is not None
            )

    def route(self, study_instance_uid: str, task: str) -> None:
        """Run ``task`` on this study instead of the automatic selection."""
        from sqlalchemy import delete, insert

        study = _check_uid("StudyInstanceUID", study_instance_uid)
        with self.engine.begin() as connection:
            connection.execute(delete(self.routes).where(self.routes.c.study_instance_uid == study))
            connection.execute(insert(self.routes).values(study_instance_uid=study, task=task))

    def route_of(self, study_instance_uid: str) -> str | None:
        from sqlalchemy import select

        with self.engine.connect() as connection:
            return connection.execute(
                select(self.routes.c.task).where(
                    self.routes.c.study_instance_uid == study_instance_uid
                )
            ).scalar()

    def instances_of(self, study_instance_uid: str) -> list[StoredInstance]:
        from sqlalchemy import select

        table = self.instances
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table)
                .where(table.c.study_instance_uid == study_instance_uid)
                .order_by(table.c.received_at)
            ).mappings()
            return [
                StoredInstance(
                    sop_instance_uid=row["sop_instance_uid"],
                    study_instance_uid=row["study_instance_uid"],
                    series_instance_uid=row["series_instance_uid"],
                    sop_class_uid=row["sop_class_uid"],
                    path=self.data_dir / row["path"],
                    sha256=row["sha256"],
                    calling_ae=row["calling_ae"],
                    received_at=row["received_at"],
                )
                for row in rows
            ]

    def count(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(self.instances)).scalar_one()
            )

    def verify(self, instance: StoredInstance) -> bool:
        """The stored file still has the hash recorded when it was received."""
        return instance.path.is_file() and sha256_file(instance.path) == instance.sha256
