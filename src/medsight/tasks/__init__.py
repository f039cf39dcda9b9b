"""Tasks: typed specs loaded from task folders, their discovery, checks and selection."""

from medsight.tasks.acceptance import CheckOutcome, check_acceptance
from medsight.tasks.registry import TaskCatalog, discover_tasks, load_named_task
from medsight.tasks.selection import Selection, SelectionRule, select_task
from medsight.tasks.spec import TaskSpec
from medsight.tasks.task import Task, load_task

__all__ = [
    "CheckOutcome",
    "Selection",
    "SelectionRule",
    "Task",
    "TaskCatalog",
    "TaskSpec",
    "check_acceptance",
    "discover_tasks",
    "load_named_task",
    "load_task",
    "select_task",
]
