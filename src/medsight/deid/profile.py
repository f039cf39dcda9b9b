"""The action medsight takes on each attribute: DICOM PS3.15 Annex E, Table E.1-1.

The Basic Application Level Confidentiality Profile's action letters come from the
``dicom-anonymizer`` package (Kitware, BSD), whose lists are generated from the standard's
table (edition 2026c here); writing 650 rows by hand would be the error-prone part. What the
lists leave open, decided here:

- **Combined letters** (X/Z, X/D, Z/D, X/Z/D): the choice that keeps the object conformant
  without knowing its IOD. Wherever D is allowed it is taken (a dummy value satisfies a
  Type 1 attribute, such as Device Serial Number in Enhanced General Equipment, as well as
  Type 2 and 3); X/Z becomes Z (a Type 2 attribute must stay present). X/Z/U* (sequences of
  references): kept, with every UID inside replaced (the U* part), so references between
  de-identified objects still hold.
- **Retain Longitudinal Temporal Information with Modified Dates Option** (DCM 113107):
  attributes of VR DA and DT that the profile would remove or blank are shifted by a
  per-patient whole number of days instead; TM values are kept (a whole-day shift leaves
  the time of day unchanged). Patient's Birth Date stays blanked: age is kept instead.
- **Retain Patient Characteristics Option** (DCM 113108): the attributes the standard marks
  K in that column are kept (age, sex, size, weight, ...), so the input gate can still check
  them. Those it marks C (free text such as Additional Patient History) are removed, as the
  Basic Profile does: cleaning free text cannot be done safely by rule.
- **Private attributes** are removed (unless kept on request); curve data (50xx) and overlay
  data and comments (60xx,3000 and 60xx,4000) are removed.
"""

from __future__ import annotations

import enum
from functools import cache

from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag, Tag

__all__ = [
    "PATIENT_CHARACTERISTICS",
    "Action",
    "action_for",
    "profile_table",
    "standard_letters",
]

_DATABASE = "dicomfields_2026c"


class Action(enum.Enum):
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    KEEP_REFERENCES = "U*"  # a sequence kept, UIDs within replaced
    SHIFT_DATE = "shift"  # Retain Longitudinal Temporal Information with Modified Dates
    KEEP = "K"  # kept by the Retain Patient Characteristics (or Modified Dates) option


#: Table E.1-1, column "Rtn. Pat. Chars. Opt.", the attributes marked K
PATIENT_CHARACTERISTICS = frozenset(
    Tag(keyword)
    for keyword in (
        "PatientAge",
        "PatientSex",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "SmokingStatus",
        "PregnancyStatus",
        "PatientSexNeutered",
    )
)

_NEVER_SHIFTED = frozenset({Tag("PatientBirthDate")})

#: the list names of dicom-anonymizer, and the letter(s) each stands for
_LISTS = {
    "X_TAGS": "X",
    "Z_TAGS": "Z",
    "D_TAGS": "D",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}

#: combined letters resolved as the module doc says
_RESOLVED = {
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "U": Action.UID,
    "Z/D": Action.DUMMY,
    "X/Z": Action.EMPTY,
    "X/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.KEEP_REFERENCES,
}


@cache
def _database() -> tuple[dict[BaseTag, str], list[tuple[int, int, int, int, str]]]:
    """(exact tag -> letters, masked ranges) from dicom-anonymizer's copy of Table E.1-1."""
    from importlib import import_module

    module = import_module(f"dicomanonymizer.dicom_anonymization_databases.{_DATABASE}")
    exact: dict[BaseTag, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for name, letters in _LISTS.items():
        for entry in getattr(module, name):
            if len(entry) == 2:
                exact[Tag(entry[0], entry[1])] = letters
            else:  # (group, element, group mask, element mask): repeating groups 50xx, 60xx
                group, element, group_mask, element_mask = entry
                masked.append((group, element, group_mask, element_mask, letters))
    return exact, masked


def standard_letters(tag: BaseTag) -> str | None:
    """The Basic Profile's letter(s) for ``tag`` as the standard's table gives them."""
    exact, masked = _database()
    if tag in exact:
        return exact[tag]
    for group, element, group_mask, element_mask, letters in masked:
        if (tag.group & group_mask) == group and (tag.element & element_mask) == element:
            return letters
    return None


def _vr(tag: BaseTag) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def action_for(tag: BaseTag) -> Action | None:
    """What medsight does to ``tag`` (None: not in the profile, kept as it is)."""
    letters = standard_letters(tag)
    if letters is None:
        return None
    if tag in PATIENT_CHARACTERISTICS:
        return Action.KEEP
    resolved = _RESOLVED[letters]
    if resolved in (Action.UID, Action.KEEP_REFERENCES) or tag in _NEVER_SHIFTED:
        return resolved
    vr = _vr(tag)
    if vr in ("DA", "DT"):
        return Action.SHIFT_DATE
    if vr == "TM":
        return Action.KEEP
    return resolved


def profile_table() -> dict[BaseTag, str]:
    """Every exact tag of the table with its standard letters (for tests and the report)."""
    return dict(_database()[0])
