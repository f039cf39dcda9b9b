"""`InputGate`: may this task's model judge this image? Tags and pixels before the model, the
out-of-distribution score with it (it reads the network's features)."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np

from medsight.gate.checks import GateCheck, GateResult
from medsight.gate.ood import MahalanobisModel
from medsight.gate.pixels import Band, pixel_checks
from medsight.gate.tags import tag_checks
from medsight.image import Image
from medsight.inference import Prediction, Predictor
from medsight.tasks.task import Task

__all__ = ["InputGate"]

#: the score of the image turned (or inverted) must be this much lower to be named the cause.
#: Measured on cxr-pneumonia: on 300 held-back films the lowest ratio of any turned or
#: inverted copy to the film as given was 0.99; on 40 of them turned by 180 degrees the
#: median was 0.52 and the highest 0.82.
_EXPLAINING_RATIO = 0.9
#: the orientation probe (four more network runs) runs from this share of the OOD threshold:
#: turned films scored at least 0.9 of it (40 of 40 measured), held-back films a median of
#: 0.63, so most images in distribution skip the probe
_PROBE_FROM = 0.75


class InputGate:
    """The gate of one task (its fitted files are read once and their hashes checked)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.spec = task.spec.gate

    @cached_property
    def reference(self) -> dict[str, Any]:
        if self.spec.reference is None:
            return {}
        return dict(json.loads(self.task.gate_path("reference").read_text()))

    @cached_property
    def bands(self) -> dict[str, Band]:
        statistics = self.reference.get("statistics", {})
        return {name: (entry["band"][0], entry["band"][1]) for name, entry in statistics.items()}

    @cached_property
    def ood_model(self) -> MahalanobisModel | None:
        if self.spec.ood is None:
            return None
        return MahalanobisModel.load(self.task.gate_path("ood"))

    @property
    def expects(self) -> str:
        return self.spec.expects or f"the images task {self.task.id} was trained on"

    def before_model(
        self, image: Image, *, use_reference: bool = True
    ) -> tuple[GateResult, dict[str, float]]:
        """Tag and pixel (and photograph) checks, and the image statistics they read; without
        ``use_reference`` only the fixed checks (not the bands fitted on training images)."""
        result = GateResult(ood_fitted=self.ood_model is not None)
        if self.ood_model is None:
            result.notes.append(
                "no fitted out-of-distribution gate for this task version: tag and pixel "
                "checks only (fit one with `medsight gate fit`)"
            )
        result.checks += tag_checks(self.task.spec, image)
        grey = self.task.spec.display.color == "grayscale"
        bands = self.bands if use_reference else {}
        checks, statistics = pixel_checks(image, bands, self.spec.photo, grey=grey)
        result.checks += checks
        return result, statistics

    def with_model(
        self,
        result: GateResult,
        prediction: Prediction,
        image: Image,
        predictor: Predictor | None = None,
    ) -> GateResult:
        """Adds the out-of-distribution check from the prediction's features."""
        model, ood = self.ood_model, self.spec.ood
        if model is None or ood is None:
            return result
        if prediction.features is None or prediction.features.shape[-1] != model.channels:
            result.checks.append(
                GateCheck(
                    "out_of_distribution",
                    "ood",
                    "review",
                    "the network gave no features to score: out-of-distribution check not run",
                )
            )
            return result
        score = float(model.score(prediction.features)[0])
        probe = np.isfinite(score) and score >= _PROBE_FROM * ood.threshold
        cause = self._cause(image, score, predictor) if probe else None
        if not np.isfinite(score) or score > ood.threshold:
            reason = (
                f"this image does not look like {self.expects} (out-of-distribution score "
                f"{score:.1f}, threshold {ood.threshold:.1f})"
            )
            if cause:
                reason += f"; {cause}"
            result.checks.append(
                GateCheck(
                    "out_of_distribution", "ood", "withhold", reason, score, ood.threshold, "above"
                )
            )
        else:
            result.checks.append(
                GateCheck(
                    "out_of_distribution",
                    "ood",
                    "pass",
                    f"in distribution (score {score:.1f}, threshold {ood.threshold:.1f})",
                    score,
                    ood.threshold,
                    "above",
                )
            )
            if cause:  # typical enough as given, but far more typical turned or inverted
                result.checks.append(
                    GateCheck(
                        "orientation",
                        "ood",
                        "withhold",
                        f"this image does not look like {self.expects} as given: {cause}",
                        score,
                        ood.threshold,
                        "above",
                    )
                )
        return result

    def _cause(self, image: Image, score: float, predictor: Predictor | None) -> str | None:
        """For radiograph tasks: is the image rotated or its grey levels inverted? Named when
        the turned or inverted image scores far lower than the image as given."""
        if not self.spec.orientation or predictor is None or image.spatial_dims != 2:
            return None
        model = self.ood_model
        assert model is not None
        array = image.array
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        candidates = {
            "it looks rotated by 90 degrees": np.rot90(array, 1, axes=(1, 2)),
            "it looks rotated by 180 degrees": np.rot90(array, 2, axes=(1, 2)),
            "it looks rotated by 270 degrees": np.rot90(array, 3, axes=(1, 2)),
            "its grey levels look inverted against its photometric interpretation": (
                (high + low) - array.astype(np.float64)
            ).astype(array.dtype),
        }
        images = [
            image.replace(array=np.ascontiguousarray(values)) for values in candidates.values()
        ]
        features = predictor.features(images)
        if features is None:
            return None
        scores = model.score(features)
        best = int(np.argmin(scores))
        threshold = self.spec.ood.threshold if self.spec.ood else score
        if scores[best] < score * _EXPLAINING_RATIO and scores[best] <= threshold:
            return f"{list(candidates)[best]} (score {scores[best]:.1f} when corrected)"
        return None
