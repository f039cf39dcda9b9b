"""A patient's screening result from both sides (eyes): a study finding derived from the
analyses of several images (task.toml ``[worse_side]``).

Each side's result is that of its worst gradable image (screening often takes two fields of
one eye): for each named output the highest calibrated probability, for each ordinal grade
the highest grade. The patient's result is the worse side's, and each operating point the
task locked per patient (on the worse eye) flags it. What cannot be concluded is said, never
left silent: an eye with no gradable image makes the patient result NEEDS_REVIEW
("insufficient image quality"), as does a missing eye or an image whose side is unknown,
unless the other eye already gives a flag (then the patient is referred anyway, with the
gap stated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medsight.tasks import Task
from medsight.tasks.spec import WorseSide

__all__ = ["SideImage", "worse_side"]

_SIDE_NAMES = {"R": "right eye", "L": "left eye"}


@dataclass
class SideImage:
    """One analysed image of the study, as the patient result needs it."""

    analysis: int  # index into result.json's analyses[]
    description: str
    side: str | None  # "R" / "L"; None when neither the source nor a manifest says
    gradable: bool  # the gate let the answer through
    reasons: list[str] = field(default_factory=list)  # why not gradable
    probabilities: dict[str, float] = field(default_factory=dict)
    grades: dict[str, int] = field(default_factory=dict)  # ordinal name -> grade


def _side_name(side: str) -> str:
    return _SIDE_NAMES.get(side, f"side {side}")


def _side_result(images: list[SideImage], spec: WorseSide) -> dict[str, Any]:
    gradable = [i for i in images if i.gradable]
    result: dict[str, Any] = {
        "analyses": [i.analysis for i in images],
        "gradable": [i.analysis for i in gradable],
    }
    if not gradable:
        result["ungradable_reasons"] = sorted({r for i in images for r in i.reasons})
        return result
    probabilities = {}
    for output in spec.outputs:
        worst = max(gradable, key=lambda i: i.probabilities[output])
        probabilities[output] = {"value": worst.probabilities[output], "analysis": worst.analysis}
    grades = {}
    for name in gradable[0].grades:
        worst = max(gradable, key=lambda i: i.grades[name])
        grades[name] = {"grade": worst.grades[name], "analysis": worst.analysis}
    result["probabilities"] = probabilities
    result["grades"] = grades
    return result


def worse_side(
    images: list[SideImage], spec: WorseSide, task: Task
) -> tuple[dict[str, Any], list[str]]:
    """The study finding (for result.json's study_findings) and the reasons the study needs
    review on its account (empty when the patient result is complete)."""
    document: dict[str, Any] = {
        "name": spec.name,
        "code": spec.code.model_dump(),
        "model": {"id": task.id, "version": task.version, "hash": task.task_hash},
        "derived_from": sorted(i.analysis for i in images),
        "method": "each eye: its worst gradable image; the patient: the worse eye; flags at "
        "the task's operating points (locked per patient on the worse eye)",
        "sides": {},
        "not_given": [],
    }
    gaps: list[str] = []
    unknown = [i for i in images if i.side not in spec.sides]
    for image in unknown:
        gaps.append(
            f"{image.description}: which eye it shows is not known (no ImageLaterality or "
            "Laterality, no manifest laterality): not used for the patient result"
        )
    sides = {side: [i for i in images if i.side == side] for side in spec.sides}
    results: dict[str, dict[str, Any]] = {}
    for side, members in sides.items():
        if not members:
            others = [i for i in images if i.side in spec.sides]
            claimed = sorted({_side_name(i.side) for i in others if i.side})
            # a pair that claims one eye twice is more often a laterality error than two fields
            gaps.append(
                f"no image of the {_side_name(side)}"
                + (
                    f" (all {len(others)} images claim the {claimed[0]}: check their laterality)"
                    if len(others) > 1 and len(claimed) == 1
                    else ""
                )
            )
            continue
        result = _side_result(members, spec)
        document["sides"][side] = result
        if "probabilities" in result:
            results[side] = result
        else:
            gaps.append(
                f"insufficient image quality: no gradable image of the {_side_name(side)} ("
                + "; ".join(result["ungradable_reasons"])
                + ")"
            )
    if not results:
        document["not_given"] = [*gaps, "no eye could be graded: no patient result"]
        return document, [f"{spec.name}: {gap}" for gap in gaps]
    patient: dict[str, Any] = {}
    for output in spec.outputs:
        side, best = max(
            ((s, r["probabilities"][output]) for s, r in results.items()),
            key=lambda pair: pair[1]["value"],
        )
        patient[output] = {"value": best["value"], "side": side, "analysis": best["analysis"]}
    document["probabilities"] = patient
    document["flags"] = {
        name: {
            "output": point.output,
            "threshold": point.threshold,
            "probability": patient[point.output]["value"],
            "flag": patient[point.output]["value"] >= point.threshold,
            "side": patient[point.output]["side"],
        }
        for name, point in task.spec.operating_points.items()
        if point.output in patient
    }
    implies = {o.name: o.implies for o in task.spec.outputs}
    for flag in list(document["flags"].values()):
        for name in implies.get(flag["output"], []) if flag["flag"] else []:
            for other in document["flags"].values():
                if other["output"] == name and not other["flag"]:
                    other["flag"] = True
                    other["implied_by"] = flag["output"]
    grades = {}
    for ordinal in task.spec.ordinal:
        graded = [(s, r["grades"][ordinal.name]) for s, r in results.items()]
        if graded:
            side, worst = max(graded, key=lambda pair: pair[1]["grade"])
            grades[ordinal.name] = {
                "grade": worst["grade"],
                "level": ordinal.levels[worst["grade"]],
                "side": side,
                "analysis": worst["analysis"],
            }
    document["grades"] = grades
    flagged = any(f["flag"] for f in document["flags"].values())
    if gaps:
        document["not_given"] = [
            *gaps,
            "the patient result covers "
            + " and ".join(_side_name(s) for s in results)
            + " only"
            + (": flagged all the same" if flagged else ": no patient-level negative"),
        ]
    # without a flag, a gap leaves the patient unanswered: review; with one, the referral
    # stands and the gap is said
    return document, [] if flagged else [f"{spec.name}: {gap}" for gap in gaps]
