"""Run a network on a batch: PyTorch, or ONNX Runtime from an exported model.

ONNX models are exported on first use into a cache keyed by the task hash
(``MEDSIGHT_CACHE``, default ``~/.cache/medsight``), so nothing large is committed twice and
a changed task never reuses a stale export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medsight._optional import require
from medsight.errors import ModelLoadError
from medsight.models import load_network
from medsight.models.features import FeatureNetwork
from medsight.tasks.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "EnsembleBackend",
    "FeatureCollector",
    "OnnxBackend",
    "TorchBackend",
    "cache_dir",
    "export_onnx",
    "network_input_shape",
]


def cache_dir() -> Path:
    configured = os.environ.get("MEDSIGHT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "medsight"


def network_input_shape(task: Task, network_index: int = 0) -> tuple[int, ...]:
    """The (1, channels, *spatial) shape a network is exported with."""
    network = task.spec.networks[network_index]
    channels = int(network.arguments.get("in_channels", 1))  # type: ignore[arg-type]
    chain = task.spec.chain
    prep = (
        chain.preprocessing
        if chain and chain.segmenter == network.name
        else (task.spec.preprocessing)
    )
    spatial = prep.patch_size or prep.resize
    if spatial is None:
        raise ModelLoadError(f"task {task.id} gives neither patch_size nor resize to export with")
    return (1, channels, *spatial)


class FeatureCollector:
    """Pooled network features of the batches run while collecting (the input gate's OOD
    score reads them). ``paused()`` leaves out the runs of the calling thread, e.g. the
    flipped copies of test-time augmentation."""

    def __init__(self) -> None:
        self.collected: list[np.ndarray] | None = None
        self._local = threading.local()

    def start(self) -> None:
        self.collected = []

    def stop(self) -> list[np.ndarray]:
        collected, self.collected = self.collected or [], None
        return collected

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._local.paused = True
        try:
            yield
        finally:
            self._local.paused = False

    def add(self, features: Any) -> None:
        if self.collected is None or features is None or getattr(self._local, "paused", False):
            return
        array = features.detach().cpu().numpy() if hasattr(features, "detach") else features
        self.collected.append(np.asarray(array, dtype=np.float64))  # list.append: thread-safe


class TorchBackend(FeatureCollector):
    name = "torch"

    def __init__(self, task: Task, network_index: int = 0) -> None:
        super().__init__()
        network = task.spec.networks[network_index]
        self.module = load_network(task, network.name)
        self._features = FeatureNetwork(self.module, network.architecture)

    def __call__(self, batch: Any) -> Any:
        import torch

        # no_grad, not inference_mode: MONAI's sliding window updates outputs in place
        with torch.no_grad():
            if self.collected is None or not self._features.has_features:
                return self.module(batch)
            output, features = self._features.forward_with_features(batch)
        self.add(features)
        return output


class EnsembleBackend(FeatureCollector):
    """Several backends run on the same batch; their outputs (logits) and pooled features are
    averaged. Each member is its own torch module or ONNX session."""

    name = "ensemble"

    def __init__(self, members: list[Any]) -> None:
        super().__init__()
        self.members = members
        self.streams = getattr(members[0], "streams", 1)

    def start(self) -> None:
        for member in self.members:
            if isinstance(member, FeatureCollector):
                member.start()

    def stop(self) -> list[np.ndarray]:
        """The members' features averaged row by row. Each member's rows are joined first:
        with parallel streams a member's batches finish in its own order (a last, smaller
        batch may come at any place), so batch-by-batch pairing would mix shapes. Rows pair
        up exactly where order is fixed (classifiers: one row per image, in order); for
        sliding windows the predictor averages all rows anyway."""
        rows = [m.stop() for m in self.members if isinstance(m, FeatureCollector)]
        joined = [np.concatenate(r) for r in rows if r]
        if not joined or len(joined) != len(rows):
            return []
        if any(j.shape != joined[0].shape for j in joined):
            return []
        return [np.mean(joined, axis=0)]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for member in self.members:
                if isinstance(member, FeatureCollector):
                    stack.enter_context(member.paused())
            yield

    def __call__(self, batch: Any) -> Any:
        import torch

        return torch.stack([member(batch) for member in self.members]).mean(0)


#: bumped when the exported graph changes, so cached exports of an older form are not reused
#: 2: single-slope PReLU exported as LeakyRelu; 3: a "features" output; 4: a detector's
#: heads with its features (an export of a detector's heads alone is not reused)
EXPORT_FORM = 4


def _single_slope_prelu_as_leaky_relu(module: Any) -> Any:
    """Replace every PReLU with one learned slope by LeakyReLU with that slope: the same
    function, bit for bit, once the weights are frozen, but ONNX Runtime runs LeakyRelu
    as a plain elementwise kernel where PRelu broadcasts a slope tensor (measured on the
    3D U-Net: PRelu 13% of the run, LeakyRelu 2%; benchmarks/bench_inference.py)."""
    import torch

    for name, child in module.named_children():
        if isinstance(child, torch.nn.PReLU) and child.weight.numel() == 1:
            setattr(module, name, torch.nn.LeakyReLU(float(child.weight.detach())))
        else:
            _single_slope_prelu_as_leaky_relu(child)
    return module


def export_onnx(task: Task, path: Path | None = None, network_index: int = 0) -> Path:
    """Export a task's network to ONNX (dynamic batch) and return the file."""
    import torch

    network = task.spec.networks[network_index]
    if path is None:
        path = cache_dir() / "onnx" / task.task_hash / f"{network.name}.v{EXPORT_FORM}.onnx"
    if path.is_file():
        return path
    require("onnx", "all")
    module = _single_slope_prelu_as_leaky_relu(load_network(task, network.name))
    example = torch.zeros(network_input_shape(task, network_index))
    if task.spec.kind == "detection":
        # the heads only: anchor decoding and suppression run after ONNX Runtime, in torch
        # (OnnxDetectionBackend), on the input padded as the detector pads it
        from medsight.models.detector import DetectorHeads

        example, _ = module.pad(example)
        module = DetectorHeads(module)
        count = len(module(example)) - 1
        outputs = [*(f"head_{k}" for k in range(count)), "features"]
    else:
        with_features = FeatureNetwork(module, network.architecture)
        outputs = ["output"]
        if with_features.has_features:  # the input gate's OOD score reads the pooled features
            module = with_features.as_module()
            outputs.append("features")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about its own deprecations
        torch.onnx.export(
            module,
            (example,),
            str(partial),
            dynamo=False,
            input_names=["input"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["input", *outputs]},
            opset_version=17,
        )
    partial.replace(path)  # atomic: a crash never leaves a half-written model in the cache
    logger.info("exported %s %s to %s", task.id, network.name, path)
    return path


class OnnxBackend(FeatureCollector):
    """An ONNX Runtime session. ``streams`` runs may be in flight at once (from as many
    threads; ``sliding_window`` does this), each on ``threads // streams`` threads."""

    name = "onnxruntime"

    def __init__(
        self, task: Task, network_index: int = 0, *, threads: int | None = None, streams: int = 1
    ) -> None:
        super().__init__()
        ort = require("onnxruntime", "all")
        path = export_onnx(task, network_index=network_index)
        self.streams = max(1, streams)
        options = ort.SessionOptions()
        if threads or self.streams > 1:
            options.intra_op_num_threads = max(1, (threads or os.cpu_count() or 1) // self.streams)
        # idle ORT threads otherwise spin between runs and steal the cores that blend the
        # sliding-window outputs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a corrupt cache entry: say where it is
            raise ModelLoadError(f"cannot load the exported model ({exc})", path=path) from exc

    def __call__(self, batch: Any) -> Any:
        import torch

        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        outputs = self.session.run(None, {"input": array})
        if len(outputs) > 1:
            self.add(outputs[1])
        return torch.from_numpy(outputs[0])


class OnnxDetectionBackend(OnnxBackend):
    """A detector's heads in ONNX Runtime, its anchors decoded after in torch (the box
    selection is MONAI's Python: it does not export)."""

    def __init__(self, task: Task, network_index: int = 0, **options: Any) -> None:
        from medsight.models import build_network

        super().__init__(task, network_index, **options)
        # anchors, box coding and selection hold no weights: an untrained copy decodes
        self.decoder = build_network(task.spec.networks[network_index]).eval()
        self.with_features = self.session.get_outputs()[-1].name == "features"

    def __call__(self, batch: Any) -> Any:
        import torch

        with torch.no_grad():
            padded, sizes = self.decoder.pad(batch)
            array = np.ascontiguousarray(padded.numpy(), dtype=np.float32)
            heads = self.session.run(None, {"input": array})
            if self.with_features:
                self.add(heads.pop())
            return self.decoder.decode(padded, sizes, [torch.from_numpy(h) for h in heads])
