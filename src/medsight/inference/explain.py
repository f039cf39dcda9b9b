"""Grad-CAM heatmaps for classifiers (MONAI's implementation), in the input's geometry."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gradcam"]

#: the layer whose activations Grad-CAM weighs, per allowed classifier architecture
_TARGET_LAYERS = {"DenseNet": "class_layers.relu", "DenseNet121": "class_layers.relu"}


def gradcam(module: Any, architecture: str, batch: Any, class_index: int) -> np.ndarray | None:
    """A [0, 1] map over the network input's spatial grid, or None for other architectures."""
    from monai.visualize import GradCAM

    layer = _TARGET_LAYERS.get(architecture)
    if layer is None:
        return None
    cam = GradCAM(nn_module=module, target_layers=layer)
    heat = cam(x=batch.clone().requires_grad_(True), class_idx=class_index)
    return np.asarray(heat.detach().cpu().numpy()[0, 0], dtype=np.float32)
