"""Inference: a `Predictor` runs a task on an `Image` and returns a `Prediction`."""

from medsight.inference.backends import export_onnx
from medsight.inference.prediction import Prediction
from medsight.inference.predictor import Predictor

__all__ = ["Prediction", "Predictor", "export_onnx"]
