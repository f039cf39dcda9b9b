"""A classifier made of a U-Net's encoder and a linear head: the way to start a classifier
from a segmentation network trained on the same kind of image (e.g. fundus-dr from the
fundus-vessels U-Net), when labelled images are few.

The whole MONAI U-Net is built (``self.unet``) with the arguments it was trained with, so
its state dict loads as it is; the forward pass runs only its down path (each level's
down block, then the bottom block), averages the bottom block's output over the image and
maps it to the outputs. The decoder's weights stay unused.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet

__all__ = ["UNetEncoderClassifier"]


def _down_path(unet: UNet) -> list[torch.nn.Module]:
    """The encoder blocks of a MONAI U-Net in order: each level is Sequential(down,
    SkipConnection(inner), up); the innermost SkipConnection holds the bottom block."""
    blocks: list[torch.nn.Module] = []
    level: Any = unet.model
    while True:
        blocks.append(level[0])
        inner = level[1].submodule if isinstance(level[1], SkipConnection) else level[1]
        if isinstance(inner, torch.nn.Sequential) and isinstance(inner[1], SkipConnection):
            level = inner
            continue
        blocks.append(inner)
        return blocks


class UNetEncoderClassifier(torch.nn.Module):
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: list[int],
        strides: list[int],
        num_res_units: int = 0,
        segmentation_channels: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=segmentation_channels,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
        )
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(channels[-1], out_channels)
        names = {id(m): n for n, m in self.unet.named_modules()}
        self._blocks = _down_path(self.unet)  # a plain list: no second copy in state_dict
        #: the bottom block: the pooled features (input gate) and the Grad-CAM layer
        self.bottom_name = "unet." + names[id(self._blocks[-1])]

    @property
    def bottom(self) -> torch.nn.Module:
        return self._blocks[-1]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        for block in self._blocks:
            batch = block(batch)
        return self.head(self.dropout(batch.flatten(2).mean(2)))

    def load_encoder_from(self, segmenter: torch.nn.Module) -> None:
        """Start from a trained U-Net of the same arguments (its decoder comes along)."""
        self.unet.load_state_dict(segmenter.state_dict(), strict=True)
