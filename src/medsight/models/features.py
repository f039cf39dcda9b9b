"""The feature vector of a network: what the input gate's out-of-distribution score reads.

One layer per architecture, chosen where the network summarises its input: DenseNet's pooled
penultimate layer (the classifier's input), the U-Net's bottleneck, the detector's deepest
backbone layer. Its output is averaged
over the spatial axes, giving one (batch, channels) vector per input whatever its size.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FeatureNetwork", "feature_layer"]


def feature_layer(module: Any, architecture: str) -> Any | None:
    """The layer whose output is the network's feature vector; None when unknown (a
    TorchScript network from a bundle: the gate then runs without an OOD score)."""
    if architecture.startswith("DenseNet"):
        return getattr(getattr(module, "class_layers", None), "flatten", None)
    if architecture == "UNetEncoderClassifier":
        return getattr(module, "bottom", None)
    if architecture == "BoxDetector":  # the deepest backbone layer, under the pyramid
        extractor = getattr(getattr(module, "detector", None), "network", None)
        layers = getattr(getattr(extractor, "feature_extractor", None), "layers", None)
        return layers[-1] if layers is not None else None
    if architecture == "BasicUNet":
        return getattr(module, "down_4", None)
    if architecture == "UNet":
        from monai.networks.layers import SkipConnection

        inner = None
        for child in module.modules():
            if isinstance(child, SkipConnection):
                inner = child  # modules() walks outer to inner: the last is the deepest
        return None if inner is None else inner.submodule
    return None


def pooled(output: Any) -> Any:
    """(batch, channels, *spatial) -> (batch, channels) by the spatial mean."""
    return output.flatten(2).mean(2) if output.ndim > 2 else output


class FeatureNetwork:
    """Wraps a network so that a forward pass also yields its pooled features.

    ``module(x)`` is unchanged; ``forward_with_features(x)`` returns ``(output, features)``.
    ``as_module()`` gives a ``torch.nn.Module`` returning both, for the ONNX export.
    """

    def __init__(self, module: Any, architecture: str) -> None:
        self.module = module
        self.layer = feature_layer(module, architecture)
        self._captured: list[Any] = []
        if self.layer is not None:
            self.layer.register_forward_hook(self._capture)

    def _capture(self, _module: Any, _inputs: Any, output: Any) -> None:
        self._captured.append(pooled(output))

    @property
    def has_features(self) -> bool:
        return self.layer is not None

    def forward_with_features(self, batch: Any) -> tuple[Any, Any | None]:
        self._captured.clear()
        output = self.module(batch)
        features = self._captured[-1] if self._captured else None
        self._captured.clear()
        return output, features

    def as_module(self) -> Any:
        import torch

        wrapper = self

        class _Both(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = wrapper.module

            def forward(self, x: Any) -> Any:
                return wrapper.forward_with_features(x)

        return _Both()
