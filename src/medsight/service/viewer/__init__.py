"""The study viewer: the volume's description and raw slices (``layers``), its routes
(``page``) and the canvas code that draws them (``static/viewer.js``)."""

from medsight.service.viewer.layers import (
    Layers,
    load_layers,
    orientation_labels,
    presets,
    slice_bytes,
    viewer_body,
    volume_info,
)

__all__ = [
    "Layers",
    "load_layers",
    "orientation_labels",
    "presets",
    "slice_bytes",
    "viewer_body",
    "volume_info",
]
