"""Where tasks come from: the package (shipped, read-only) and user task directories.

User directories come from ``MEDSIGHT_TASKS`` (several joined with ``os.pathsep``) and from
the CLI's ``--tasks-dir``; training writes new task versions there. Any folder holding a
``task.toml`` up to two levels down is a task (e.g. ``TASKS/cxr-pneumonia/0.2.0/task.toml``).
When one id has several versions, the highest wins; a user task wins over a shipped one of
the same version.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from medsight.errors import InvalidInputError, MedsightError, TaskDefinitionError
from medsight.tasks.task import Task, load_task

__all__ = ["TaskCatalog", "discover_tasks", "shipped_tasks_dir", "user_task_dirs"]


def shipped_tasks_dir() -> Path:
    return Path(__file__).resolve().parent


def user_task_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    configured = [p for p in os.environ.get("MEDSIGHT_TASKS", "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in [*configured, *extra]]


def _version_key(task: Task) -> tuple[object, bool]:
    try:
        version: object = Version(task.version)
    except InvalidVersion:
        version = Version("0")
    return (version, not task.shipped)


@dataclass
class TaskCatalog:
    """Every task found, by id (all versions, newest first), and the folders that failed."""

    versions: dict[str, list[Task]] = field(default_factory=dict)
    problems: dict[Path, str] = field(default_factory=dict)

    @property
    def tasks(self) -> list[Task]:
        """The newest version of each task, sorted by id."""
        return [self.versions[key][0] for key in sorted(self.versions)]

    def get(self, name: str) -> Task:
        """A task by ``id`` (newest version) or ``id@version``."""
        task_id, _, version = name.partition("@")
        candidates = self.versions.get(task_id)
        if not candidates:
            known = ", ".join(sorted(self.versions)) or "none"
            raise InvalidInputError(f"unknown task {task_id!r} (available: {known})")
        if not version:
            return candidates[0]
        for task in candidates:
            if task.version == version:
                return task
        found = ", ".join(t.version for t in candidates)
        raise InvalidInputError(f"task {task_id} has no version {version} (found {found})")


def _task_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        {p.parent for pattern in ("*/task.toml", "*/*/task.toml") for p in root.glob(pattern)}
    )


def discover_tasks(extra_dirs: Iterable[str | Path] = ()) -> TaskCatalog:
    catalog = TaskCatalog()
    sources = [(shipped_tasks_dir(), True)] + [(d, False) for d in user_task_dirs(extra_dirs)]
    for root, shipped in sources:
        for folder in _task_folders(root):
            try:
                task = load_task(folder, shipped=shipped)
            except MedsightError as exc:
                catalog.problems[folder] = str(exc)
                continue
            catalog.versions.setdefault(task.id, []).append(task)
    for tasks in catalog.versions.values():
        tasks.sort(key=_version_key, reverse=True)
    return catalog


def load_named_task(name: str, extra_dirs: Iterable[str | Path] = ()) -> Task:
    """A task by name or by folder path (a folder holding task.toml)."""
    path = Path(name)
    if (path / "task.toml").is_file() or (path.name == "task.toml" and path.is_file()):
        return load_task(path)
    catalog = discover_tasks(extra_dirs)
    task_id = name.partition("@")[0]
    broken = [
        f"{folder}: {problem}"
        for folder, problem in catalog.problems.items()
        if folder.name == task_id or folder.parent.name == task_id
    ]
    if task_id not in catalog.versions and broken:
        raise TaskDefinitionError("; ".join(broken))
    return catalog.get(name)
