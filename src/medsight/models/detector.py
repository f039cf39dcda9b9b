"""A box detector built from literal arguments: MONAI's RetinaNet (a ResNet with a feature
pyramid, focal-loss classification and box-regression heads, ``monai.apps.detection``) with
its anchors, matcher and box selection in one ``torch.nn.Module``.

Why MONAI's: it is the detection code of the framework medsight already builds on, works in
2D and 3D alike (the 3D lung-nodule model of its tutorials is the same class), runs without
torchvision, and its losses, ATSS matching and hard-negative sampling are the ones its
published detectors were trained with; torchvision's RetinaNet is 2D only and would add a
package. Boxes follow MONAI's convention: corners along the tensor's spatial axes, so on
medsight's (i = x, j = y) arrays a 2D box is [x0, y0, x1, y1] in pixel edges.

In evaluation mode ``forward`` returns one tensor per batch, (batch, max_boxes + 1, 6):
row 0 holds the image's score (the highest class probability over every anchor, before
any threshold: a continuous per-image score even where no box survives) in column 4; rows
1.. hold [x0, y0, x1, y1, score, label] of the kept boxes, padded with score -1. One tensor,
so that the Predictor's backends pass it on like any other network's output.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["BoxDetector", "DetectorHeads"]

_DEPTHS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def _atss_detector(base: Any) -> Any:
    """MONAI's RetinaNetDetector matching anchors by ATSS only: its own method first asks
    whether the matcher is torchvision's, which fails where torchvision is absent."""

    class AtssDetector(base):
        def compute_anchor_matched_idxs(
            self, anchors: Any, targets: Any, num_anchor_locs_per_level: Any
        ) -> list[torch.Tensor]:
            matched = []
            for anchors_per_image, target in zip(anchors, targets, strict=True):
                boxes = target[self.target_box_key].to(anchors_per_image.device)
                if boxes.numel() == 0:  # no box: every anchor is background
                    matched.append(torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64))
                    continue
                _, indices = self.proposal_matcher(
                    boxes, anchors_per_image, num_anchor_locs_per_level, self.num_anchors_per_loc
                )
                matched.append(indices)
            return matched

    return AtssDetector


class _PyramidFeatures(torch.nn.Module):
    """The ResNet's stem and layers up to the deepest one returned, under MONAI's feature
    pyramid: what MONAI's BackboneWithFPN does, whose layer getter is torchvision's (the
    PyPI torchvision does not load beside the CPU torch medsight pins)."""

    def __init__(
        self, backbone: Any, returned: list[int], spatial_dims: int, out_channels: int
    ) -> None:
        from monai.networks.blocks.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
        )

        super().__init__()
        if min(returned) < 1 or max(returned) > 4:
            raise ValueError(f"returned_layers must lie in 1-4, got {returned}")
        stem = [backbone.conv1, backbone.bn1, backbone.act]
        if not backbone.no_max_pool:
            stem.append(backbone.maxpool)
        self.stem = torch.nn.Sequential(*stem)
        self.layers = torch.nn.ModuleList(
            getattr(backbone, f"layer{k}") for k in range(1, max(returned) + 1)
        )
        self.returned = returned
        widest = backbone.in_planes // 8  # layer1's channels (as MONAI's extractor counts)
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=spatial_dims,
            in_channels_list=[widest * 2 ** (k - 1) for k in returned],
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(spatial_dims),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Any:
        from collections import OrderedDict

        x = self.stem(x)
        found: OrderedDict[str, torch.Tensor] = OrderedDict()
        for number, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if number in self.returned:
                found[str(len(found))] = x
        return self.fpn(found)


class BoxDetector(torch.nn.Module):
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 1,
        depth: int = 18,
        returned_layers: list[int] | None = None,
        anchor_shapes: list[list[int]] | None = None,
        score_threshold: float = 0.05,
        nms_iou: float = 0.3,
        max_boxes: int = 20,
        fpn_channels: int = 128,
    ) -> None:
        from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
        from monai.apps.detection.networks.retinanet_network import RetinaNet
        from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
        from monai.networks.nets import resnet

        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if not 0.0 <= score_threshold < 1.0 or not 0.0 < nms_iou <= 1.0 or max_boxes < 1:
            raise ValueError("score_threshold in [0, 1), nms_iou in (0, 1], max_boxes >= 1")
        returned = list(returned_layers or [1, 2, 3])
        shapes = anchor_shapes or [[12, 12], [20, 10], [10, 20]][: 3 if spatial_dims == 2 else 0]
        if not shapes or any(len(s) != spatial_dims for s in shapes):
            raise ValueError(f"anchor_shapes: one size per spatial axis ({spatial_dims})")
        anchors = AnchorGeneratorWithAnchorShape(
            feature_map_scales=[2**k for k in range(len(returned) + 1)],
            base_anchor_shapes=shapes,
        )
        backbone = resnet.ResNet(
            block=resnet.ResNetBlock,
            layers=_DEPTHS[depth],
            block_inplanes=resnet.get_inplanes(),
            n_input_channels=in_channels,
            conv1_t_stride=2,
            conv1_t_size=7,
            spatial_dims=spatial_dims,
        )
        features = _PyramidFeatures(backbone, returned, spatial_dims, fpn_channels)
        # the input is padded to a multiple of the coarsest level's stride
        divisible = 2 * 2 ** max(returned) * 2
        network = RetinaNet(
            spatial_dims=spatial_dims,
            num_classes=num_classes,
            num_anchors=anchors.num_anchors_per_location()[0],
            feature_extractor=features,
            size_divisible=[divisible] * spatial_dims,
        )
        self.detector = _atss_detector(RetinaNetDetector)(
            network=network, anchor_generator=anchors, spatial_dims=spatial_dims,
            num_classes=num_classes,
        )  # fmt: skip
        self.detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
        self.detector.set_hard_negative_sampler(
            batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16
        )
        self.detector.set_target_keys(box_key="box", label_key="label")
        self.detector.set_box_selector_parameters(
            score_thresh=score_threshold,
            topk_candidates_per_level=300,
            nms_thresh=nms_iou,
            detections_per_img=max_boxes,
        )
        self.spatial_dims = spatial_dims
        self.max_boxes = max_boxes

    def losses(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> Any:
        """Training: the classification and box-regression losses (a dict)."""
        return self.detector(list(images), targets)

    def pad(self, images: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
        """The batch padded to the pyramid's stride, and each image's own size."""
        from monai.apps.detection.networks.retinanet_detector import preprocess_images

        divisible = self.detector.network.size_divisible
        padded, sizes = preprocess_images(list(images), self.spatial_dims, divisible)
        return padded, sizes

    def head_outputs(self, padded: torch.Tensor) -> list[torch.Tensor]:
        """The heads' maps: each level's class logits, then each level's box regression
        (what an exported ONNX model computes; ``decode`` does the rest)."""
        heads = self.detector.network(padded)
        return [*heads[self.detector.cls_key], *heads[self.detector.box_reg_key]]

    def decode(
        self, padded: torch.Tensor, sizes: list[list[int]], outputs: list[torch.Tensor]
    ) -> torch.Tensor:
        """Anchors decoded into boxes, thresholded and suppressed (MONAI's selector), as
        one tensor (batch, max_boxes + 1, 2 * dims + 2): see the module's docstring."""
        detector = self.detector
        half = len(outputs) // 2
        heads = {detector.cls_key: list(outputs[:half]), detector.box_reg_key: list(outputs[half:])}
        logits = heads[detector.cls_key]
        batch = padded.shape[0]
        # the image's score: its most confident anchor, whatever the selection keeps
        image_scores = torch.stack(
            [torch.cat([level[b].flatten() for level in logits]).max() for b in range(batch)]
        ).sigmoid()
        detector.generate_anchors(padded, heads)
        locations = [x.shape[2:].numel() for x in logits]
        reshaped = {
            key: detector._reshape_maps(heads[key])
            for key in (detector.cls_key, detector.box_reg_key)
        }
        found = detector.postprocess_detections(reshaped, detector.anchors, sizes, locations)
        corners = 2 * self.spatial_dims
        out = torch.full((batch, self.max_boxes + 1, corners + 2), -1.0)
        for b, kept in enumerate(found):
            out[b, 0, corners] = image_scores[b]
            boxes = kept["box"][: self.max_boxes]
            count = len(boxes)
            out[b, 1 : count + 1, :corners] = boxes
            out[b, 1 : count + 1, corners] = kept["label_scores"][:count]
            out[b, 1 : count + 1, corners + 1] = kept["label"][:count].float()
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        padded, sizes = self.pad(images)
        return self.decode(padded, sizes, self.head_outputs(padded))


class DetectorHeads(torch.nn.Module):
    """A BoxDetector's network alone, for ONNX export: padded images in, head maps out,
    then the pooled features of its deepest backbone layer (the input gate reads them)."""

    def __init__(self, detector: BoxDetector) -> None:
        from medsight.models.features import FeatureNetwork

        super().__init__()
        self.detector = detector
        self._features = FeatureNetwork(detector, "BoxDetector")

    def forward(self, padded: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._features._captured.clear()
        heads = self.detector.head_outputs(padded)
        return (*heads, self._features._captured[-1])
