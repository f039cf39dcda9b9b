"""Walk PS3.15 Table E.1-1: every attribute of the Basic Profile, set in a dataset, comes out
as its action letter (with the two options) says."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from medsight.deid import Action, Pseudonyms, action_for, deidentify_dataset
from medsight.deid.profile import PATIENT_CHARACTERISTICS, profile_table, standard_letters

KEY = bytes(range(32))
PATIENT = "PAT-0001"
ORIGINAL_DATE = "20200315"

_VALUES: dict[str, object] = {
    "PN": "Doe^Jane",
    "DA": ORIGINAL_DATE,
    "TM": "101010",
    "DT": ORIGINAL_DATE + "101010",
    "UI": "1.2.826.0.1.3680043.8.498.4242",
    "AS": "045Y",
    "IS": "7",
    "DS": "7.5",
    "US": 7,
    "SS": 7,
    "UL": 7,
    "SL": 7,
    "FL": 7.5,
    "FD": 7.5,
    "AT": 0x00100010,
    "OB": b"secret!!",
    "OW": b"secret!!",
    "UN": b"secret!!",
    "UR": "http://secret.example/",
    "CS": "SECRET",
    "AE": "SECRETAE",
}


def _value(vr: str) -> object:
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.777"
        item.CodeMeaning = "secret text"
        return Sequence([item])
    return _VALUES.get(vr, "SECRET TEXT")


def _walkable() -> list[BaseTag]:
    tags = []
    for tag in sorted(profile_table()):
        try:
            vr = str(dictionary_VR(tag)).split(" or ")[0]
        except KeyError:
            continue  # in the standard's table but not in pydicom's dictionary
        if vr and tag.group not in (0x0002,):
            tags.append(tag)
    return tags


def test_the_table_is_the_standards() -> None:
    """Spot checks against the standard's table as printed (PS3.15 2026c, Table E.1-1)."""
    expected = {
        "PatientName": "Z",
        "PatientID": "Z/D",  # Z in editions up to 2023; a pseudonym satisfies both
        "PatientBirthDate": "Z",
        "PatientSex": "Z",
        "PatientAge": "X",
        "PatientAddress": "X",
        "OtherPatientIDsSequence": "X",
        "AccessionNumber": "Z",
        "StudyID": "Z",
        "StudyDate": "Z",
        "StudyTime": "Z",
        "ReferringPhysicianName": "Z",
        "InstitutionName": "X/Z/D",
        "InstitutionAddress": "X",
        "StudyInstanceUID": "U",
        "SeriesInstanceUID": "U",
        "SOPInstanceUID": "U",
        "FrameOfReferenceUID": "U",
        "ContentDate": "Z/D",
        "ReferencedImageSequence": "X/Z/U*",
    }
    found = {keyword: standard_letters(Tag(keyword)) for keyword in expected}
    assert found == expected
    assert len(profile_table()) > 600  # the whole table, not a sample


@pytest.mark.parametrize("tag", _walkable(), ids=lambda t: keyword_for_tag(t) or str(t))
def test_each_attribute_of_the_table_is_handled_as_the_standard_says(tag: BaseTag) -> None:
    vr = str(dictionary_VR(tag)).split(" or ")[0]
    dataset = Dataset()
    dataset.PatientID = PATIENT
    original = _value(vr)
    dataset.add_new(tag, vr, original)
    pseudonyms = Pseudonyms(KEY)
    deidentify_dataset(dataset, pseudonyms)
    action = action_for(tag)
    letters = standard_letters(tag)
    if tag in (Tag("PatientID"), Tag("PatientName")):
        assert dataset[tag].value != original and str(dataset[tag].value).count("MS") == 1
        return
    if vr in ("OB", "OW", "UN") and action not in (Action.KEEP, None):
        assert tag not in dataset  # binary values cannot be blanked safely: removed
        return
    if action == Action.REMOVE:
        assert letters == "X" and tag not in dataset
    elif action == Action.EMPTY:
        assert letters in ("Z", "X/Z")
        assert tag in dataset and (dataset[tag].value in (None, "", b"") or not dataset[tag].value)
    elif action == Action.DUMMY:
        assert "D" in str(letters)  # wherever D is allowed it is taken (Type 1 safe)
        assert tag in dataset and dataset[tag].value not in (None, "", original)
    elif action == Action.UID:
        assert letters == "U"
        replaced = str(dataset[tag].value)
        assert replaced != original and replaced.startswith("2.25.") and len(replaced) <= 64
        assert replaced == pseudonyms.uid(str(original))  # the same UID maps the same way
    elif action == Action.KEEP_REFERENCES:
        assert letters == "X/Z/U*"
        item = dataset[tag].value[0]
        assert item.ReferencedSOPInstanceUID == pseudonyms.uid("1.2.826.0.1.3680043.8.498.777")
    elif action == Action.SHIFT_DATE:
        days = pseudonyms.date_shift_days(PATIENT)
        moved = dt.date(2020, 3, 15) - dt.timedelta(days=days)
        assert str(dataset[tag].value).startswith(moved.strftime("%Y%m%d"))
        assert vr in ("DA", "DT")
    elif action == Action.KEEP:
        assert tag in PATIENT_CHARACTERISTICS or vr == "TM"
        assert dataset[tag].value == original
    else:
        pytest.fail(f"no action for {tag} ({letters})")


def test_private_attributes_go_unless_kept() -> None:
    dataset = Dataset()
    dataset.PatientID = PATIENT
    block = dataset.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"patient name inside")
    deidentify_dataset(dataset, Pseudonyms(KEY))
    assert not any(element.tag.is_private for element in dataset)
    kept = Dataset()
    kept.PatientID = PATIENT
    kept.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"x")
    deidentify_dataset(kept, Pseudonyms(KEY), keep_private=True)
    assert any(element.tag.is_private for element in kept)


def test_the_object_says_how_it_was_deidentified() -> None:
    dataset = Dataset()
    dataset.PatientID = PATIENT
    deidentify_dataset(dataset, Pseudonyms(KEY))
    assert dataset.PatientIdentityRemoved == "YES"
    assert dataset.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {item.CodeValue for item in dataset.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113108"}
    assert len(dataset.DeidentificationMethod) <= 64
