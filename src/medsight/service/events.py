"""The service's log: one line per event, ``key=value`` pairs an operator can grep and a log
shipper can parse, with study keys and UIDs but never a patient's name or ID.

Events: ``received`` (an instance stored), ``study-complete`` (its quiet period passed),
``analysed``, ``delivered`` and ``failed``; plus the service's own start, restarts and
alerts. Warnings from libraries (numpy, highdicom, pydicom...) are captured into the same
log as one ``event=warning`` line, never printed raw to the terminal.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
import warnings
from typing import Any

__all__ = ["configure_service_logging", "log_event"]

_logger = logging.getLogger("medsight.events")
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@+")


def _value(value: Any) -> str:
    text = str(value)
    if text and set(text) <= _SAFE:
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One event line; ``fields`` hold keys and UIDs only (callers pass no identifiers)."""
    _logger.log(level, "", extra={"event": event, "fields": fields})


class KeyValueFormatter(logging.Formatter):
    """``at=... level=... event=... key=value ...``; a plain log record becomes
    ``event=log logger=... message="..."`` so every line has the same shape."""

    def format(self, record: logging.LogRecord) -> str:
        at = _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds")
        parts = [f"at={at}", f"level={record.levelname.lower()}"]
        event = getattr(record, "event", None)
        if event is not None:
            parts.append(f"event={event}")
            parts += [f"{k}={_value(v)}" for k, v in getattr(record, "fields", {}).items()]
        elif record.name == "py.warnings":
            parts += ["event=warning", f"message={_value(_first_line(record.getMessage()))}"]
        else:
            parts += [
                "event=log",
                f"logger={record.name}",
                f"message={_value(record.getMessage())}",
            ]
        if record.exc_info and record.exc_info[0] is not None:
            parts.append(f"exception={_value(record.exc_info[0].__name__)}")
        return " ".join(parts)


def _first_line(message: str) -> str:
    """A captured warning's text: ``path:line: Category: text``, without the source line
    that ``warnings`` appends."""
    return message.strip().splitlines()[0] if message.strip() else message


def configure_service_logging(level: int = logging.INFO) -> None:
    """Route every log record and warning to stderr in the one-line format (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("medsight").setLevel(level)
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each distinct warning once per place, into the log
    for noisy in ("pynetdicom", "uvicorn.error", "alembic"):  # their INFO lines carry PHI or noise
        logging.getLogger(noisy).setLevel(logging.WARNING)
