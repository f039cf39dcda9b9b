"""Fit a task's input gate: reference distributions and the out-of-distribution threshold.

Features and statistics come from the same `Predictor` and the same statistics the analysis
runs, so what is fitted is exactly what is scored. The split is the recipe's:

- the Mahalanobis model is fitted on the training images (for a k-fold recipe, every image:
  its shipped network was refitted on all of them);
- the threshold is the ``1 - target / 2`` quantile of scores the fitted model did not see
  (half of the validation patients; with fewer than ``_MIN_HALF`` validation images, or for a
  k-fold recipe, out-of-fold scores of the training images), so the target false-rejection
  rate keeps a margin;
- the false-rejection rate is reported on in-distribution images not used for the
  threshold: the other half of the validation patients, else the validation split.

Images given with ``extra`` (unlabelled images of the same kind, e.g. dr-fundus photographs
for a vessel model trained on DRIVE) are split by patient into thirds: fit, threshold, report.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InvalidInputError
from medsight.gate import fit_mahalanobis, image_statistics
from medsight.gate.ood import MahalanobisModel, threshold_at
from medsight.gate.pixels import LOG_SCALE_STATISTICS, band_from_values
from medsight.image import Image
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.tasks.task import Task, load_task, sha256_file
from medsight.training.config import CocoBoxes, TrainConfig
from medsight.training.data import (
    Case,
    kfold_by_patient,
    list_cases,
    read_case_image,
    split_by_patient,
    split_holdback,
)

__all__ = ["GateFit", "bump_patch", "fit_gate", "write_gated_task"]

_MIN_HALF = 40  # validation images each half needs before halves are used
_KEPT_VALUES = 2000  # reference values kept per statistic (monitoring compares with them)


@dataclass
class _Scored:
    name: str
    patient: str
    features: np.ndarray | None
    statistics: dict[str, float]
    probabilities: dict[str, float] | None = None


@dataclass
class GateFit:
    reference: dict[str, Any]
    model: MahalanobisModel | None
    threshold: float | None
    false_rejection_rate: float | None
    fitted_on: str
    summary: dict[str, Any] = field(default_factory=dict)


def bump_patch(version: str) -> str:
    """0.2.0 -> 0.2.1 (a gate fit changes no weights: a patch version)."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise InvalidInputError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return f"{parts[0]}.{parts[1]}.{int(parts[2]) + 1}"


def _score_images(
    predictor: Predictor,
    named: Sequence[tuple[str, str, Callable[[], Image]]],
    progress: Callable[[int], None] | None,
) -> list[_Scored]:
    scored: list[_Scored] = []
    chunk = 32 if predictor.task.spec.kind == "classification" else 1
    for first in range(0, len(named), chunk):
        part = named[first : first + chunk]
        images = [load() for _, _, load in part]
        predictions = predictor.predict_many(images)
        for (name, patient, _), image, prediction in zip(part, images, predictions, strict=True):
            scored.append(
                _Scored(
                    name,
                    patient,
                    prediction.features,
                    image_statistics(image),
                    prediction.probabilities,
                )
            )
        if progress:
            progress(len(part))
    return scored


def _halves(items: list[_Scored]) -> tuple[list[_Scored], list[_Scored]]:
    """Two halves by patient (a stable hash of the patient id, never its order)."""
    order = sorted({i.patient for i in items}, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    first = set(order[: len(order) // 2])
    return [i for i in items if i.patient in first], [i for i in items if i.patient not in first]


def _thirds(items: list[_Scored]) -> tuple[list[_Scored], list[_Scored], list[_Scored]]:
    patients = sorted(
        {i.patient for i in items}, key=lambda p: hashlib.sha256(p.encode()).hexdigest()
    )
    cut = [set(patients[k::3]) for k in range(3)]
    return tuple([i for i in items if i.patient in part] for part in cut)  # type: ignore[return-value]


def _features(items: list[_Scored]) -> np.ndarray:
    return np.stack([i.features for i in items if i.features is not None])


def _out_of_fold(items: list[_Scored], folds: int = 5) -> np.ndarray:
    """Scores of each item by a model fitted without its patient's fold."""
    patients = sorted(
        {i.patient for i in items}, key=lambda p: hashlib.sha256(p.encode()).hexdigest()
    )
    fold_of = {p: n % folds for n, p in enumerate(patients)}
    scores = np.zeros(len(items))
    features = _features(items)
    for fold in range(folds):
        held = np.array([fold_of[i.patient] == fold for i in items])
        if held.any() and (~held).sum() >= 2:
            scores[held] = fit_mahalanobis(features[~held]).score(features[held])
    return scores


def _patient_of_file(path: Path) -> str:
    return re.sub(r"[_-][LR]$", "", path.stem)  # both eyes of a patient: one side


def _box_cases(data: CocoBoxes) -> list[Case]:
    """A detection recipe's images as cases: labelled by whether they hold a box, the
    recipe's group column as the patient (near-duplicates stay in one fold)."""
    from medsight.training.detector import box_data_cases

    return [
        Case(path=c.image, patient=group, label=int(len(c.reference) > 0))
        for c, group in box_data_cases(data)
    ]


def fit_gate(
    task: Task,
    config: TrainConfig,
    *,
    extra: Sequence[Path] = (),
    false_rejection_target: float = 0.02,
    progress: Callable[[int], None] | None = None,
) -> GateFit:
    """Fit ``task``'s gate on the split of ``config`` (and ``extra`` images)."""
    predictor = Predictor(task, explain=False, backend="onnxruntime")
    if isinstance(config.data, CocoBoxes):  # detection: each image, grouped as it trained
        cases = _box_cases(config.data)
    else:
        cases, _ = split_holdback(list_cases(config.data, task.spec), config.split)

    def named(items: list[Case]) -> list[tuple[str, str, Callable[[], Image]]]:
        return [(c.name, c.patient, partial(read_case_image, c)) for c in items]

    extras: list[tuple[str, str, Callable[[], Image]]] = [
        (p.name, _patient_of_file(p), partial(read_image, p)) for p in extra
    ]
    total = len(cases) + len(extras)
    if config.split.folds or config.split.grouped:
        # the shipped network was refitted on (or its ensemble saw) every case: none is unseen
        count = config.split.folds or 5
        everything = _score_images(predictor, named(cases), progress)
        train, validation = everything, []
        folds = kfold_by_patient(cases, count, config.split.seed)
        fold_of = {c.name: n for n, fold in enumerate(folds) for c in fold}
        oof = _out_of_fold(everything, count)
        early = np.array([fold_of[i.name] < (count + 1) // 2 for i in everything])
        calibration, report = oof[early], oof[~early]
        shipped = (
            "the fold networks' ensemble saw"
            if config.split.ship == "ensemble"
            else "network refitted on"
        )
        how = (
            f"{shipped} all {len(everything)} images: gate fitted on all of them; "
            f"threshold on out-of-fold scores ({count} folds by patient) of the first folds, "
            "false rejection on the out-of-fold scores of the others"
        )
    else:
        train_cases, validation_cases = split_by_patient(cases, config.split)
        train = _score_images(predictor, named(train_cases), progress)
        validation = _score_images(predictor, named(validation_cases), progress)
        calibration = report = np.array([])
        how = ""
    extra_scored = _score_images(predictor, extras, progress) if extras else []
    extra_fit, extra_calibration, extra_report = _thirds(extra_scored) if extras else ([], [], [])
    fit_items = train + extra_fit
    if not any(i.features is not None for i in fit_items):
        model = None
    else:
        model = fit_mahalanobis(_features(fit_items))
    if model is not None and not (config.split.folds or config.split.grouped):
        if len(validation) >= 2 * _MIN_HALF:
            first, second = _halves(validation)
            calibration = model.score(_features(first))
            report = model.score(_features(second))
            how = (
                f"fitted on {len(train)} training images; threshold on half of the "
                f"validation patients ({len(first)} images), false rejection on the other "
                f"half ({len(second)} images)"
            )
        else:
            calibration = _out_of_fold(train)
            report = model.score(_features(validation)) if validation else np.array([])
            how = (
                f"fitted on {len(train)} training images; threshold on their out-of-fold "
                f"scores (5 folds by patient), false rejection on the {len(validation)} "
                "validation images"
            )
    if model is not None and extras:
        calibration = np.concatenate([calibration, model.score(_features(extra_calibration))])
        report = np.concatenate([report, model.score(_features(extra_report))])
        how += (
            f"; plus {len(extra_scored)} unlabelled images of the same kind split by patient "
            f"into thirds (fit {len(extra_fit)}, threshold {len(extra_calibration)}, false "
            f"rejection {len(extra_report)})"
        )
    threshold = threshold_at(calibration, false_rejection_target / 2) if model is not None else None
    rejected = float((report > threshold).mean()) if threshold and len(report) else None
    reference = _reference(fit_items, model, calibration, report, threshold)
    reference["fitted_on"] = how
    reference["images"] = total
    return GateFit(
        reference,
        model,
        threshold,
        rejected,
        how,
        {"calibration_images": len(calibration), "report_images": len(report)},
    )


def _quantiles(values: Sequence[float] | np.ndarray) -> list[float]:
    array = np.sort(np.asarray(values, dtype=np.float64))
    if len(array) > _KEPT_VALUES:  # evenly spaced order statistics: the same distribution
        array = array[np.linspace(0, len(array) - 1, _KEPT_VALUES).round().astype(int)]
    return [round(float(v), 6) for v in array]


def _reference(
    items: list[_Scored],
    model: MahalanobisModel | None,
    calibration: np.ndarray,
    report: np.ndarray,
    threshold: float | None,
) -> dict[str, Any]:
    statistics = {}
    for name in items[0].statistics if items else []:
        values = [i.statistics[name] for i in items]
        band = band_from_values(values, log_scale=name in LOG_SCALE_STATISTICS)
        statistics[name] = {"band": list(band), "values": _quantiles(values)}
    probabilities: dict[str, list[float]] = {}
    for item in items:
        for output, value in (item.probabilities or {}).items():
            probabilities.setdefault(output, []).append(value)
    return {
        "statistics": statistics,
        "probabilities": {k: _quantiles(v) for k, v in probabilities.items()},
        "ood_scores": {
            "threshold_set": _quantiles(calibration),
            "held_out": _quantiles(report),
            "threshold": threshold,
        },
    }


def write_gated_task(
    task: Task,
    fit: GateFit,
    tasks_dir: Path,
    command: str,
    target: float = 0.02,
    *,
    in_place: bool = False,
) -> Task:
    """``task`` with the fitted gate: a new patch version in ``tasks_dir/<id>/<version>/``
    (the same weights), or, ``in_place`` (``medsight train``'s last step), the version just
    trained; task.toml becomes schema 2 and declares the gate files with their SHA-256."""
    import shutil

    import tomli_w

    version = task.version if in_place else bump_patch(task.version)
    folder = task.folder if in_place else tasks_dir / task.id / version
    folder.mkdir(parents=True, exist_ok=True)
    for item in task.folder.iterdir():
        kept = item.name not in ("task.toml", "gate_ood.npz", "gate_reference.json")
        if not in_place and item.is_file() and kept:
            shutil.copy2(item, folder / item.name)
    reference_path = folder / "gate_reference.json"
    reference_path.write_text(json.dumps(fit.reference, indent=1))
    document = tomllib.loads((task.folder / "task.toml").read_text())
    document["schema_version"] = 2
    document["version"] = version
    gate = dict(document.get("gate", {}))
    gate["reference"] = {"file": reference_path.name, "sha256": sha256_file(reference_path)}
    if fit.model is not None and fit.threshold is not None:
        ood_path = folder / "gate_ood.npz"
        fit.model.save(ood_path)
        gate["ood"] = {
            "file": ood_path.name,
            "sha256": sha256_file(ood_path),
            "method": "mahalanobis",
            "threshold": round(fit.threshold, 4),
            "false_rejection_target": target,
            **(
                {"false_rejection_rate": round(fit.false_rejection_rate, 4)}
                if fit.false_rejection_rate is not None
                else {}
            ),
            "fitted_on": fit.fitted_on,
        }
    else:
        gate.pop("ood", None)
    document["gate"] = gate
    header = "".join(
        line + "\n"
        for line in (task.folder / "task.toml").read_text().splitlines()
        if line.startswith("#") and not line.startswith("# gate fitted by")
    )
    (folder / "task.toml").write_text(
        header + f"# gate fitted by: {command}\n" + tomli_w.dumps(document)
    )
    return load_task(folder)
