"""Cases for training: listed from class folders, a manifest CSV, image + mask folders or a
MedMNIST-style ``.npz``; split by patient; every data problem refused before training starts.

Each image goes through the task's own display and preprocessing chain (the one the
Predictor uses), so a model sees in training exactly what it sees in analysis.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsight.datasets import shared_data_dir
from medsight.errors import InvalidInputError
from medsight.evaluation.cases import Case, read_case_image, read_case_mask
from medsight.tasks.spec import TaskSpec
from medsight.training.config import (
    ClassFolders,
    DataConfig,
    ImageMaskFolders,
    Manifest,
    Npz,
    SplitConfig,
)

__all__ = [
    "Case",
    "HeldOutFold",
    "group_of",
    "held_out_folds",
    "kfold_by_patient",
    "list_cases",
    "read_case_image",
    "read_case_mask",
    "split_by_group",
    "split_by_patient",
    "split_holdback",
]

_SHOWN = 8  # problems listed in one error message


def _resolve(path: str, base: Path | None = None) -> Path:
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    return (base if base is not None else shared_data_dir()) / candidate


def _refuse(problems: list[str], what: str, path: Path | None = None) -> None:
    if problems:
        shown = "; ".join(problems[:_SHOWN])
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise InvalidInputError(f"{len(problems)} {what}: {shown}{more}", path=path)


def list_cases(config: DataConfig, spec: TaskSpec | None = None) -> list[Case]:
    """Every case with its label, targets or mask and patient; problems are refused before
    any training starts, naming the files or rows. A manifest with ``targets`` needs the
    task's ``spec`` (its output names and ordinal grades)."""
    if isinstance(config, ClassFolders):
        cases = _class_folder_cases(config)
    elif isinstance(config, Manifest):
        outputs, ordinals = _target_names(config, spec)
        cases = _manifest_cases(config, outputs, ordinals)
    elif isinstance(config, ImageMaskFolders):
        cases = _image_mask_cases(config)
    elif isinstance(config, Npz):
        cases = _npz_cases(config)
    else:  # COCO boxes: read by the detection trainer (medsight.training.detector)
        raise InvalidInputError("COCO box data trains a detection task only")
    if not cases:
        raise InvalidInputError("the dataset lists no cases")
    _check_splits(cases)
    if spec is not None and any(case.targets is not None for case in cases):
        _check_targets(cases, spec)
    elif all(case.mask is None for case in cases):
        present = {case.label for case in cases}
        if len(present) < 2:
            raise InvalidInputError(
                f"only one class is present (output index {sorted(present)}); need two"
            )
    return cases


def _target_names(
    config: Manifest, spec: TaskSpec | None
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """The task's output indices and ordinal grades that a multi-target manifest names."""
    if not (config.targets or config.ordinal_targets):
        return {}, {}
    if spec is None or spec.activation != "sigmoid":
        raise InvalidInputError(
            'manifest targets need a task with activation = "sigmoid" (independent outputs)'
        )
    outputs = {o.name: o.index for o in spec.outputs}
    ordinals = {o.name: o.cumulative for o in spec.ordinal}
    unknown = [n for n in config.targets if n not in outputs]
    unknown += [n for n in config.ordinal_targets if n not in ordinals]
    if unknown:
        raise InvalidInputError(f"manifest targets name no output or ordinal grade: {unknown}")
    covered = set(config.targets) | {c for n in config.ordinal_targets for c in ordinals[n]}
    untrained = sorted(set(outputs) - covered)
    if untrained:
        raise InvalidInputError(f"no manifest target for the task's outputs {untrained}")
    return outputs, ordinals


def _check_targets(cases: list[Case], spec: TaskSpec) -> None:
    """Every output needs graded cases of both values to learn from."""
    targets = np.array([case.targets for case in cases], dtype=np.float64)
    lacking = [
        o.name
        for o in spec.outputs
        if len(set(targets[:, o.index][~np.isnan(targets[:, o.index])].tolist())) < 2
    ]
    if lacking:
        raise InvalidInputError(f"output(s) {lacking} have graded cases of one value only")


def _class_folder_cases(config: ClassFolders) -> list[Case]:
    root = _resolve(config.root)
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
            attributes = {"subgroup": group.group(1)} if group else {}
            cases.append(Case(path, match.group(1), label, attributes=attributes))
    _refuse(unmatched, f"file(s) match no patient id pattern ({config.patient_pattern!r})")
    return cases


def _manifest_cases(
    config: Manifest,
    outputs: dict[str, int] | None = None,
    ordinals: dict[str, list[str]] | None = None,
) -> list[Case]:
    table = _resolve(config.csv)
    if not table.is_file():
        raise InvalidInputError("manifest not found", path=table)
    base = _resolve(config.root) if config.root else table.parent
    multi = bool(config.targets or config.ordinal_targets)
    classification = config.label_column is not None
    if classification + multi + (config.mask is not None) != 1:
        raise InvalidInputError(
            "a manifest needs one of label_column, targets / ordinal_targets, or mask",
            path=table,
        )
    if classification and not config.classes:
        raise InvalidInputError("a classification manifest needs classes", path=table)
    with table.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    wanted = [config.label_column, config.patient_column, config.split_column]
    wanted += [*config.targets.values(), *config.ordinal_targets.values()]
    wanted += config.subgroup_columns
    wanted += re.findall(
        r"{(\w+)}", " ".join(t for t in (config.image, config.mask, config.roi) if t)
    )
    missing_columns = sorted({c for c in wanted if c and c not in columns})
    if missing_columns:
        raise InvalidInputError(f"manifest has no column(s) {missing_columns}", path=table)

    cases: list[Case] = []
    problems: list[str] = []
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{table.name} row {number}"
        path = base / config.image.format(**row)
        mask = base / config.mask.format(**row) if config.mask else None
        roi = base / config.roi.format(**row) if config.roi else None
        for kind, file in (("image", path), ("mask", mask), ("roi", roi)):
            if file is not None and not file.is_file():
                problems.append(f"{where}: {kind} file {file} is missing")
        label = -1
        if classification:
            assert config.label_column is not None and config.classes is not None
            value = row[config.label_column].strip()
            value = config.label_map.get(value, value)
            if value not in config.classes:
                problems.append(f"{where}: unknown label {row[config.label_column]!r}")
            else:
                label = config.classes.index(value)
        targets = None
        if multi:
            targets, label, wrong = _row_targets(row, config, outputs or {}, ordinals or {})
            problems += [f"{where}: {w}" for w in wrong]
        split = row[config.split_column].strip().lower() if config.split_column else None
        if split is not None and split not in ("train", "validation"):
            problems.append(f"{where}: split {split!r} is neither 'train' nor 'validation'")
        patient = row[config.patient_column].strip() if config.patient_column else str(path)
        if not patient:
            problems.append(f"{where}: empty patient id")
        attributes = {c: row[c].strip() for c in config.subgroup_columns if row[c].strip()}
        cases.append(
            Case(path, patient, label, mask, roi, where, split, attributes, targets=targets)
        )
    _refuse(problems, "problem(s) in the manifest", table)
    return cases


def _row_targets(
    row: dict[str, str],
    config: Manifest,
    outputs: dict[str, int],
    ordinals: dict[str, list[str]],
) -> tuple[tuple[float, ...], int, list[str]]:
    """One row's target per output (NaN where the row is not graded), its stratum (highest
    grade, else highest target) and what is wrong with it. ``outputs`` maps the task's output
    names to their indices, ``ordinals`` each ordinal grade to its cumulative outputs."""
    values = [float("nan")] * len(outputs)
    wrong: list[str] = []
    stratum = 0
    for name, column in config.targets.items():
        text = row[column].strip()
        if text in ("0", "1"):
            values[outputs[name]] = float(text)
            stratum = max(stratum, int(text))
        elif text:
            wrong.append(f"{column} {text!r} is not 0, 1 or empty")
    for name, column in config.ordinal_targets.items():
        text = row[column].strip()
        cumulative = ordinals[name]
        if not text:
            continue
        if not text.isdigit() or int(text) > len(cumulative):
            wrong.append(f"{column} {text!r} is outside the scale 0-{len(cumulative)}")
            continue
        grade = int(text)
        stratum = max(stratum, grade)
        for k, output in enumerate(cumulative, start=1):
            values[outputs[output]] = float(grade >= k)
    return tuple(values), stratum, wrong


def _image_mask_cases(config: ImageMaskFolders) -> list[Case]:
    root = _resolve(config.root)
    if not root.is_dir():
        raise InvalidInputError("training data folder not found", path=root)
    id_pattern = re.compile(config.id_pattern)
    patient_pattern = re.compile(config.patient_pattern) if config.patient_pattern else None
    cases: list[Case] = []
    problems: list[str] = []
    for path in sorted(root.glob(config.images)):
        match = id_pattern.search(path.name)
        if match is None:
            problems.append(f"{path.name}: no case id ({config.id_pattern!r})")
            continue
        case_id = match.group(1)
        mask = root / config.mask.format(id=case_id)
        roi = root / config.roi.format(id=case_id) if config.roi else None
        for kind, file in (("mask", mask), ("roi", roi)):
            if file is not None and not file.is_file():
                problems.append(f"{path.name}: {kind} file {file} is missing")
        patient = case_id
        if patient_pattern is not None:
            found = patient_pattern.search(case_id)
            if found is None:
                problems.append(f"{path.name}: no patient id ({config.patient_pattern!r})")
                continue
            patient = found.group(1)
        cases.append(Case(path, patient, -1, mask, roi, path.name))
    if not cases and not problems:
        raise InvalidInputError(f"no image matches {config.images!r}", path=root)
    _refuse(problems, "problem(s) in the image and mask folders", root)
    return cases


def _npz_cases(config: Npz) -> list[Case]:
    file = _resolve(config.file)
    if not file.is_file():
        raise InvalidInputError("npz file not found", path=file)
    with np.load(file) as archive:
        missing = [k for k in ("train_images", "train_labels") if k not in archive.files]
        if missing:
            raise InvalidInputError(f"npz has no {missing} (MedMNIST layout expected)", path=file)
        parts = [("train", "train"), ("val", "validation")]
        cases = []
        problems = []
        for prefix, split in parts:
            if f"{prefix}_labels" not in archive.files:
                continue
            labels = np.asarray(archive[f"{prefix}_labels"]).reshape(-1)
            for index, label in enumerate(labels.tolist()):
                if not 0 <= int(label) < len(config.classes):
                    problems.append(f"{prefix}_labels[{index}]: unknown label {label}")
                # MedMNIST has no patient ids: each image is its own patient
                cases.append(
                    Case(
                        file,
                        f"{prefix}-{index}",
                        int(label),
                        None,
                        None,
                        f"{file.name} {prefix}[{index}]",
                        split,
                        npz_index=index,
                    )
                )
    _refuse(problems, "problem(s) in the npz labels", file)
    return cases


def _check_splits(cases: list[Case]) -> None:
    """A predefined split may not put one patient on both sides."""
    sides: dict[str, dict[str, str]] = {}
    for case in cases:
        if case.split is not None:
            sides.setdefault(case.patient, {}).setdefault(case.split, case.name)
    problems = [
        f"patient {patient!r} is in train ({where['train']}) and validation ({where['validation']})"
        for patient, where in sides.items()
        if len(where) > 1
    ]
    _refuse(problems, "patient(s) in two splits")


def split_by_patient(cases: list[Case], config: SplitConfig) -> tuple[list[Case], list[Case]]:
    """A seeded, stratified split with every patient's images on one side only; a predefined
    split (manifest column, npz parts) is used as it is.

    Patients are stratified by their highest label, then shuffled and cut per stratum.
    """
    if any(case.split is not None for case in cases):
        train = [c for c in cases if c.split != "validation"]
        validation = [c for c in cases if c.split == "validation"]
        if not validation:
            raise InvalidInputError("the predefined split has no validation cases")
        return train, validation
    rng = np.random.default_rng(config.seed)
    validation_patients: set[str] = set()
    for patients in _strata(cases).values():
        order = rng.permutation(len(patients))
        count = max(1, round(len(patients) * config.validation_fraction))
        validation_patients.update(patients[i] for i in order[:count])
    train = [c for c in cases if c.patient not in validation_patients]
    validation = [c for c in cases if c.patient in validation_patients]
    return train, validation


def split_holdback(cases: list[Case], config: SplitConfig) -> tuple[list[Case], list[Case]]:
    """(cases for development, held-back cases): ``holdback_fraction`` of the patients,
    stratified and seeded apart from the validation split, never seen by training."""
    if not config.holdback_fraction:
        return cases, []
    rng = np.random.default_rng([config.seed, 7919])  # its own stream: not the validation draw
    held: set[str] = set()
    for patients in _strata(cases).values():
        order = rng.permutation(len(patients))
        held.update(
            patients[i] for i in order[: max(1, round(len(patients) * config.holdback_fraction))]
        )
    return [c for c in cases if c.patient not in held], [c for c in cases if c.patient in held]


def kfold_by_patient(cases: list[Case], folds: int, seed: int) -> list[list[Case]]:
    """``folds`` disjoint validation folds, stratified by patients' highest label."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for patients in _strata(cases).values():
        for position, index in enumerate(rng.permutation(len(patients))):
            fold_of[patients[index]] = (position + offset) % folds
        offset += len(patients)  # continue the round-robin across strata
    result = [[c for c in cases if fold_of[c.patient] == f] for f in range(folds)]
    if any(not fold for fold in result):
        raise InvalidInputError(f"too few patients for {folds} folds")
    return result


def _strata(cases: list[Case]) -> dict[int, list[str]]:
    by_patient: dict[str, list[int]] = {}
    for case in cases:
        by_patient.setdefault(case.patient, []).append(case.label)
    strata: dict[int, list[str]] = {}
    for patient, labels in sorted(by_patient.items()):
        # a patient with any image of the rarer, higher classes counts in that stratum
        strata.setdefault(max(labels), []).append(patient)
    return strata


@dataclass
class HeldOutFold:
    """One fold of a held-out scheme, as positions into the full case list: the held-out
    cases (``inside``), and the rest split by patient into the cases a model fits on and
    those it chooses its epoch on (never the held-out ones)."""

    name: str
    number: int  # 1-based
    inside: np.ndarray  # bool mask over the cases
    rest: list[Case]
    fit_index: np.ndarray
    check_index: np.ndarray


def held_out_folds(
    cases: list[Case], held_out: list[tuple[str, list[Case]]], config: SplitConfig
) -> list[HeldOutFold]:
    """Each (name, cases) fold of ``held_out`` with its fit and epoch-choice parts."""
    position = {id(case): number for number, case in enumerate(cases)}
    folds = []
    for number, (name, fold) in enumerate(held_out, start=1):
        inside = np.zeros(len(cases), dtype=bool)
        inside[[position[id(c)] for c in fold]] = True
        rest = [c for c in cases if not inside[position[id(c)]]]
        fit_cases, check_cases = split_by_patient(rest, config)
        folds.append(
            HeldOutFold(
                name,
                number,
                inside,
                rest,
                np.array([position[id(c)] for c in fit_cases]),
                np.array([position[id(c)] for c in check_cases]),
            )
        )
    return folds


def group_of(case: Case, config: SplitConfig) -> str | None:
    """The case's validation group: a manifest column's value, or the first file-name rule
    that matches (and whose number range holds the pattern's group 1)."""
    if config.group_column:
        return case.attributes.get(config.group_column)
    for rule in config.groups:
        match = re.search(rule.pattern, case.path.name)
        if match is None:
            continue
        if rule.numbers is None:
            return rule.name
        low, high = rule.numbers
        if low <= int(match.group(1)) <= high:
            return rule.name
    return None


def held_out_parts(cases: list[Case], config: SplitConfig) -> list[tuple[str, list[Case]]]:
    """The parts a recipe holds out in turn: its groups by name, or its patient folds
    named "1".."k"."""
    if config.grouped:
        return split_by_group(cases, config)
    assert config.folds is not None
    folds = kfold_by_patient(cases, config.folds, config.seed)
    return [(str(n), fold) for n, fold in enumerate(folds, start=1)]


def split_by_group(cases: list[Case], config: SplitConfig) -> list[tuple[str, list[Case]]]:
    """One held-out fold per group, in name order. Every case must fall in a group, and no
    patient in two: a case in no group, a patient split between groups, or a single group
    is refused, naming the cases."""
    groups: dict[str, list[Case]] = {}
    missing: list[str] = []
    for case in cases:
        name = group_of(case, config)
        if name is None:
            missing.append(case.name)
        else:
            groups.setdefault(name, []).append(case)
    what = f"column {config.group_column!r}" if config.group_column else "the group rules"
    _refuse(missing, f"case(s) in no group of {what}")
    where: dict[str, set[str]] = {}
    for name, members in groups.items():
        for case in members:
            where.setdefault(case.patient, set()).add(name)
    _refuse(
        [f"patient {p!r} in {sorted(g)}" for p, g in sorted(where.items()) if len(g) > 1],
        "patient(s) in two groups",
    )
    if len(groups) < 2:
        raise InvalidInputError(f"group-held-out validation needs two groups; {what} give one")
    return sorted(groups.items())
