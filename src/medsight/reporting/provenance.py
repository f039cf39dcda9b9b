"""The local provenance log: one JSON line per analysis, appended, never rewritten."""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["append_provenance"]


def append_provenance(log: Path, record: dict[str, Any]) -> None:
    """Append ``record`` (with the time) as one line; flushed and fsynced before returning.
    Safe from several processes (``analyze --jobs``, service workers): a line longer than the
    write buffer takes several writes, so the file is locked while it is written."""
    line = {"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"), **record}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        handle.write(json.dumps(line, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
