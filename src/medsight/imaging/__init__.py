"""Geometry-keeping image operations: reorientation, windowing and display mapping."""

from medsight.imaging.orientation import reorient
from medsight.imaging.window import WINDOW_PRESETS, apply_voi, apply_window, to_display

__all__ = ["WINDOW_PRESETS", "apply_voi", "apply_window", "reorient", "to_display"]
