"""Evaluation evidence: metrics with confidence intervals, operating points, calibration."""

from medsight.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability,
)
from medsight.evaluation.classification import (
    OperatingPointCheck,
    check_operating_point,
    choose_operating_point,
    confusion,
    predictive_values,
    roc_auc,
    sensitivity_specificity,
    stored_threshold,
)
from medsight.evaluation.intervals import Estimate, bootstrap_ci, delong_auc, wilson
from medsight.evaluation.segmentation import segmentation_metrics

__all__ = [
    "Estimate",
    "OperatingPointCheck",
    "bootstrap_ci",
    "brier_score",
    "check_operating_point",
    "choose_operating_point",
    "confusion",
    "delong_auc",
    "expected_calibration_error",
    "fit_temperature",
    "predictive_values",
    "reliability",
    "roc_auc",
    "segmentation_metrics",
    "sensitivity_specificity",
    "stored_threshold",
    "wilson",
]
