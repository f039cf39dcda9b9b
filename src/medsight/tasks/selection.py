"""Automatic task selection: one explicit rule engine (the service only configures it).

Rules are values: each names a task and conditions on the image (modality, body part,
dimensionality, photometric, series description pattern). They are tried in order; the first
rule whose conditions hold and whose task passes its *refuse* acceptance checks wins. Without
configured rules, each available task contributes one rule built from its acceptance
section, tried from the most specific (most conditions) to the least.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medsight.errors import NoMatchingTaskError
from medsight.image import Image
from medsight.tasks.acceptance import check_acceptance
from medsight.tasks.task import Task

__all__ = [
    "RULES_VERSION",
    "Selection",
    "SelectionRule",
    "SiteRules",
    "SiteTriage",
    "UrgentFinding",
    "load_rules",
    "select_task",
]

RULES_VERSION = 1


class SelectionRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    modalities: list[str] = Field(default_factory=list)
    body_parts: list[str] = Field(default_factory=list)
    spatial_dims: int | None = None
    photometric: list[str] = Field(default_factory=list)
    series_description: str | None = None  # regular expression, case-insensitive
    sop_classes: list[str] = Field(default_factory=list)  # SOP Class UIDs
    image_type: list[str] = Field(default_factory=list)  # values ImageType must all contain

    def conditions(self) -> int:
        return sum(
            bool(v)
            for v in (
                self.modalities,
                self.body_parts,
                self.spatial_dims,
                self.photometric,
                self.series_description,
                self.sop_classes,
                self.image_type,
            )
        )

    def mismatch(self, image: Image) -> str | None:
        """Why the rule does not apply to ``image``, or None when it does."""

        def missing(values: list[str], found: object, what: str) -> str | None:
            if values and str(found or "").upper() not in {v.upper() for v in values}:
                return f"{what} {found or 'unknown'} not in {', '.join(values)}"
            return None

        checks = [
            missing(self.modalities, image.modality, "modality"),
            missing(self.body_parts, image.metadata.get("BodyPartExamined"), "body part"),
            missing(self.photometric, image.photometric_interpretation, "photometric"),
        ]
        if self.spatial_dims is not None and image.spatial_dims != self.spatial_dims:
            checks.append(f"image is {image.spatial_dims}D, rule needs {self.spatial_dims}D")
        description = image.identifiers.series_description or ""
        if self.series_description and not re.search(self.series_description, description, re.I):
            checks.append(
                f"series description {description!r} does not match {self.series_description!r}"
            )
        if self.sop_classes and image.identifiers.sop_class_uid not in self.sop_classes:
            checks.append(f"SOP class {image.identifiers.sop_class_uid or 'unknown'} not listed")
        image_type = {str(v).upper() for v in image.metadata.get("ImageType") or ()}
        wanted = {v.upper() for v in self.image_type}
        if wanted and not wanted <= image_type:
            checks.append(f"image type {sorted(image_type)} lacks {sorted(wanted - image_type)}")
        problems = [c for c in checks if c]
        return "; ".join(problems) if problems else None


class UrgentFinding(BaseModel):
    """A finding the site reads urgently in some care settings (e.g. a fracture in an
    emergency department): flagged there, it makes the study URGENT."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    finding: str  # a finding name, e.g. "fracture"
    settings: list[str] = Field(min_length=1)  # e.g. ["emergency"]


class SiteTriage(BaseModel):
    """The site's care setting and the findings urgent in it (triage rule 2 treats them
    as critical; nothing else about the rules changes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    setting: str = ""  # e.g. "emergency", "inpatient", "outpatient", "screening"
    urgent: list[UrgentFinding] = Field(default_factory=list)

    def urgent_findings(self) -> tuple[str, ...]:
        """The finding names urgent in this site's setting."""
        return tuple(u.finding for u in self.urgent if self.setting in u.settings)


class SiteRules(BaseModel):
    """A site's configuration under a version the site maintains: ordered routing rules
    (none: each task's acceptance decides) and its triage setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    rules: list[SelectionRule] = Field(default_factory=list)
    triage: SiteTriage = SiteTriage()


def load_rules(path: str | Path) -> SiteRules:
    """Site rules from TOML (``version = "..."`` and ``[[rules]]`` tables) or YAML."""
    import tomllib

    from medsight.errors import ConfigurationError

    path = Path(path)
    if not path.is_file():
        raise ConfigurationError("routing rules file not found", path=path)
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
        return SiteRules.model_validate(data)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"invalid routing rules ({exc})", path=path) from exc


@dataclass(frozen=True)
class Selection:
    task: Task
    reasons: tuple[str, ...]


def default_rules(tasks: list[Task]) -> list[SelectionRule]:
    rules = [
        SelectionRule(
            task=task.id,
            modalities=task.spec.acceptance.modalities,
            spatial_dims=task.spec.acceptance.spatial_dims,
            photometric=task.spec.acceptance.photometric,
        )
        for task in tasks
    ]
    return sorted(rules, key=lambda r: -r.conditions())


_PHOTOGRAPHIC = {"XC", "OP", "GM", "ES"}  # external camera, ophthalmic, microscopy, endoscopy


def select_task(
    image: Image, tasks: list[Task], rules: list[SelectionRule] | None = None
) -> Selection:
    """The task to run on ``image``, with the reasons for the choice (see module doc)."""
    by_id = {task.id: task for task in tasks}
    rejections: list[str] = []
    for rule in rules if rules is not None else default_rules(tasks):
        task = by_id.get(rule.task)
        if task is None:
            rejections.append(f"{rule.task}: not installed")
            continue
        if not task.weights_available:
            rejections.append(f"{task.id}: weights not installed")
            continue
        why_not = rule.mismatch(image)
        if why_not:
            rejections.append(f"{task.id}: {why_not}")
            continue
        refused = [
            o.reason
            for o in check_acceptance(task.spec.acceptance, image)
            if o.severity == "refuse" and not o.passed
        ]
        if refused:
            rejections.append(f"{task.id}: {'; '.join(refused)}")
            continue
        reasons = [f"rule for {task.id} (rules v{RULES_VERSION}) matched"]
        reasons += [
            o.reason
            for o in check_acceptance(task.spec.acceptance, image)
            if o.severity == "refuse"
        ]
        return Selection(task, tuple(reasons))
    if not image.modality and image.spatial_dims == 2 and "dicom_header" not in image.metadata:
        # a photograph (JPEG, PNG, TIFF) says nothing about what it shows: the reader must
        photo_tasks = [
            t.id
            for t in tasks
            if t.weights_available and set(t.spec.acceptance.modalities) & _PHOTOGRAPHIC
        ]
        raise NoMatchingTaskError(
            "a photograph carries no modality to choose a task by: name one with --task"
            + (f" (for photographs: {', '.join(sorted(photo_tasks))})" if photo_tasks else "")
        )
    detail = "; ".join(rejections) if rejections else "no tasks are installed"
    raise NoMatchingTaskError(f"no task accepts this image ({detail})")
