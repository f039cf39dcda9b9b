"""``--max-memory``: an analysis that would exceed it stops with a clear message (exit 2)
instead of driving the machine into swap.

Two checks, both on the resident memory of the process doing the analysis:

1. before the network runs, an estimate: what the process holds now plus the working set of
   the task on this input (``Predictor.working_bytes``: for a segmentation, (outputs + 2)
   float32 volumes, or 1 + 2 x (outputs - 1) bytes per voxel on the bounded path of a large
   volume). An input that cannot fit is refused before any work.
2. while it runs, a watchdog thread samples the resident set every 50 ms and, over the limit,
   raises :class:`MemoryLimitError` in the analysing thread (at its next Python step: a
   single long native call finishes first), which unwinds the study and frees its arrays.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medsight.errors import InvalidInputError
from medsight.io.limits import ResourceLimitError

__all__ = ["MemoryLimitError", "check_estimate", "memory_guard", "parse_size", "resident_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class MemoryLimitError(ResourceLimitError):
    """The analysis needs or uses more memory than ``--max-memory`` allows (exit code 2)."""


def parse_size(text: str) -> int:
    """``4G``, ``4GB``, ``4GiB``, ``3500M`` or a byte count (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise InvalidInputError(f"--max-memory takes a size such as 4G or 3500M, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value < 64 * 2**20:
        raise InvalidInputError(f"--max-memory {text} is below 64 MiB: nothing could run in it")
    return int(value)


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def check_estimate(limit: int, needed: int, *, what: str) -> None:
    """Refuse before the network runs when what the process holds plus what the analysis
    needs (``Predictor.working_bytes``) cannot fit."""
    held = resident_bytes()
    if held + needed > limit:
        raise MemoryLimitError(
            f"needs about {_gib(held + needed)} ({_gib(needed)} for this input, with "
            f"{_gib(held)} already in use) but --max-memory is {_gib(limit)}; not analysed",
            path=what,
            limit="max_memory",
        )


@contextmanager
def memory_guard(limit: int | None, what: str) -> Iterator[None]:
    """Watch the process's resident memory while the block runs (no-op without a limit)."""
    if not limit:
        yield
        return
    target = threading.get_ident()
    stop = threading.Event()
    message = f"used more than --max-memory {_gib(limit)} while being analysed and was stopped"

    class ExceededError(MemoryLimitError):
        def __init__(self) -> None:
            super().__init__(message, path=what, limit="max_memory")

    def watch() -> None:
        while not stop.wait(0.05):
            if resident_bytes() > limit:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(ExceededError)
                )
                return

    watcher = threading.Thread(target=watch, name="medsight-memory-guard", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        # a limit crossed as the block ended must not surface later, outside it
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)
