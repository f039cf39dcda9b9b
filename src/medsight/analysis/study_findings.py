"""Results derived from several analyses of one study, collected while the study's images
are analysed and derived at its end: a cine's ventricular function (task.toml
``[cardiac_function]``) and a patient's worse-eye screening result (``[worse_side]``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsight.analysis.inputs import ImageSource
from medsight.errors import MedsightError
from medsight.findings import Finding
from medsight.findings.cardiac import CardiacPhase, cardiac_function
from medsight.findings.screening import SideImage, worse_side
from medsight.gate import GateResult
from medsight.image import Image
from medsight.inference import Prediction
from medsight.tasks import Task

__all__ = ["DerivedResults", "StudyFindings"]


@dataclass
class DerivedResults:
    """What the study's result takes from the derivations."""

    documents: list[dict[str, Any]] = field(default_factory=list)  # result.json study_findings
    findings: list[Finding] = field(default_factory=list)  # for triage and measurement flags
    review_reasons: list[str] = field(default_factory=list)  # study-level NEEDS_REVIEW


def _side_of(image: Image, source: ImageSource) -> str | None:
    """R / L from the manifest, else from DICOM's ImageLaterality or Laterality."""
    for value in (
        source.laterality,
        image.metadata.get("ImageLaterality"),
        image.metadata.get("Laterality"),
    ):
        text = str(value or "").strip().upper()
        if text in ("R", "L"):
            return text
    return None


class StudyFindings:
    """Collects each analysis a derivation needs (``add``), then derives (``finish``)."""

    def __init__(self) -> None:
        self._phases: dict[str, tuple[Task, list[CardiacPhase]]] = {}
        self._sides: dict[str, tuple[Task, list[SideImage]]] = {}

    def add(
        self,
        index: int,
        task: Task,
        image: Image,
        prediction: Prediction,
        gate_result: GateResult,
        source: ImageSource,
    ) -> None:
        """Analysis ``index`` of the study (its place in result.json's analyses[])."""
        spec = task.spec
        withheld = gate_result.withheld
        if spec.cardiac_function is not None:
            label_map = None if withheld else prediction.label_map
            phase = CardiacPhase(index, source.description, image, label_map, source.phase)
            self._phases.setdefault(task.id, (task, []))[1].append(phase)
        if spec.worse_side is not None:
            side = SideImage(
                analysis=index,
                description=source.description,
                side=_side_of(image, source),
                gradable=not withheld,
                reasons=list(gate_result.withhold_reasons),
                probabilities=dict(prediction.probabilities or {}),
                grades={name: g["grade"] for name, g in prediction.grades.items()},
            )
            self._sides.setdefault(task.id, (task, []))[1].append(side)

    def finish(self, outputs: Collection[str], study_dir: Path) -> DerivedResults:
        derived = DerivedResults()
        for task, phases in self._phases.values():
            assert task.spec.cardiac_function is not None
            document, finding = cardiac_function(phases, task.spec.cardiac_function, task)
            derived.documents.append(document)
            if finding is not None:
                derived.findings.append(finding)
                if "sr" in outputs:
                    _function_sr(document, finding, phases, task, study_dir)
        for task, images in self._sides.values():
            assert task.spec.worse_side is not None
            document, reasons = worse_side(images, task.spec.worse_side, task)
            derived.documents.append(document)
            derived.review_reasons += reasons
        return derived


def _function_sr(
    document: dict[str, Any],
    finding: Finding,
    phases: list[CardiacPhase],
    task: Task,
    study_dir: Path,
) -> None:
    """The ventricular function as its own SR (TID 1500, UCUM units; the evidence names
    both phases' instances), for a DICOM cine; a NIfTI pair gets a note instead."""
    from medsight.reporting.dicom_sr import write_sr

    by_analysis = {p.analysis: p for p in phases}
    ed = by_analysis[document["phases"]["ED"]["analysis"]]
    es = by_analysis[document["phases"]["ES"]["analysis"]]
    try:
        path = write_sr(
            [finding],
            task,
            es.image,
            study_dir / "dicom" / "cardiac_function_sr.dcm",
            also=(ed.image,),
            series="function",
        )
        document["dicom_outputs"] = [path.relative_to(study_dir).as_posix()]
    except MedsightError as exc:
        document["output_notes"] = [f"sr: not written ({exc.message})"]
