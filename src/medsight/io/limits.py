"""Resource limits on what a reader will decode: one hostile or broken file must not exhaust
memory, hang a worker, or overflow the interpreter's stack.

Each limit has a safe default that admits what medsight is for (a 512x512x800 CT, an enhanced
multi-frame MR, a 100,000-pixel-wide slide read region by region) and is set per process by an
environment variable ``MEDSIGHT_LIMIT_<NAME>`` (so service workers and Ray workers inherit it)
or by the global CLI option ``--limit NAME=VALUE``. A file over a limit is refused with a
:class:`ResourceLimitError` naming the limit and how to raise it: exit 2 in the CLI, a recorded
NEEDS_REVIEW result or a refused C-STORE in the service.

What each limit bounds, and where it is checked (before any pixel is decoded unless said):

- ``file_bytes``: the size of one file on disk (``stat``).
- ``header_bytes``: the bytes before the pixel data; for a Deflated transfer syntax, the
  inflated size of the whole dataset (measured by streaming inflation with a cap).
- ``sequence_depth``: nesting of sequences in a header (checked on the raw bytes before
  pydicom parses them recursively).
- ``frames``: frames in one file (NumberOfFrames) and in one decoded stack.
- ``frame_pixels``: Rows x Columns of one frame, one raster image or one slide region, as the
  header declares it and as a compressed codestream declares it.
- ``frame_bytes``: the decoded bytes of one frame (pixels x samples x bytes per sample).
- ``image_bytes``: the decoded bytes of one image (all frames of a stack).
- ``decode_seconds``: wall time spent decoding one input, checked between frames and files;
  a single frame's decode is bounded by ``frame_pixels``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from medsight.errors import InvalidInputError

__all__ = [
    "LIMIT_NAMES",
    "DecodeClock",
    "ReadLimits",
    "ResourceLimitError",
    "apply_limit_setting",
    "current_limits",
    "limit_message",
    "parse_limit_setting",
]

_ENV_PREFIX = "MEDSIGHT_LIMIT_"


class ResourceLimitError(InvalidInputError):
    """An input is over one of the configured resource limits (exit code 2)."""

    def __init__(self, message: str, *, path: str | Path | None = None, limit: str = "") -> None:
        self.limit = limit
        super().__init__(message, path=path)


def limit_message(limit: str, found: str, allowed: int | float) -> str:
    shown = f"{allowed:,}" if isinstance(allowed, int) else f"{allowed:g}"
    return (
        f"over the limit {limit}={shown}: {found} (a guard against files that would exhaust "
        f"memory or time; raise it with --limit {limit}=N or {_ENV_PREFIX}{limit.upper()})"
    )


@dataclass(frozen=True)
class ReadLimits:
    """Upper bounds for one input; see the module doc for what each one bounds."""

    file_bytes: int = 8 * 2**30
    header_bytes: int = 256 * 2**20
    sequence_depth: int = 64
    frames: int = 20_000
    frame_pixels: int = 2**28  # 16384 x 16384; a 13000 x 13000 photograph is admitted
    frame_bytes: int = 2**31
    image_bytes: int = 16 * 2**30
    decode_seconds: float = 600.0

    def check(self, limit: str, value: int | float, found: str, path: str | Path | None) -> None:
        """Raise :class:`ResourceLimitError` when ``value`` is over the limit ``limit``."""
        allowed = getattr(self, limit)
        if value > allowed:
            raise ResourceLimitError(limit_message(limit, found, allowed), path=path, limit=limit)

    def check_frame(
        self, rows: int, columns: int, samples: int, bytes_per_sample: int, path: str | Path | None
    ) -> None:
        """The declared size of one frame against ``frame_pixels`` and ``frame_bytes``."""
        pixels = rows * columns
        self.check("frame_pixels", pixels, f"a frame of {rows:,} x {columns:,} pixels", path)
        size = pixels * max(1, samples) * max(1, bytes_per_sample)
        self.check("frame_bytes", size, f"a frame of {size:,} decoded bytes", path)


LIMIT_NAMES = tuple(f.name for f in fields(ReadLimits))


def _parse_value(name: str, text: str) -> int | float:
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise InvalidInputError(f"limit {name} must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise InvalidInputError(f"limit {name} must be a positive finite number, got {text!r}")
    if name == "decode_seconds":
        return value
    if value != int(value):
        raise InvalidInputError(f"limit {name} must be a whole number, got {text!r}")
    return int(value)


def parse_limit_setting(setting: str) -> tuple[str, int | float]:
    """``NAME=VALUE`` (as given to ``--limit``) checked: a known name, a positive value."""
    name, separator, text = setting.partition("=")
    name = name.strip().lower().replace("-", "_")
    if not separator or name not in LIMIT_NAMES:
        raise InvalidInputError(
            f"--limit takes NAME=VALUE with NAME one of {', '.join(LIMIT_NAMES)}; got {setting!r}"
        )
    return name, _parse_value(name, text.strip())


def current_limits() -> ReadLimits:
    """The defaults with any ``MEDSIGHT_LIMIT_<NAME>`` environment settings applied."""
    changes: dict[str, int | float] = {}
    for name in LIMIT_NAMES:
        text = os.environ.get(_ENV_PREFIX + name.upper())
        if text:
            changes[name] = _parse_value(name, text)
    return replace(ReadLimits(), **changes) if changes else ReadLimits()  # type: ignore[arg-type]


def apply_limit_setting(setting: str) -> None:
    """Set one ``NAME=VALUE`` for this process and the workers it starts."""
    name, value = parse_limit_setting(setting)
    os.environ[_ENV_PREFIX + name.upper()] = str(value)


class DecodeClock:
    """The ``decode_seconds`` budget of one input, checked between frames and files."""

    def __init__(self, limits: ReadLimits, path: str | Path | None) -> None:
        self._limits = limits
        self._path = path
        self._start = time.monotonic()

    def check(self) -> None:
        elapsed = time.monotonic() - self._start
        self._limits.check(
            "decode_seconds", elapsed, f"decoding took {elapsed:.1f} s and was stopped", self._path
        )
