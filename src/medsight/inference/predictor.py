"""`Predictor(task)`: run a task on an `Image` and return a `Prediction` in its geometry."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from medsight.errors import InvalidInputError, TaskMismatchError
from medsight.image import Image
from medsight.inference.backends import (
    EnsembleBackend,
    FeatureCollector,
    OnnxBackend,
    OnnxDetectionBackend,
    TorchBackend,
)
from medsight.inference.boxes import box_lps, fuse_views
from medsight.inference.outputs import (
    calibrated_probabilities,
    ordinal_grades,
    output_probabilities,
)
from medsight.inference.prediction import Prediction
from medsight.inference.preprocess import (
    MappedVolume,
    display_values,
    equalize,
    from_network_grid,
    local_contrast,
    mask_border,
    normalize,
    resample,
    to_network_grid,
    voxelwise_display,
)
from medsight.inference.sliding_window import sliding_window
from medsight.inference.streamed import STREAM_VOXELS, segment_streamed, streamable
from medsight.inference.strips import STRIPS_MIN_PIXELS, resize_mapped
from medsight.tasks.acceptance import CheckOutcome, check_acceptance
from medsight.tasks.spec import Display, Preprocessing, TaskSpec
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


def network_input(
    image: Image, display: Display, preprocessing: Preprocessing
) -> tuple[Image, np.ndarray]:
    """(work image, float32 values on the network grid): the shared preprocessing chain."""
    work, size = to_network_grid(image, preprocessing)
    return work, _grid_values(work, size, display, preprocessing)


def _grid_values(
    work: Image, size: tuple[int, ...], display: Display, preprocessing: Preprocessing
) -> np.ndarray:
    strip_mapping = _strip_mapping(work, size, display, preprocessing)
    if strip_mapping is not None:
        values = resize_mapped(work.array, strip_mapping, (int(size[0]), int(size[1])))
        return _after_resize(values, preprocessing)
    values = display_values(work, display)
    if preprocessing.equalize:
        values = equalize(values)
    values = normalize(values, preprocessing.normalize)
    if values.shape[1:] != size:
        values = resample(values, size)
    return _after_resize(values, preprocessing)


def _after_resize(values: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    if preprocessing.local_contrast:
        values = local_contrast(values, preprocessing.local_contrast)
    if preprocessing.border_mask:
        values = mask_border(values, preprocessing.border_mask)
    return np.ascontiguousarray(values, dtype=np.float32)


def _strip_mapping(
    work: Image, size: tuple[int, ...], display: Display, preprocessing: Preprocessing
) -> Callable[[np.ndarray], np.ndarray] | None:
    """For a very large 2D image going to another grid through a voxel-by-voxel display
    mapping and normalisation, that mapping: the image is then resized strip by strip
    (:mod:`strips`), never copied whole as floats. None for every other image."""
    large = (
        work.spatial_dims == 2
        and not work.is_sequence
        and work.array.ndim == 3
        and int(np.prod(work.shape)) > STRIPS_MIN_PIXELS
        and tuple(size) != tuple(work.shape)
        and not preprocessing.equalize
        and preprocessing.normalize in ("unit", "none")
    )
    return voxelwise_display(work, display) if large else None


class Predictor:
    """Runs one task. ``backend`` is ``"torch"``, ``"onnxruntime"`` (exported on first use),
    or a callable custom runtime used for every network; ``tta`` averages over flips of every
    spatial axis (None: as the task's ``[inference] tta`` says); ``explain`` adds a Grad-CAM
    heatmap for classifiers whose task asks for it; ``threads`` caps ONNX Runtime's threads
    (torch's are per process: ``torch.set_num_threads``).
    """

    def __init__(
        self,
        task: Task,
        *,
        backend: Backend | BackendCallable = "torch",
        deterministic: bool = True,
        tta: bool | None = None,
        explain: bool = True,
        explain_output: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.task = task
        # the output Grad-CAM explains; None: a flagged output, else the most probable one
        self.explain_output = explain_output
        self.threads = threads
        self.backend_name = backend if isinstance(backend, str) else "custom"
        self._custom = None if isinstance(backend, str) else backend
        self.deterministic = deterministic
        self.tta = task.spec.inference.tta if tta is None else tta
        self.explain = explain
        # 3D volumes from this many voxels on are segmented in bounded memory (streamed.py)
        self.stream_voxels = STREAM_VOXELS
        self._backends: dict[str, Any] = {}
        self._torch_modules: dict[str, Any] = {}

    # --- backends ---------------------------------------------------------------------------
    def _index(self, network: str | None) -> int:
        names = [n.name for n in self.task.spec.networks]
        return 0 if network is None else names.index(network)

    def backend(self, network: str | None = None) -> Any:
        index = self._index(network)
        name = self.task.spec.networks[index].name
        if self._custom is not None:
            return self._custom
        ensemble = self.task.spec.ensemble
        if ensemble and name == ensemble[0]:
            if "<ensemble>" not in self._backends:
                members = [self._single_backend(self._index(n)) for n in ensemble]
                self._backends["<ensemble>"] = EnsembleBackend(members)
            return self._backends["<ensemble>"]
        return self._single_backend(index)

    def _single_backend(self, index: int) -> Any:
        name = self.task.spec.networks[index].name
        if name not in self._backends:
            if self.backend_name == "onnxruntime":
                onnx = OnnxDetectionBackend if self.task.spec.kind == "detection" else OnnxBackend
                self._backends[name] = onnx(
                    self.task, index, threads=self.threads, streams=self._streams()
                )
            else:
                self._backends[name] = TorchBackend(self.task, index)
        return self._backends[name]

    def _streams(self) -> int:
        """Sliding-window batches run two at a time on half the threads each: one run over
        all cores leaves them partly idle between layers (the 3D U-Net of
        benchmarks/bench_inference.py: 1.2-1.3x the windows per second on 2 cores)."""
        spec = self.task.spec
        cores = self.threads or os.cpu_count() or 1
        windowed = spec.kind == "segmentation" and spec.preprocessing.patch_size is not None
        return 2 if windowed and cores >= 2 else 1

    def _torch(self, network: str | None = None) -> Any:
        index = self._index(network)
        name = self.task.spec.networks[index].name
        if name not in self._torch_modules:
            backend = self._backends.get(name)
            if not isinstance(backend, TorchBackend):
                backend = TorchBackend(self.task, index)
            self._torch_modules[name] = backend.module
        return self._torch_modules[name]

    def tta_axes(self, spatial_dims: int) -> list[int]:
        """The spatial axes TTA flips along: the task's ``tta_axes`` (those training flipped),
        or every axis for a version that does not say."""
        return self.task.spec.inference.flip_axes(spatial_dims)

    def _run(self, batch: Any, network: str | None = None) -> Any:
        """Network output for a batch, averaged over flips when TTA is on."""
        import torch

        run = self.backend(network)
        output = run(batch)
        if not self.tta:
            return output
        outputs = [output]
        # the gate's reference features are of unflipped inputs: flipped runs add none
        paused = run.paused() if isinstance(run, FeatureCollector) else contextlib.nullcontext()
        with paused:
            for axis in self.tta_axes(batch.ndim - 2):
                flipped = run(torch.flip(batch, dims=[axis + 2]))
                spatial_output = flipped.ndim == batch.ndim  # a map: flip back; scores: as is
                outputs.append(torch.flip(flipped, dims=[axis + 2]) if spatial_output else flipped)
        return torch.stack(outputs).mean(0)

    @contextlib.contextmanager
    def _features_of(self, network: str | None) -> Iterator[list[np.ndarray]]:
        """Collects the pooled features of the runs of ``network`` inside the block."""
        run = self.backend(network)
        rows: list[np.ndarray] = []
        if not isinstance(run, FeatureCollector):
            yield rows
            return
        run.start()
        try:
            yield rows
        finally:
            rows.extend(run.stop())

    # --- checks -----------------------------------------------------------------------------
    def _start(self, image: Image) -> Prediction:
        spec = self.task.spec
        outcomes = check_acceptance(spec.acceptance, image)
        refused = [o.reason for o in outcomes if o.severity == "refuse" and not o.passed]
        if refused:
            raise TaskMismatchError(
                f"task {spec.id} cannot run on this image: {'; '.join(refused)}"
            )
        if self._custom is None:
            for network in spec.networks:
                self.task.weights_path(network.name)  # hash check before any work
        return Prediction(
            task_id=spec.id,
            task_version=spec.version,
            task_hash=self.task.task_hash,
            weights_sha256=self.task.weights_sha256,
            kind=spec.kind,
            output_names=[o.name for o in spec.outputs],
            affine=image.affine.copy(),
            shape=image.shape,
            backend=self.backend_name,
            state="NEEDS_REVIEW" if any(not o.passed for o in outcomes) else "OK",
            acceptance=outcomes,
        )

    # --- public -----------------------------------------------------------------------------
    def __call__(self, image: Image) -> Prediction:
        return self.predict(image)

    def predict(self, image: Image) -> Prediction:
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[Image]) -> list[Prediction]:
        """Predictions for several images; whole-image classifiers run them in batches."""
        predictions = [self._start(image) for image in images]
        # torch's switch, not ONNX Runtime's: its CPU kernels repeat bit for bit at a fixed
        # thread count. Skipping it there also spares each new process the 3 s import of
        # torch._dynamo that torch.use_deterministic_algorithms makes (analyze --jobs).
        with _deterministic(self.deterministic and self.backend_name != "onnxruntime"):
            if self.task.spec.kind == "classification":
                self._classify(list(images), predictions)
            elif self.task.spec.kind == "detection":
                for image, prediction in zip(images, predictions, strict=True):
                    self._detect(image, prediction)
            else:
                for image, prediction in zip(images, predictions, strict=True):
                    self._segment(image, prediction)
        return predictions

    def working_bytes(self, image: Image) -> int:
        """Memory one prediction on ``image`` needs beyond the image itself (an estimate,
        for ``--max-memory``): a segmentation (outputs + 2) float32 volumes of the larger of
        the source and network grids, or on the bounded path (streamed.py) a uint8 label map
        and uint8 foreground probabilities; a classifier four float32 copies of its input."""
        spec = self.task.spec
        voxels = int(np.prod(image.shape))
        if spec.kind != "segmentation":
            return 4 * 4 * voxels * max(1, image.num_channels)
        outputs = max(o.index for o in spec.outputs) + 1
        work, size = to_network_grid(image, spec.preprocessing)
        if streamable(work, size, self, self.stream_voxels):
            return voxels * outputs
        return 4 * (outputs + 2) * max(voxels, int(np.prod(size)))

    def features(self, images: Sequence[Image]) -> np.ndarray | None:
        """The pooled network features of each image, without the rest of a prediction (the
        input gate scores variants of an image with them); None when the task's network has
        no known feature layer, or for a chain or segmentation task."""
        import torch

        spec = self.task.spec
        if spec.kind != "classification" or spec.chain is not None or not images:
            return None
        inputs = [network_input(image, spec.display, spec.preprocessing)[1] for image in images]
        with (
            _deterministic(self.deterministic and self.backend_name != "onnxruntime"),
            self._features_of(None) as rows,
        ):
            self.backend()(torch.from_numpy(np.stack(inputs)))
        return np.concatenate(rows) if rows else None

    # --- classification ---------------------------------------------------------------------
    def _crop_to_segment(self, image: Image, prediction: Prediction) -> Image:
        """The image cropped around the chain's segment (whole image, flagged, if none)."""
        chain = self.task.spec.chain
        assert chain is not None
        _, values = network_input(image, chain.display, chain.preprocessing)
        import torch

        logits = self._run(torch.from_numpy(values)[None], chain.segmenter)
        probabilities = torch.softmax(torch.as_tensor(logits), dim=1)[0].numpy()
        mask = np.argmax(resample(probabilities, image.shape), axis=0) == chain.segment_index
        if not mask.any():
            prediction.state = "NEEDS_REVIEW"
            prediction.acceptance.append(
                CheckOutcome(
                    "chain_segment",
                    False,
                    "review",
                    f"the {chain.segmenter} network found no segment {chain.segment_index}; "
                    "the whole image was classified",
                )
            )
            return image
        index = np.argwhere(mask)
        low, high = index.min(0), index.max(0) + 1
        pad = np.ceil((high - low) * chain.margin).astype(int)
        low = np.maximum(low - pad, 0)
        high = np.minimum(high + pad, image.shape)
        window = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        affine = image.affine.copy()
        affine[:3, 3] = image.world_coordinates(low)[0]
        prediction.details["crop"] = {"index_low": low.tolist(), "index_high": high.tolist()}
        return image.replace(array=image.array[(slice(None), *window)], affine=affine)

    def _classify(self, images: list[Image], predictions: list[Prediction]) -> None:
        import torch

        spec: TaskSpec = self.task.spec
        classifier = spec.chain.classifier if spec.chain else spec.networks[0].name
        started = time.perf_counter()
        inputs = []
        for image, prediction in zip(images, predictions, strict=True):
            source = self._crop_to_segment(image, prediction) if spec.chain else image
            inputs.append(network_input(source, spec.display, spec.preprocessing)[1])
        elapsed = (time.perf_counter() - started) / len(images)

        started = time.perf_counter()
        chunks = []
        size = spec.preprocessing.batch_size
        with self._features_of(classifier) as feature_rows:
            for first in range(0, len(inputs), size):
                batch = torch.from_numpy(np.stack(inputs[first : first + size]))
                chunks.append(self._run(batch, classifier).detach().cpu().numpy())
        features = np.concatenate(feature_rows) if feature_rows else None
        all_logits = np.concatenate(chunks).astype(np.float64)
        inference = (time.perf_counter() - started) / len(images)
        calibrated = output_probabilities(all_logits, spec)

        for number, (image, prediction) in enumerate(zip(images, predictions, strict=True)):
            probabilities = {o.name: float(calibrated[number, o.index]) for o in spec.outputs}
            prediction.logits = all_logits[number]
            prediction.probabilities = probabilities
            prediction.grades = ordinal_grades(probabilities, spec)
            if features is not None and len(features) == len(images):
                prediction.features = features[number]
            prediction.flags = {
                name: {
                    "output": point.output,
                    "threshold": point.threshold,
                    "probability": probabilities[point.output],
                    "flag": probabilities[point.output] >= point.threshold,
                }
                for name, point in spec.operating_points.items()
            }
            prediction.timings["preprocess"] = elapsed
            prediction.timings["inference"] = inference
            if self.explain and spec.explanation == "gradcam" and not spec.chain:
                self._explain(image, inputs[number], prediction, classifier)

    def _explain(
        self, image: Image, values: np.ndarray, prediction: Prediction, network: str
    ) -> None:
        import torch

        from medsight.inference.explain import gradcam

        started = time.perf_counter()
        spec = self.task.spec
        assert prediction.probabilities is not None
        probabilities = prediction.probabilities
        # the output explained: the one asked for, else a flagged one (its finding's location
        # must show that output's evidence even below 0.5), else the most probable
        flagged = [f["output"] for f in prediction.flags.values() if f["flag"]]
        wanted = self.explain_output or (flagged[0] if flagged else None)
        if wanted is None and spec.activation == "sigmoid" and spec.operating_points:
            # independent outputs: the most probable is often a broad one (grade >= 1); the
            # output the task locks a point on is the one a reader asks about
            wanted = next(iter(spec.operating_points.values())).output
        if wanted is not None:
            target = next(o.index for o in spec.outputs if o.name == wanted)
        else:
            target = max(spec.outputs, key=lambda o: probabilities[o.name]).index
        architecture = spec.networks[self._index(network)].architecture
        explained = gradcam(
            self._torch(network),
            architecture,
            torch.from_numpy(values)[None],
            target,
            layer=spec.explanation_layer,
        )
        if explained is not None:
            heat, prediction.heatmap_grid = explained
            prediction.heatmap = resample(heat[None], image.shape)[0]
        prediction.timings["explain"] = time.perf_counter() - started

    # --- segmentation -----------------------------------------------------------------------
    def _segment(self, image: Image, prediction: Prediction) -> None:
        import torch

        spec = self.task.spec
        prep = spec.preprocessing
        started = time.perf_counter()
        work, size = to_network_grid(image, prep)
        if streamable(work, size, self, self.stream_voxels):
            labels, quantized = segment_streamed(self, image, work, prediction)
            started = time.perf_counter()
            prediction.segment_probabilities = quantized
            post = spec.postprocessing
            if post.active:
                labels = _postprocess(np.ascontiguousarray(labels), spec)
            prediction.label_map = labels
            prediction.timings["postprocess"] = time.perf_counter() - started
            return
        # fused preprocessing where windows need no whole-volume step (resampling, z-scores):
        # each window is mapped as it is cut out, and no float copy of the volume is made
        fusable = (
            prep.patch_size is not None
            and size == work.shape
            and prep.normalize in ("none", "unit")
        )
        mapping = voxelwise_display(work, spec.display) if fusable else None
        values: np.ndarray | MappedVolume
        if mapping is not None:
            values = MappedVolume(work.array, mapping)
        else:
            values = _grid_values(work, size, spec.display, prep)
        resampled = values.shape[1:] != work.shape
        prediction.timings["preprocess"] = time.perf_counter() - started

        started = time.perf_counter()
        with self._features_of(None) as feature_rows:
            if prep.patch_size is not None:
                logits = sliding_window(
                    values,
                    prep.patch_size,
                    self._run,
                    overlap=prep.overlap,
                    batch_size=prep.batch_size,
                    streams=getattr(self.backend(), "streams", 1),
                )
            else:
                assert isinstance(values, np.ndarray)
                logits = self._run(torch.from_numpy(values)[None])[0].detach().cpu().numpy()
        if feature_rows:  # windows in the order they finished: sort so the mean repeats
            rows = np.concatenate(feature_rows)
            prediction.features = np.sort(rows, axis=0).mean(axis=0)
        del values
        probabilities = _softmax_inplace(logits)
        prediction.timings["inference"] = time.perf_counter() - started

        started = time.perf_counter()
        if resampled:
            probabilities = from_network_grid(probabilities, work, image)
            # linear resampling keeps the sum near, not exactly at, 1
            probabilities /= np.maximum(probabilities.sum(axis=0, keepdims=True), 1e-6)
            labels = _argmax_uint8(probabilities)
        else:  # same grid: the argmax runs on the contiguous array, then both are mapped back
            labels = from_network_grid(_argmax_uint8(probabilities)[np.newaxis], work, image)[0]
            probabilities = from_network_grid(probabilities, work, image)
        prediction.segment_probabilities = probabilities
        prediction.label_map = _postprocess(np.ascontiguousarray(labels), spec)
        if spec.instances is not None:
            _split_instances(prediction, image, spec)
        prediction.timings["postprocess"] = time.perf_counter() - started

    def _detect(self, image: Image, prediction: Prediction) -> None:
        """Boxes on the source's pixels (flipped views fused when TTA is on) and the image's
        calibrated probability of the class, flagged at the operating points."""
        import torch

        spec = self.task.spec
        assert spec.detection is not None
        started = time.perf_counter()
        work, size = to_network_grid(image, spec.preprocessing)
        values = torch.from_numpy(_grid_values(work, size, spec.display, spec.preprocessing))
        prediction.timings["preprocess"] = time.perf_counter() - started
        started = time.perf_counter()
        run = self.backend()
        with self._features_of(None) as feature_rows:
            views: list[tuple[int | None, np.ndarray]] = [
                (None, np.asarray(run(values[None])[0].detach().cpu().numpy()))
            ]
        if feature_rows:  # the gate's out-of-distribution score reads the unflipped run's
            prediction.features = np.concatenate(feature_rows)[0]
        if self.tta:
            for flip in self.tta_axes(2):
                flipped = torch.flip(values, dims=[flip + 1])[None]
                views.append((flip, np.asarray(run(flipped)[0].detach().cpu().numpy())))
        boxes, scores, image_score = fuse_views(views, size, spec.detection.fusion_iou)
        prediction.timings["inference"] = time.perf_counter() - started
        # network grid -> source pixels: the grid is the source resized, edges to edges
        scale = np.array(work.shape, dtype=np.float64) / np.array(size, dtype=np.float64)
        boxes = boxes * np.tile(scale, 2)
        label = spec.outputs[0].name
        prediction.boxes = [
            {
                "label": label,
                "score": round(float(score), 4),
                "pixel_box": [round(float(v), 2) for v in box],
                "lps_box": box_lps(box, image.affine),
            }
            for box, score in zip(boxes, scores, strict=True)
        ]
        clipped = min(max(image_score, 1e-7), 1 - 1e-7)
        logits = np.array([np.log(clipped / (1 - clipped))])
        prediction.logits = logits
        temperature = spec.calibration.temperature
        probability = float(calibrated_probabilities(logits[None], temperature)[0, 0])
        prediction.probabilities = {label: probability}
        prediction.flags = {
            name: {
                "output": point.output,
                "threshold": point.threshold,
                "probability": probability,
                "flag": probability >= point.threshold,
            }
            for name, point in spec.operating_points.items()
        }

    # --- whole-slide images -----------------------------------------------------------------
    def predict_slide(
        self, slide: Any, *, level: int, tile_size: int = 512, min_tissue: float = 0.25
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probability map (k, i, j) at ``level`` of a whole slide, and that level's affine.

        Only tissue tiles are run; background keeps probability 1 for output 0. A 2D
        segmentation task fills each tile's pixels; a classifier paints each tile with its
        class probabilities.
        """
        spec = self.task.spec
        if spec.acceptance.spatial_dims != 2:
            raise TaskMismatchError(f"task {spec.id} is 3D; whole-slide images are 2D")
        info = slide.levels[level] if 0 <= level < len(slide.levels) else None
        if info is None:
            raise InvalidInputError(f"level {level} does not exist", path=slide.path)
        outputs = len(spec.outputs)
        probability = np.zeros((outputs, info.width, info.height), dtype=np.float32)
        probability[0] = 1.0
        from medsight.imaging.tissue import tissue_tiles

        for tile in tissue_tiles(slide, tile_size, level=level, min_tissue=min_tissue):
            region = slide.read_region((tile.x, tile.y), level, (tile.width, tile.height))
            prediction = self.predict(region)
            i0 = round(tile.x / info.downsample)
            j0 = round(tile.y / info.downsample)
            window = (slice(None), slice(i0, i0 + tile.width), slice(j0, j0 + tile.height))
            if prediction.segment_probabilities is not None:
                probability[window] = prediction.segment_probabilities
            elif prediction.probabilities is not None:
                for output in spec.outputs:
                    probability[(output.index, *window[1:])] = prediction.probabilities[output.name]
        return probability, slide.level_affine(level)


#: voxels per slab of the softmax and argmax: temporaries of 4 MB each, not a volume's worth
_SLAB_VOXELS = 1 << 20


def _softmax_inplace(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0, in place (float32, torch for all cores), slab by slab along the
    first spatial axis: its maximum and sum are a slab, not a volume, of temporaries."""
    import torch

    logits = np.require(logits, dtype=np.float32, requirements=["W"])
    tensor = torch.from_numpy(logits)
    spatial = logits.shape[1:]
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(spatial[1:]))))
    for first in range(0, spatial[0], step):
        slab = tensor[:, first : first + step]
        slab.sub_(slab.amax(dim=0, keepdim=True)).exp_()
        slab.div_(slab.sum(dim=0, keepdim=True))
    return logits


def _argmax_uint8(probabilities: np.ndarray) -> np.ndarray:
    """Argmax over axis 0 as uint8, slab by slab along the first spatial axis (a whole-volume
    argmax would build an int64 volume, twice the size of a float32 one)."""
    import torch

    spatial = probabilities.shape[1:]
    labels = np.empty(spatial, dtype=np.uint8 if len(probabilities) <= 256 else np.uint16)
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(spatial[1:]))))
    if not probabilities.flags.c_contiguous:  # a strided view (mapped back): numpy per slab
        for first in range(0, spatial[0], step):
            labels[first : first + step] = np.argmax(probabilities[:, first : first + step], 0)
        return labels
    # contiguous: running maximum in torch (elementwise, all cores; torch.argmax over the
    # leading axis is an order of magnitude slower)
    source = torch.from_numpy(np.require(probabilities, requirements=["W"]))
    target = torch.from_numpy(labels)
    for first in range(0, spatial[0], step):
        slab = source[:, first : first + step]
        best = slab[0].clone()
        chosen = target[first : first + step]
        chosen.zero_()
        for index in range(1, slab.shape[0]):
            chosen[slab[index] > best] = index
            torch.maximum(best, slab[index], out=best)
    return labels


def _split_instances(prediction: Prediction, image: Image, spec: TaskSpec) -> None:
    """The instance map of a task with ``[instances]``; the label map then shows each object
    whole (its rim merged into it), as a reader expects to see a nucleus."""
    from medsight.inference.instances import instance_map

    options = spec.instances
    assert options is not None and prediction.segment_probabilities is not None
    index = {o.name: o.index for o in spec.outputs}
    pixel_area = (
        float(np.prod(image.spacing[:2])) * 1e6 if image.spacing_known else None
    )  # mm2 -> um2
    instances = instance_map(
        np.asarray(prediction.segment_probabilities),
        index[options.interior],
        index[options.boundary],
        options,
        pixel_area,
    )
    prediction.instance_map = instances
    prediction.label_map = np.where(instances > 0, index[options.interior], 0).astype(
        prediction.label_map.dtype if prediction.label_map is not None else np.uint8
    )


def _postprocess(label_map: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Largest component, hole filling and minimum size per segment, as the task asks."""
    from scipy import ndimage

    post = spec.postprocessing
    if not post.active:
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
    return _fill_cavities(result, spec) if post.enclosed_cavities else result


def _fill_cavities(label_map: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """In each slice (the last axis of a volume), what a wall and its cavity enclose becomes
    cavity. Slice by slice because a cine's cavity is open at the base: in 3D it would not
    be enclosed."""
    from scipy import ndimage

    index = {o.name: o.index for o in spec.outputs}
    stack = label_map if label_map.ndim == 3 else label_map[..., np.newaxis]
    for cavity, wall in spec.postprocessing.enclosed_cavities.items():
        for k in range(stack.shape[-1]):
            plane = stack[..., k]
            inside = np.isin(plane, (index[cavity], index[wall]))
            enclosed = ndimage.binary_fill_holes(inside) & ~inside
            if (plane == index[cavity]).any():  # never a cavity where none was found
                plane[enclosed] = index[cavity]
    return label_map
