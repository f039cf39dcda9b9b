"""De-identification of DICOM (PS3.15 Annex E): the Basic Application Level Confidentiality
Profile with the Retain Longitudinal Temporal Information with Modified Dates and the Retain
Patient Characteristics options, under a key that makes pseudonyms consistent.

It imports nothing of medsight but :mod:`medsight.errors` (the flow allows ``io``; it does
not need even that), so it can run where the rest of medsight (models, service) is not
wanted, and a change elsewhere cannot weaken it.
"""

from medsight.deid.deidentify import (
    Change,
    DeidentifiedFile,
    deidentify_bytes,
    deidentify_dataset,
    deidentify_tree,
    write_report,
)
from medsight.deid.keys import Pseudonyms, load_key, new_key
from medsight.deid.profile import Action, action_for

__all__ = [
    "Action",
    "Change",
    "DeidentifiedFile",
    "Pseudonyms",
    "action_for",
    "deidentify_bytes",
    "deidentify_dataset",
    "deidentify_tree",
    "load_key",
    "new_key",
    "write_report",
]
