"""Windowing (VOI LUT) and display mapping; never applied by a reader, always asked for.

A display value in [0, 1] is computed in three explicit steps: the VOI transform (a DICOM
window, a named preset, or the VOI LUT Sequence), then MONOCHROME1 inversion (so that 1 is
always white), then clipping.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from medsight.errors import InvalidInputError
from medsight.image import Image

#: (centre, width) in HU; common CT presets
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "stroke": (32.0, 8.0),
    "subdural": (75.0, 215.0),
}

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]


def apply_window(
    values: np.ndarray, center: float, width: float, function: VoiFunction = "LINEAR"
) -> np.ndarray:
    """Map values to [0, 1] with a DICOM window (PS3.3 C.11.2.1.2), as float32."""
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise InvalidInputError(f"window width must be positive (>= 1 for LINEAR), got {width}")
    x = np.asarray(values, dtype=np.float32)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        out = (x - (center - width / 2.0)) / width
    else:
        out = ((x - (center - 0.5)) / (width - 1.0)) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _first(value: object) -> float:
    if isinstance(value, list | tuple):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def apply_voi(image: Image, window: str | tuple[float, float] | None = None) -> np.ndarray:
    """The VOI step for ``image``: a preset name, an explicit (centre, width), or the image's
    own DICOM window / VOI LUT when ``window`` is None; else its full value range."""
    values = image.array
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise InvalidInputError(
                f"unknown window preset {window!r}; choose from {', '.join(sorted(WINDOW_PRESETS))}"
            )
        return apply_window(values, *WINDOW_PRESETS[window])
    if window is not None:
        return apply_window(values, float(window[0]), float(window[1]))
    metadata = image.metadata
    if "VOILUT" in metadata:
        lut = metadata["VOILUT"]
        table = np.asarray(lut["data"], dtype=np.float32)
        index = np.clip(values.astype(np.int64) - int(lut["first_mapped"]), 0, len(table) - 1)
        return (table[index] / float(2 ** int(lut["bits"]) - 1)).astype(np.float32)
    if "WindowCenter" in metadata and "WindowWidth" in metadata:
        function = str(metadata.get("VOILUTFunction", "LINEAR")).upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            function = "LINEAR"
        return apply_window(
            values,
            _first(metadata["WindowCenter"]),
            _first(metadata["WindowWidth"]),
            function,  # type: ignore[arg-type]
        )
    low, high = float(np.min(values)), float(np.max(values))
    return ((values.astype(np.float32) - low) / max(high - low, 1e-6)).astype(np.float32)


def to_display(image: Image, window: str | tuple[float, float] | None = None) -> np.ndarray:
    """Display values in [0, 1]: VOI, then MONOCHROME1 inversion (1 is always white)."""
    if image.photometric_interpretation == "RGB":
        if image.array.dtype == np.uint8:
            return image.array.astype(np.float32) / 255.0
        return apply_voi(image, window)
    shown = apply_voi(image, window)
    if image.photometric_interpretation == "MONOCHROME1":
        shown = 1.0 - shown
    return shown
