"""`Predictor(task)`: run a task on an `Image` and return a `Prediction` in its geometry."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np

from medsight.errors import TaskMismatchError
from medsight.image import Image
from medsight.inference.backends import OnnxBackend, TorchBackend
from medsight.inference.prediction import Prediction
from medsight.inference.preprocess import (
    display_values,
    from_network_grid,
    normalize,
    resample,
    to_network_grid,
)
from medsight.tasks.acceptance import check_acceptance
from medsight.tasks.task import Task

__all__ = ["Predictor"]

Backend = Literal["torch", "onnxruntime"]
#: a custom runtime: any callable mapping a (batch, channels, *spatial) float tensor to output
BackendCallable = Callable[[Any], Any]


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Bit-for-bit repeatable CPU inference: deterministic kernels, fixed thread count."""
    import torch

    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)


class Predictor:
    """Runs one task. ``backend`` is ``"torch"``, ``"onnxruntime"`` (exported on first use),
    or a callable custom runtime; ``tta`` averages over flips of every spatial axis;
    ``explain`` adds a Grad-CAM heatmap for classifiers whose task asks for it."""

    def __init__(
        self,
        task: Task,
        *,
        backend: Backend | BackendCallable = "torch",
        deterministic: bool = True,
        tta: bool = False,
        explain: bool = True,
    ) -> None:
        self.task = task
        self.backend_name = backend if isinstance(backend, str) else "custom"
        self.deterministic = deterministic
        self.tta = tta
        self.explain = explain
        self._backend: Any = None if isinstance(backend, str) else backend
        self._torch_module: Any = None

    # --- backends ---------------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = (
                OnnxBackend(self.task)
                if self.backend_name == "onnxruntime"
                else TorchBackend(self.task)
            )
        return self._backend

    def _torch(self) -> Any:
        if self._torch_module is None:
            backend = self.backend
            self._torch_module = (
                backend.module
                if isinstance(backend, TorchBackend)
                else TorchBackend(self.task).module
            )
        return self._torch_module

    def _run(self, batch: Any) -> Any:
        """Network output for a batch, averaged over flips when TTA is on."""
        import torch

        output = self.backend(batch)
        if not self.tta:
            return output
        spatial = list(range(2, batch.ndim))
        outputs = [output]
        for axis in spatial:
            flipped = self.backend(torch.flip(batch, dims=[axis]))
            outputs.append(
                torch.flip(flipped, dims=[axis]) if flipped.ndim == batch.ndim else flipped
            )
        return torch.stack(outputs).mean(0)

    # --- public -----------------------------------------------------------------------------
    def __call__(self, image: Image) -> Prediction:
        return self.predict(image)

    def predict(self, image: Image) -> Prediction:
        spec = self.task.spec
        outcomes = check_acceptance(spec.acceptance, image)
        refused = [o.reason for o in outcomes if o.severity == "refuse" and not o.passed]
        if refused:
            raise TaskMismatchError(
                f"task {spec.id} cannot run on this image: {'; '.join(refused)}"
            )
        needs_review = any(not o.passed for o in outcomes)
        prediction = Prediction(
            task_id=spec.id,
            task_version=spec.version,
            task_hash=self.task.task_hash,
            weights_sha256=self.task.weights_sha256,
            kind=spec.kind,
            output_names=[o.name for o in spec.outputs],
            affine=image.affine.copy(),
            shape=image.shape,
            backend=self.backend_name,
            state="NEEDS_REVIEW" if needs_review else "OK",
            acceptance=outcomes,
        )
        for network in spec.networks:
            self.task.weights_path(network.name)  # hash check before any work
        with _deterministic(self.deterministic):
            if spec.kind == "classification":
                self._classify(image, prediction)
            else:
                self._segment(image, prediction)
        return prediction

    # --- classification ---------------------------------------------------------------------
    def _classify(self, image: Image, prediction: Prediction) -> None:
        import torch

        spec = self.task.spec
        started = time.perf_counter()
        work, size = to_network_grid(image, spec.preprocessing)
        values = normalize(display_values(work, spec.display), spec.preprocessing.normalize)
        values = resample(values, size) if values.shape[1:] != size else values
        batch = torch.from_numpy(np.ascontiguousarray(values))[None]
        prediction.timings["preprocess"] = time.perf_counter() - started

        started = time.perf_counter()
        logits = self._run(batch)[0].detach().cpu().numpy().astype(np.float64)
        prediction.timings["inference"] = time.perf_counter() - started

        temperature = spec.calibration.temperature
        if logits.shape[0] == 1:
            calibrated = 1.0 / (1.0 + np.exp(-logits / temperature))
        else:
            scaled = logits / temperature
            calibrated = np.exp(scaled - scaled.max())
            calibrated /= calibrated.sum()
        probabilities = {o.name: float(calibrated[o.index]) for o in spec.outputs}
        prediction.logits = logits
        prediction.probabilities = probabilities
        prediction.flags = {
            name: {
                "output": point.output,
                "threshold": point.threshold,
                "probability": probabilities[point.output],
                "flag": probabilities[point.output] >= point.threshold,
            }
            for name, point in spec.operating_points.items()
        }

        if self.explain and spec.explanation == "gradcam":
            from medsight.inference.explain import gradcam

            started = time.perf_counter()
            target = max(spec.outputs, key=lambda o: probabilities[o.name]).index
            heat = gradcam(self._torch(), spec.networks[0].architecture, batch, target)
            if heat is not None:
                prediction.heatmap = resample(heat[None], image.shape)[0]
            prediction.timings["explain"] = time.perf_counter() - started

    # --- segmentation -----------------------------------------------------------------------
    def _segment(self, image: Image, prediction: Prediction) -> None:
        import torch
        from monai.inferers import sliding_window_inference

        spec = self.task.spec
        prep = spec.preprocessing
        started = time.perf_counter()
        work, size = to_network_grid(image, prep)
        values = normalize(display_values(work, spec.display), prep.normalize)
        values = resample(values, size) if values.shape[1:] != size else values
        batch = torch.from_numpy(np.ascontiguousarray(values))[None]
        prediction.timings["preprocess"] = time.perf_counter() - started

        started = time.perf_counter()
        if prep.patch_size is not None:
            logits = sliding_window_inference(
                batch,
                roi_size=tuple(prep.patch_size),
                sw_batch_size=prep.batch_size,
                predictor=self._run,
                overlap=prep.overlap,
                mode="gaussian",
            )
        else:
            logits = self._run(batch)
        probabilities = torch.softmax(torch.as_tensor(logits), dim=1)[0].numpy()
        prediction.timings["inference"] = time.perf_counter() - started

        started = time.perf_counter()
        probabilities = from_network_grid(probabilities, work, image).astype(np.float32)
        probabilities /= np.maximum(probabilities.sum(axis=0, keepdims=True), 1e-6)
        label_map = np.argmax(probabilities, axis=0).astype(np.uint8)
        label_map = _postprocess(label_map, spec)
        prediction.segment_probabilities = probabilities
        prediction.label_map = label_map
        prediction.timings["postprocess"] = time.perf_counter() - started


def _postprocess(label_map: np.ndarray, spec: Any) -> np.ndarray:
    """Largest component, hole filling and minimum size per segment, as the task asks."""
    from scipy import ndimage

    post = spec.postprocessing
    if not (post.largest_component or post.fill_holes or post.min_size_voxels):
        return label_map
    result = np.zeros_like(label_map)
    for output in spec.outputs:
        if output.index == 0:
            continue
        mask = label_map == output.index
        if post.fill_holes:
            mask = ndimage.binary_fill_holes(mask)
        if post.largest_component or post.min_size_voxels:
            components, count = ndimage.label(mask)
            if count:
                sizes = np.bincount(components.ravel())[1:]
                keep = sizes >= post.min_size_voxels
                if post.largest_component:
                    keep &= sizes == sizes.max()
                mask = np.isin(components, np.flatnonzero(keep) + 1)
        result[mask & (result == 0)] = output.index
    return result
