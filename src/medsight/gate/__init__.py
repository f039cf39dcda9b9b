"""The input gate: may this task's model judge this image?

Flow position: after :mod:`medsight.inference` (the out-of-distribution score reads the
network's features), before :mod:`medsight.findings` (a withheld answer gives no finding).

- :mod:`~medsight.gate.tags`: age, sex, view, body part, bit depth, size, spacing;
- :mod:`~medsight.gate.pixels`: blank, noise, contrast, saturation, truncated volumes, CT
  numbers, and photograph focus, exposure and fundus field of view;
- :mod:`~medsight.gate.ood`: Mahalanobis distance of the network's features to training;
- :mod:`~medsight.gate.fit`: fits the reference distributions and the OOD threshold.
"""

from medsight.gate.checks import GATE_VERSION, GateCheck, GateResult
from medsight.gate.gate import InputGate
from medsight.gate.ood import MahalanobisModel, fit_mahalanobis
from medsight.gate.statistics import STATISTICS, image_statistics
from medsight.gate.tags import dicom_date, patient_age

__all__ = [
    "GATE_VERSION",
    "STATISTICS",
    "GateCheck",
    "GateResult",
    "InputGate",
    "MahalanobisModel",
    "dicom_date",
    "fit_mahalanobis",
    "image_statistics",
    "patient_age",
]
