"""The one gate for optional packages: import them lazily, or name the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from medsight.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``medsight[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this needs the optional package '{module}': pip install 'medsight[{extra}]'"
        ) from exc
