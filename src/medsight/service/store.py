"""Durable instance store: each received DICOM instance is written to the file store
(private temporary file, fsync, rename, fsync of the folder) and recorded in the database in
a committed transaction before its sender is told it was stored. Instances arriving at the
same time over parallel associations share one commit (group commit). A SOP Instance UID is
stored exactly once: a resend is acknowledged without storing it again, and the stored file
is never replaced.

SQLite in WAL mode under the data directory by default; any SQLAlchemy URL otherwise.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsight.analysis.inputs import study_key_of
from medsight.errors import InvalidInputError
from medsight.service import schema
from medsight.service.events import log_event
from medsight.service.queue import JobQueue
from medsight.service.schema import ensure_schema
from medsight.tasks.task import sha256_file

if TYPE_CHECKING:
    from medsight.deid import Pseudonyms

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


@dataclass
class _Pending:
    row: dict[str, Any]
    partial: Path | None  # the private file written by the sender's thread, until claimed
    path: Path
    done: threading.Event = field(default_factory=threading.Event)
    new: bool = False
    error: BaseException | None = None

    def place(self) -> None:
        """Move the written file to its final name (already done on a retried commit)."""
        if self.partial is not None:
            self.partial.replace(self.path)
            self.partial = None

    def discard(self) -> None:
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)
            self.partial = None


class _GroupCommit:
    """Group commit: the callers of ``submit`` wait while one thread commits everything
    that is waiting in one go, so N parallel senders share one fsync instead of queueing
    for N of them. Each caller returns only after its own row is committed."""

    def __init__(self, commit: Callable[[list[_Pending]], None]) -> None:
        self._commit = commit
        self._waiting: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def submit(self, pending: _Pending) -> bool:
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()
        self._waiting.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.new

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while not self._waiting.empty():
                batch.append(self._waiting.get())
            try:
                self._commit(batch)
            except BaseException as exc:  # handed to every caller in the batch
                for pending in batch:
                    pending.error = exc
                    pending.discard()
            for pending in batch:
                pending.done.set()


def _check_uid(name: str, value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 64 or not set(value) <= _UID_CHARACTERS:
        raise InvalidInputError(f"{name} {value!r} is not a valid DICOM UID")
    return value


class InstanceStore:
    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        *,
        pseudonyms: Pseudonyms | None = None,
        **queue_options: Any,
    ) -> None:
        from sqlalchemy import create_engine, event

        #: with pseudonyms, every instance is de-identified before it is written (never the
        #: original on disk), so everything downstream sees pseudonyms only
        self.pseudonyms = pseudonyms
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

        ensure_schema(self.engine)
        self.instances = schema.instances
        self.routes = schema.routes
        self.queue = JobQueue(self.engine, **queue_options)
        self._committer = _GroupCommit(self._commit_batch)

    def _path(self, study: str, series: str, sop: str) -> Path:
        return self.files / study / series / f"{sop}.dcm"

    def store(self, encoded: bytes, identifiers: dict[str, str], calling_ae: str) -> bool:
        """Store one encoded DICOM file (preamble and file meta included); True when new,
        False for a resend of a stored SOP Instance UID. Returns only once the file and its
        row are durable."""
        from sqlalchemy.exc import IntegrityError

        if self.pseudonyms is not None:
            encoded, identifiers = self._deidentified(encoded, identifiers)
        sop = _check_uid("SOPInstanceUID", identifiers.get("SOPInstanceUID", ""))
        study = _check_uid("StudyInstanceUID", identifiers.get("StudyInstanceUID", ""))
        series = _check_uid("SeriesInstanceUID", identifiers.get("SeriesInstanceUID", ""))
        sop_class = _check_uid("SOPClassUID", identifiers.get("SOPClassUID", ""))
        try:
            new = self._store(encoded, sop, study, series, sop_class, calling_ae)
        except IntegrityError:  # another process stored the same instance first
            new = False
        log_event(
            "received" if new else "resend",
            study_key=study_key_of(study),
            sop_instance_uid=sop,
            source=calling_ae,
        )
        return new

    def _deidentified(
        self, encoded: bytes, identifiers: dict[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        from medsight.deid import deidentify_bytes

        assert self.pseudonyms is not None
        _check_uid("SOPInstanceUID", identifiers.get("SOPInstanceUID", ""))
        try:
            encoded, dataset = deidentify_bytes(encoded, self.pseudonyms)
        except Exception as exc:  # not parseable: refused, the sender keeps it
            raise InvalidInputError(f"cannot be de-identified ({type(exc).__name__})") from None
        replaced = {k: str(dataset.get(k, "") or "") for k in identifiers}
        replaced["SOPClassUID"] = identifiers.get("SOPClassUID", "")  # a class, not a person
        return encoded, replaced

    def _store(
        self, encoded: bytes, sop: str, study: str, series: str, sop_class: str, calling_ae: str
    ) -> bool:
        # The bytes are written and fsynced to a private partial file by the caller's
        # thread, so parallel associations write at the same time. The group commit then
        # puts each new instance's file in place (a resend's is discarded: the stored file
        # is never replaced), fsyncs the folders, and records the rows in one transaction.
        # A recorded instance always has its durable file; a crash in between leaves a
        # file without a row, which the sender's resend replaces.
        path = self._path(study, series, sop)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{threading.get_ident()}.partial")
        with partial.open("wb") as handle:
            handle.write(encoded)
            handle.flush()
            os.fsync(handle.fileno())
        row = {
            "sop_instance_uid": sop,
            "study_instance_uid": study,
            "series_instance_uid": series,
            "sop_class_uid": sop_class,
            "path": str(path.relative_to(self.data_dir)),
            "sha256": hashlib.sha256(encoded).hexdigest(),
            "size": len(encoded),
            "calling_ae": calling_ae,
        }
        return self._committer.submit(_Pending(row, partial, path))

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """One transaction (one WAL fsync) and one fsync per folder for every instance
        that arrived while the previous batch was committing."""
        from sqlalchemy.exc import IntegrityError

        try:
            with self.engine.begin() as connection:
                self._commit_in(connection, batch)
        except IntegrityError:  # another process recorded one of them: one by one
            for pending in batch:
                pending.new = False
                try:
                    with self.engine.begin() as connection:
                        self._commit_in(connection, [pending])
                except IntegrityError:
                    pending.new = False
                    pending.discard()

    def _commit_in(self, connection: Any, batch: list[_Pending]) -> None:
        from sqlalchemy import select

        table = self.instances
        seen: set[str] = set()
        fresh = []
        for pending in batch:
            sop = pending.row["sop_instance_uid"]
            known = connection.execute(
                select(table.c.sop_instance_uid).where(table.c.sop_instance_uid == sop)
            ).first()
            if known is not None or sop in seen:  # a resend: the stored file stays as it is
                pending.discard()
                continue
            seen.add(sop)
            fresh.append(pending)
        for pending in fresh:
            pending.place()
        for folder in {pending.path.parent for pending in fresh}:
            descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        for pending in fresh:
            self._record(connection, pending.row)
            pending.new = True

    def _record(self, connection: Any, row: dict[str, Any]) -> None:
        from sqlalchemy import insert

        received = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        connection.execute(insert(self.instances).values(**row, received_at=received))
        self.queue.received(row["study_instance_uid"], connection)

    def remove_partials(self) -> int:
        """Delete private files left by writes that a crash interrupted (never recorded,
        never acknowledged). Only the receiving process may call this, before it listens."""
        removed = 0
        for partial in self.files.rglob("*.partial"):
            partial.unlink(missing_ok=True)
            removed += 1
        return removed

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
