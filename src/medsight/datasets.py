"""Where the real datasets live: ``MEDSIGHT_DATA``, else ``../shared/data`` beside the repo.

Tests and benchmarks find every dataset through :func:`shared_data_dir`, so no path is
hard-coded anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repository_root", "shared_data_dir"]


def repository_root() -> Path:
    """The source checkout this package runs from (``src/medsight`` -> repository root)."""
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """The folder holding the real datasets (it may not exist on a user's machine)."""
    override = os.environ.get("MEDSIGHT_DATA")
    if override:
        return Path(override).expanduser().resolve()
    return (repository_root() / ".." / "shared" / "data").resolve()
