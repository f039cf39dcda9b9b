"""Training: recipes (typed configs), patient-level data splits, and trainers that write new
task versions with their evidence."""

from medsight.training.classifier import train_classifier
from medsight.training.common import TrainingResult
from medsight.training.config import TrainConfig, load_config
from medsight.training.data import Case, kfold_by_patient, list_cases, split_by_patient
from medsight.training.multilabel import train_multilabel
from medsight.training.segmenter import train_segmenter

__all__ = [
    "Case",
    "TrainConfig",
    "TrainingResult",
    "kfold_by_patient",
    "list_cases",
    "load_config",
    "split_by_patient",
    "train_classifier",
    "train_multilabel",
    "train_segmenter",
]
