"""``DEST/archive-state.jsonl``: which studies of an archive run are done or failed.

One JSON line per finished study, appended with a single ``write`` on an ``O_APPEND``
descriptor and flushed to disk before the next study is counted, so a crash (``kill -9``,
power loss, a full disk) leaves at most one torn last line. Reading skips a torn line and
the next append starts on a fresh line, so the file stays consistent whatever happened.
The newest line for a study wins: a study that failed and later succeeded is done.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.errors import InvalidInputError

__all__ = ["STATE_FILE", "ArchiveState", "StorageError"]

STATE_FILE = "archive-state.jsonl"


class StorageError(InvalidInputError):
    """DEST cannot be written (read-only, full, gone): exit code 2."""


@dataclass(frozen=True)
class StudyRecord:
    key: str
    state: str  # "done" or "failed"
    request: str  # what was asked (task and outputs): a different request is not done
    line: dict[str, Any]


class ArchiveState:
    """The state file of one DEST: read once at start, appended as studies finish."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / STATE_FILE
        self.records: dict[tuple[str, str], StudyRecord] = {}
        self.torn_lines = 0
        self._fd: int | None = None

    def open(self) -> ArchiveState:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if self.path.stat().st_size and not self._ends_with_newline():
                os.write(self._fd, b"\n")  # isolate a torn last line
        except OSError as exc:
            raise StorageError(
                f"cannot write the archive state ({exc.strerror or exc})", path=self.path
            ) from exc
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ArchiveState:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def _load(self) -> None:
        if not self.path.is_file():
            return
        for raw in self.path.read_bytes().splitlines():
            try:
                line = json.loads(raw)
                record = StudyRecord(line["key"], line["state"], line["request"], line)
            except (ValueError, KeyError, TypeError):
                self.torn_lines += 1
                continue
            self.records[(record.key, record.request)] = record

    def is_done(self, key: str, request: str) -> bool:
        record = self.records.get((key, request))
        return record is not None and record.state == "done"

    def done_keys(self, request: str) -> list[str]:
        return [k for (k, r), rec in self.records.items() if r == request and rec.state == "done"]

    def failed(self, request: str) -> list[StudyRecord]:
        return [
            rec for (_, r), rec in self.records.items() if r == request and rec.state == "failed"
        ]

    def record(self, key: str, state: str, request: str, **details: Any) -> None:
        """Append one study's outcome (durable when this returns)."""
        assert self._fd is not None, "the state file is not open"
        line = {
            "key": key,
            "state": state,
            "request": request,
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **details,
        }
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a short write (full disk): the line is torn
                raise OSError(28, "No space left on device")
            os.fsync(self._fd)
        except OSError as exc:
            raise StorageError(
                f"cannot record study {key} ({exc.strerror or exc}); the studies recorded "
                "before it stay done, rerun the same command when the disk has room",
                path=self.path,
            ) from exc
        self.records[(key, request)] = StudyRecord(key, state, request, line)
