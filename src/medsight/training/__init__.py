"""Training: recipes (typed configs), patient-level data splits, and trainers that write new
task versions with their evidence."""

from medsight.training.classifier import TrainingResult, train_classifier
from medsight.training.config import TrainConfig, load_config
from medsight.training.data import Case, list_cases, split_by_patient

__all__ = [
    "Case",
    "TrainConfig",
    "TrainingResult",
    "list_cases",
    "load_config",
    "split_by_patient",
    "train_classifier",
]
