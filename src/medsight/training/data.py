"""Cases for training: listed from class folders, split by patient, decoded once into a cache.

Each image goes through the task's own display and preprocessing chain (the one the
Predictor uses), so a model sees in training exactly what it sees in analysis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsight.datasets import shared_data_dir
from medsight.errors import InvalidInputError
from medsight.training.config import DataConfig, SplitConfig

__all__ = ["Case", "list_cases", "split_by_patient"]


@dataclass(frozen=True)
class Case:
    path: Path
    label: int
    patient: str
    subgroup: str | None = None


def data_root(config: DataConfig) -> Path:
    root = Path(config.root)
    return root if root.is_absolute() else shared_data_dir() / root


def list_cases(config: DataConfig) -> list[Case]:
    """Every image of the class folders, with its label and patient; problems are refused
    before any training starts, naming the files."""
    root = data_root(config)
    if not root.is_dir():
        raise InvalidInputError("training data folder not found", path=root)
    pattern = re.compile(config.patient_pattern)
    subgroup = re.compile(config.subgroup_pattern) if config.subgroup_pattern else None
    cases: list[Case] = []
    unmatched: list[str] = []
    for label, name in enumerate(config.classes):
        folder = root / name
        if not folder.is_dir():
            raise InvalidInputError(f"class folder {name!r} is missing", path=folder)
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in config.suffixes:
                continue
            match = pattern.search(path.name)
            if match is None:
                unmatched.append(path.name)
                continue
            group = subgroup.search(path.name) if subgroup else None
            cases.append(Case(path, label, match.group(1), group.group(1) if group else None))
    if unmatched:
        raise InvalidInputError(
            f"{len(unmatched)} file(s) match no patient id pattern "
            f"({config.patient_pattern!r}): {', '.join(unmatched[:5])}"
        )
    present = {case.label for case in cases}
    if len(present) < 2:
        raise InvalidInputError(f"only one class has images ({sorted(present)}); need two")
    labels_by_patient: dict[str, set[int]] = {}
    for case in cases:
        labels_by_patient.setdefault(case.patient, set()).add(case.label)
    return cases


def split_by_patient(cases: list[Case], config: SplitConfig) -> tuple[list[Case], list[Case]]:
    """A seeded, stratified split with every patient's images on one side only.

    Patients are stratified by their majority label, then shuffled and cut per stratum.
    """
    rng = np.random.default_rng(config.seed)
    by_patient: dict[str, list[Case]] = {}
    for case in cases:
        by_patient.setdefault(case.patient, []).append(case)
    strata: dict[int, list[str]] = {}
    for patient, items in sorted(by_patient.items()):
        majority = int(np.bincount([c.label for c in items]).argmax())
        strata.setdefault(majority, []).append(patient)
    validation_patients: set[str] = set()
    for patients in strata.values():
        order = rng.permutation(len(patients))
        count = max(1, round(len(patients) * config.validation_fraction))
        validation_patients.update(patients[i] for i in order[:count])
    train = [c for c in cases if c.patient not in validation_patients]
    validation = [c for c in cases if c.patient in validation_patients]
    if {c.patient for c in train} & {c.patient for c in validation}:
        raise InvalidInputError("a patient is in both splits")  # cannot happen; checked anyway
    return train, validation
