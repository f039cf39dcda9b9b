"""Site calibration: a classifier's temperature, operating point and gate thresholds refitted
on a site's own labelled images, written as version ``X.Y.Z+site.NAME`` beside the original
(which stays untouched, hash and all).

What is refitted, and on what:

- the temperature (NLL) and the operating point (the highest threshold whose sensitivity's
  lower 95% bound reaches the target) on every site image; the card also gives a cross-fitted
  estimate (chosen on one half of the site's patients, checked on the other, both ways);
- the gate's pixel bands are widened to hold the site's own statistics, and its
  out-of-distribution threshold raised, where needed, to the site's ``1 - target / 2``
  quantile (fitted on one half of the site's patients, false rejection reported on the other);
  the feature model itself is kept, so images unlike both training and site stay withheld.

Refused, writing nothing: a single class, labels that are not the task's outputs, images the
gate's fixed checks withhold, and a target the data cannot demonstrate (exit code 1).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InsufficientEvidenceError, InvalidInputError, TaskMismatchError
from medsight.evaluation import (
    check_operating_point,
    choose_operating_point,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    stored_threshold,
    wilson,
)
from medsight.evaluation.cases import Case, read_case_image
from medsight.evaluation.development import development_overlap
from medsight.gate import InputGate
from medsight.gate.ood import threshold_at
from medsight.inference.outputs import calibrated_probabilities
from medsight.inference.predictor import Predictor
from medsight.tasks.acceptance import check_acceptance
from medsight.tasks.task import Task, load_task, sha256_file

__all__ = ["SITE_NAME", "calibrate_site", "positives_needed"]

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_GATE_FALSE_REJECTION = 0.02


@dataclass
class _SiteScores:
    logits: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None
    statistics: list[dict[str, float]]
    patients: list[str]


def positives_needed(target: float, level: float = 0.95) -> int:
    """The fewest positives whose lower Wilson bound can reach ``target`` (all detected)."""
    count = 1
    while wilson(count, count, level).low < target:
        count += 1
    return count


def _score(task: Task, cases: list[Case], progress: Callable[[int], None] | None) -> _SiteScores:
    """Logits, features and statistics of every site image; images the gate's fixed checks
    (tags, blank, noise, colour, ...) withhold are refused together, each named."""
    gate = InputGate(task)
    predictor = Predictor(task, explain=False)
    logits, features, statistics, refused = [], [], [], []
    for first in range(0, len(cases), 32):
        chunk = cases[first : first + 32]
        images = [read_case_image(c) for c in chunk]
        for case, image in zip(chunk, images, strict=True):
            result, measured = gate.before_model(image, use_reference=False)
            reasons = [c.reason for c in result.checks if c.outcome == "withhold"]
            reasons += [
                o.reason
                for o in check_acceptance(task.spec.acceptance, image)
                if o.severity == "refuse" and not o.passed
            ]
            if reasons:
                refused.append(f"{case.name} ({'; '.join(reasons)})")
            statistics.append(measured)
        if refused:
            continue  # the set is refused below; no need to run the network
        for prediction in predictor.predict_many(images):
            assert prediction.logits is not None
            logits.append(np.asarray(prediction.logits, dtype=np.float64))
            features.append(prediction.features)
        if progress:
            progress(len(chunk))
    if refused:
        shown = "; ".join(refused[:5]) + (
            f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
        )
        raise InvalidInputError(
            f"{len(refused)} site image(s) the input gate withholds: {shown}; remove them, "
            "they cannot calibrate a task that would never judge them"
        )
    have_features = all(f is not None for f in features)
    return _SiteScores(
        np.stack(logits),
        np.array([c.label for c in cases]),
        np.stack(features) if have_features and features else None,  # type: ignore[arg-type]
        statistics,
        [c.patient for c in cases],
    )


def _halves(patients: list[str]) -> np.ndarray:
    """True for the first half of the patients (a stable hash, never their order)."""
    order = sorted(set(patients), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    first = set(order[: len(order) // 2])
    return np.array([p in first for p in patients])


def _cross_fitted(scores: _SiteScores, target: float) -> dict[str, Any]:
    """Temperature and point chosen on one half of the patients, checked on the other."""
    half = _halves(scores.patients)
    detected = total_positive = cleared = total_negative = 0
    for fit_side in (half, ~half):
        check_side = ~fit_side
        y_fit, y_check = scores.labels[fit_side], scores.labels[check_side]
        if len(set(y_fit.tolist())) < 2 or len(set(y_check.tolist())) < 2:
            return {}
        temperature = fit_temperature(scores.logits[fit_side], y_fit)
        p_fit = calibrated_probabilities(scores.logits[fit_side], temperature)[:, 1]
        point = choose_operating_point(y_fit, p_fit, target)
        p_check = calibrated_probabilities(scores.logits[check_side], temperature)[:, 1]
        called = p_check >= point.threshold
        detected += int((called & (y_check == 1)).sum())
        total_positive += int((y_check == 1).sum())
        cleared += int((~called & (y_check == 0)).sum())
        total_negative += int((y_check == 0).sum())
    return {
        "sensitivity": wilson(detected, total_positive).as_dict(),
        "specificity": wilson(cleared, total_negative).as_dict(),
    }


def _gate_refit(task: Task, scores: _SiteScores) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference with bands widened to the site's statistics, and the OOD entry with
    its threshold raised where the site needs it (checked on the other half)."""
    gate = InputGate(task)
    reference = json.loads(json.dumps(gate.reference)) if gate.reference else {}
    widened = []
    for name, entry in reference.get("statistics", {}).items():
        values = [s[name] for s in scores.statistics if name in s and np.isfinite(s[name])]
        if not values:
            continue
        low, high = entry["band"]
        new = [min(low, float(np.min(values))), max(high, float(np.max(values)))]
        if new != [low, high]:
            widened.append(name)
        entry["band"] = new
    ood = dict(task.spec.gate.ood.model_dump(exclude_none=True)) if task.spec.gate.ood else {}
    summary: dict[str, Any] = {"bands_widened": widened}
    model = gate.ood_model
    if ood and model is not None and scores.features is not None:
        site_scores = model.score(scores.features)
        half = _halves(scores.patients)
        site_threshold = threshold_at(site_scores[half], _GATE_FALSE_REJECTION / 2)
        threshold = max(float(ood["threshold"]), site_threshold)
        rate = float((site_scores[~half] > threshold).mean())
        ood.update(
            threshold=round(threshold, 4),
            false_rejection_rate=round(rate, 4),
            fitted_on=(
                f"{ood.get('fitted_on', '')}; site calibration: threshold "
                f"{'raised to' if threshold > float(ood['threshold']) else 'kept at'} "
                f"{threshold:.2f} from half of the site's patients, false rejection "
                f"{rate:.1%} on the other half"
            ),
        )
        summary.update(ood_threshold=threshold, site_false_rejection=rate)
    return reference, {"ood": ood, **summary}


def calibrate_site(
    task: Task,
    cases: list[Case],
    site: str,
    *,
    target: float,
    tasks_dir: Path,
    command: str,
    progress: Callable[[int], None] | None = None,
) -> Task:
    """Refit ``task`` on a site's labelled ``cases``; returns the new ``+site.NAME`` version."""
    spec = task.spec
    if spec.kind != "classification" or len(spec.outputs) != 2 or spec.chain is not None:
        raise TaskMismatchError(
            f"task {task.id} is not a single-network binary classifier: site calibration "
            "refits a classifier's temperature and operating point"
        )
    if not SITE_NAME.match(site):
        raise InvalidInputError(f"site name {site!r}: use lower-case letters, digits and dashes")
    if "+site." in task.version:
        raise InvalidInputError(
            f"{task.id} {task.version} is already site-calibrated: calibrate the original"
        )
    if not 0.5 <= target < 1:
        raise InvalidInputError(f"target sensitivity {target} is outside [0.5, 1)")
    labels = np.array([c.label for c in cases])
    present = sorted(set(labels.tolist()))
    if present != [0, 1]:
        named = ", ".join(spec.outputs[i].name for i in present if 0 <= i < 2) or "none"
        raise InvalidInputError(
            f"the site data hold one class only ({named}); calibration needs both "
            f"{spec.outputs[0].name} and {spec.outputs[1].name} images"
        )
    positives = int(labels.sum())
    needed = positives_needed(target)
    if positives < needed:
        raise InsufficientEvidenceError(
            f"{positives} {spec.outputs[1].name} image(s) cannot demonstrate sensitivity "
            f"{target}: even with every one detected the lower 95% bound stays below it; "
            f"at least {needed} are needed. Nothing was written."
        )
    _refuse_development_images(task, cases)
    scores = _score(task, cases, progress)
    temperature = fit_temperature(scores.logits, scores.labels)
    probabilities = calibrated_probabilities(scores.logits, temperature)[:, 1]
    point = choose_operating_point(scores.labels, probabilities, target)
    if not point.demonstrated:
        raise InsufficientEvidenceError(
            f"target sensitivity {target} cannot be demonstrated on these {len(cases)} site "
            f"images: {point.note}. Nothing was written."
        )
    before = _original_point_check(task, scores, target)
    crossed = _cross_fitted(scores, target)
    reference, gate_summary = _gate_refit(task, scores)
    evidence = {
        "site": site,
        "images": len(cases),
        "positives": positives,
        "patients": len(set(scores.patients)),
        "target_sensitivity": target,
        "temperature": temperature,
        "operating_point": point.as_dict(),
        "roc_auc": roc_auc(scores.labels, probabilities).as_dict(),
        "ece_after": expected_calibration_error(scores.labels, probabilities),
        "original_point_on_site": before,
        "cross_fitted": crossed,
        "gate": {k: v for k, v in gate_summary.items() if k != "ood"},
    }
    return _write(task, site, evidence, reference, gate_summary["ood"], tasks_dir, command)


def _refuse_development_images(task: Task, cases: list[Case]) -> None:
    """A site's calibration is fitted on the site's own images: any the model was developed
    on (evaluation/development.py) would tell of the lab, not of the site."""
    overlap = development_overlap(task, cases, read_case_image, lambda case: case.path.name)
    if overlap and overlap["images"]:
        raise InvalidInputError(
            f"{overlap['images']} of {overlap['of']} site images are among the images "
            f"{task.id} {task.version} was developed on (the same pixels; e.g. "
            f"{', '.join(overlap['examples'][:3])}): a site calibration needs the site's own "
            "images. Nothing was written."
        )


def _original_point_check(task: Task, scores: _SiteScores, target: float) -> dict[str, Any]:
    """The original version's locked point on the site's images (what calibration fixes)."""
    point = next(iter(task.spec.operating_points.values()), None)
    if point is None:
        return {}
    probabilities = calibrated_probabilities(scores.logits, task.spec.calibration.temperature)
    return check_operating_point(
        scores.labels, probabilities[:, 1], point.threshold, target
    ).as_dict()


def _write(
    task: Task,
    site: str,
    evidence: dict[str, Any],
    reference: dict[str, Any],
    ood: dict[str, Any],
    tasks_dir: Path,
    command: str,
) -> Task:
    import tomli_w

    version = f"{task.version}+site.{site}"
    folder = tasks_dir / task.id / version
    if folder.exists():
        raise InvalidInputError(f"{folder} exists: remove it or choose another site name")
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in task.folder.iterdir():
        if item.is_file() and item.name not in ("task.toml", "gate_reference.json"):
            shutil.copy2(item, staging / item.name)
    document = tomllib.loads((task.folder / "task.toml").read_text())
    document["version"] = version
    point = evidence["operating_point"]
    name, original = next(iter(document.get("operating_points", {}).items()))
    measured_on = (
        f"site {site}: {evidence['images']} images of {evidence['patients']} patients, "
        "temperature and operating point fitted on the same images"
    )
    document["calibration"] = {
        "temperature": round(evidence["temperature"], 6),
        "fitted_on": f"site {site} ({evidence['images']} images, NLL)",
    }
    document["operating_points"] = {
        name: {
            "output": original["output"],
            "threshold": stored_threshold(point["threshold"]),
            "target_sensitivity": evidence["target_sensitivity"],
            "sensitivity": round(point["sensitivity"]["value"], 4),
            "specificity": round(point["specificity"]["value"], 4),
            "note": f"site {site}: {point['note']}",
        }
    }
    document["claims"] = [
        {"metric": "roc_auc", **_ci(evidence["roc_auc"]), "measured_on": measured_on},
        *(
            {"metric": m, **_ci(point[m]), "operating_point": name, "measured_on": measured_on}
            for m in ("sensitivity", "specificity")
        ),
    ]
    gate = dict(document.get("gate", {}))
    if reference:
        reference_path = staging / "gate_reference.json"
        reference_path.write_text(json.dumps(reference, indent=1))
        gate["reference"] = {"file": reference_path.name, "sha256": sha256_file(reference_path)}
    if ood:
        gate["ood"] = ood
    document["gate"] = gate
    (staging / "task.toml").write_text(
        f"# site-calibrated by: {command or 'medsight calibrate'}\n" + tomli_w.dumps(document)
    )
    (staging / "site_calibration.json").write_text(json.dumps(evidence, indent=2, default=float))
    card = (
        (task.folder / "MODEL_CARD.md").read_text()
        if (task.folder / "MODEL_CARD.md").is_file()
        else ""
    )
    (staging / "MODEL_CARD.md").write_text(card + _card_section(task, evidence, command))
    loaded = load_task(staging)  # validates before the version becomes visible
    staging.replace(folder)
    del loaded
    return load_task(folder)


def _ci(estimate: dict[str, Any]) -> dict[str, float]:
    return {key: round(float(estimate[key]), 4) for key in ("value", "low", "high")}


def _shown(estimate: dict[str, Any]) -> str:
    return f"{estimate['value']:.3f} ({estimate['low']:.3f}-{estimate['high']:.3f})"


def _card_section(task: Task, evidence: dict[str, Any], command: str) -> str:
    point = evidence["operating_point"]
    lines = [
        "",
        f"## Site calibration: {evidence['site']}",
        "",
        "**Research use only, not for diagnostic use.**",
        "",
        f"- command: `{command}`",
        f"- from {task.id} {task.version} (task hash `{task.task_hash}`), unchanged",
        f"- site data: {evidence['images']} images of {evidence['patients']} patients, "
        f"{evidence['positives']} positive",
        f"- temperature {evidence['temperature']:.3f}; ECE after {evidence['ece_after']:.3f}",
        f"- ROC AUC on the site {_shown(evidence['roc_auc'])}",
        f"- locked point at {point['threshold']:.4f}: sensitivity "
        f"{_shown(point['sensitivity'])}, specificity {_shown(point['specificity'])}; "
        f"{point['note']} (chosen on the same images)",
    ]
    before = evidence["original_point_on_site"]
    if before:
        lines.append(
            f"- the original point on the site: sensitivity {_shown(before['sensitivity'])}, "
            f"specificity {_shown(before['specificity'])}"
        )
    crossed = evidence["cross_fitted"]
    if crossed:
        lines.append(
            "- cross-fitted estimate (chosen on half of the site's patients, checked on the "
            f"other, both ways): sensitivity {_shown(crossed['sensitivity'])}, specificity "
            f"{_shown(crossed['specificity'])}"
        )
    gate = evidence["gate"]
    if gate.get("bands_widened"):
        lines.append(f"- gate pixel bands widened for: {', '.join(gate['bands_widened'])}")
    if "ood_threshold" in gate:
        lines.append(
            f"- gate out-of-distribution threshold {gate['ood_threshold']:.2f}; false rejection "
            f"on the other half of the site's patients {gate['site_false_rejection']:.1%}"
        )
    return "\n".join(lines) + "\n"
