"""End-to-end inference throughput: medsight vs a plain MONAI pipeline, same network and weights.

Four cases, each from files on disk to a result:
  1. 2D classifier batch: 64 chest X-ray JPEGs (Kermany), DenseNet at 128x128;
  2. 2D large-image segmentation: DRIVE fundus TIFFs (565x584), 2D U-Net, 96x96 sliding window;
  3. 3D CT volume: 256x256x200 built from the TotalSegmentator CT, 3D U-Net, 96^3 window,
     from the NIfTI file to a label-map NIfTI on disk in the input's own orientation;
  4. a folder of four such volumes: MONAI's pipeline in a loop against medsight's analysis
     runner (what `medsight analyze FOLDER` does: result.json, mask NIfTI, overlay and a
     provenance line per study), in this process (--jobs 1) and in two worker processes
     started inside the timing (--jobs 2).
MONAI side: LoadImage + EnsureChannelFirst + (Orientation) + intensity scaling + (Resize) +
the torch network (sliding_window_inference with Gaussian blending where patched), argmax;
for the 3D case the MONAI tutorial post-processing too (softmax, Invertd back to the input
orientation, argmax, SaveImaged), because medsight's result is also in the input geometry and
on disk. The 3D line also prints the network-only time of each, to show what is left to win.
medsight side: its readers + Predictor with the ONNX Runtime backend (the model exported once
before timing, as the cache does on first use), probabilities mapped back to source geometry.

Usage: python benchmarks/bench_inference.py [--repeats 5] [--cases 2d,3d,folder]
Prints the median time per case over interleaved rounds, the throughput ratio MONAI time /
medsight time with the spread of the round-by-round ratios (issue 16's 3D target: 2.5), and for
the 3D case the peak memory growth against (classes + 2) x the input volume as float32.
Peak memory is the growth of RSS, sampled every 20 ms: for the 3D budget in fresh processes
where RSS follows live memory (see live_memory_growth), and as seen in the timed runs.
Case 3 is the latency of one volume, case 4 the throughput on many.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/_tasks.py builds the task folders

CACHE = HERE.parent / "bench-data"


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _rss_kib() -> int:
    """Resident set size from /proc/self/statm: cheap enough to sample without slowing the
    measured code (smaps_rollup takes the mm lock and would)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_KIB


def measure(
    function: Callable[[], object], repeats: int, *, warm_up: bool = True
) -> tuple[float, float]:
    """(best seconds, peak RSS growth in bytes) over ``repeats`` runs after a warm-up."""
    if warm_up:
        function()
    best, peak_growth = float("inf"), 0.0
    for _ in range(repeats):
        baseline = _rss_kib()
        peak = [baseline]
        done = threading.Event()

        def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_kib())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
        done.set()
        sampler.join()
        del result
        peak_growth = max(peak_growth, (peak[0] - baseline) * 1024.0)
    return best, peak_growth


def ct_volume_path(shape: tuple[int, int, int] = (256, 256, 200)) -> Path:
    """A CT of ``shape`` (int16) built from the TotalSegmentator CT, stored LPS-ordered."""
    import nibabel as nib
    from scipy import ndimage

    from medsight.datasets import shared_data_dir

    target = CACHE / f"ct_{'x'.join(str(n) for n in shape)}_lps.nii.gz"
    if target.is_file():
        return target
    source = nib.load(shared_data_dir() / "totalseg-ct" / "example_ct.nii.gz")
    data = np.asarray(source.dataobj, dtype=np.float32)
    factors = np.array(shape) / np.array(data.shape)
    volume = ndimage.zoom(data, factors, order=1).astype(np.int16)
    affine = source.affine @ np.diag([*(1 / factors), 1.0])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # store LPS-ordered: both pipelines must reorient
    flip[:2, 3] = [volume.shape[0] - 1, volume.shape[1] - 1]
    CACHE.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(volume[::-1, ::-1].copy(), affine @ flip), target)
    return target


def bench_3d_task(folder: Path, classes: int = 3) -> Any:
    """The benchmark's own 3D task: a U-Net on 96^3 windows of CT values in [-1000, 1000]."""
    from tests._tasks import segmenter_3d_task

    return segmenter_3d_task(
        folder,
        acceptance={"spatial_dims": 3, "unknown_modality": "accept", "modalities": ["CT"]},
        arguments={
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": classes,
            "channels": [8, 16, 32, 64],
            "strides": [2, 2, 2],
            "num_res_units": 1,
        },
        preprocessing={
            "reorient": "RAS",
            "patch_size": [96, 96, 96],
            "overlap": 0.25,
            "normalize": "none",
            "batch_size": 2,
        },
        display={"window": "range", "value_range": [-1000.0, 1000.0]},
    )


def ct_folder(volume_path: Path, count: int = 4) -> Path:
    """``count`` different volumes (offset by a few HU, so each is its own study)."""
    import nibabel as nib

    folder = CACHE / f"ct_256x256x200_x{count}"
    if len(list(folder.glob("*.nii.gz"))) == count:
        return folder
    folder.mkdir(exist_ok=True)
    source = nib.load(volume_path)
    volume = np.asarray(source.dataobj)
    for number in range(count):
        image = nib.Nifti1Image((volume + number).astype(np.int16), source.affine)
        nib.save(image, folder / f"ct{number}.nii.gz")
    return folder


class CtCase:
    """Case 3: the 3D U-Net task and both pipelines, from a NIfTI file to a label map on disk."""

    classes = 3

    def __init__(self, work: Path) -> None:
        import torch
        from monai.inferers import sliding_window_inference
        from monai.transforms import (
            Activationsd,
            AsDiscreted,
            Compose,
            EnsureChannelFirstd,
            Invertd,
            LoadImaged,
            Orientationd,
            SaveImaged,
            ScaleIntensityRanged,
        )

        from medsight.inference import Predictor, export_onnx
        from medsight.io import read_image, write_nifti
        from medsight.models import load_network

        self.volume_path = volume_path = ct_volume_path()
        self.task_dir = work / "seg3d"
        task = bench_3d_task(self.task_dir, self.classes)
        export_onnx(task)
        self.model3d = model3d = load_network(task)
        self.ours3d = ours3d = Predictor(task, backend="onnxruntime")
        keys = ["image"]
        monai_pre = Compose(
            [
                LoadImaged(keys),
                EnsureChannelFirstd(keys),
                Orientationd(keys, axcodes="RAS"),
                ScaleIntensityRanged(keys, -1000, 1000, 0.0, 1.0, clip=True),
            ]
        )
        monai_post = Compose(
            [
                Activationsd("pred", softmax=True),
                Invertd("pred", transform=monai_pre, orig_keys="image", nearest_interp=False),
                AsDiscreted("pred", argmax=True),
                SaveImaged(
                    "pred",
                    output_dir=str(work / "monai-out"),
                    output_postfix="seg",
                    separate_folder=False,
                    output_dtype=np.uint8,
                    print_log=False,
                ),
            ]
        )

        def monai_segment_3d(path: Path = volume_path) -> object:
            data = monai_pre({"image": str(path)})
            with torch.no_grad():
                data["pred"] = sliding_window_inference(
                    data["image"][None], (96, 96, 96), 2, model3d, overlap=0.25, mode="gaussian"
                )[0]
            return monai_post(data)

        def medsight_segment_3d() -> object:
            image = read_image(volume_path)
            label_map = ours3d.predict(image).label_map
            assert label_map is not None
            return write_nifti(image.replace(array=label_map[None]), work / "ours-seg.nii.gz")

        self.monai, self.medsight = monai_segment_3d, medsight_segment_3d


def live_memory_growth(pipeline: str, work: Path, repeats: int) -> float:
    """Peak RSS growth of one pipeline of case 3, measured in a fresh process where glibc
    returns every freed block of 1 MiB or more to the system (MALLOC_MMAP_THRESHOLD_), so
    that RSS follows live memory. Untimed: that setting slows allocation-heavy code, and in
    the timed runs RSS also holds freed blocks that glibc keeps, whatever ran before."""
    import json
    import subprocess

    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    command = [sys.executable, __file__, "--memory-of", pipeline, "--repeats", str(repeats)]
    command += ["--work", str(work / f"memory-{pipeline}")]
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return float(json.loads(output.stdout.strip().splitlines()[-1])["peak_growth"])


def memory_of(pipeline: str, work: Path, repeats: int) -> None:
    import json

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    ct = CtCase(work)
    _, growth = measure(ct.medsight if pipeline == "medsight" else ct.monai, repeats)
    print(json.dumps({"peak_growth": growth}))


def main() -> None:
    import torch

    from medsight.datasets import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cases",
        default="2d,3d,folder",
        help="which comparisons: 2d (classifier, 2D segmentation), 3d (one CT), folder (4 CTs)",
    )
    parser.add_argument("--memory-of", choices=["medsight", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:  # the untimed memory run, in its own process (live_memory_growth)
        args.work.mkdir(parents=True, exist_ok=True)
        os.environ["MEDSIGHT_CACHE"] = str(args.work / "cache")
        memory_of(args.memory_of, args.work, args.repeats)
        return
    data = shared_data_dir()
    work = Path(tempfile.mkdtemp(prefix="medsight-bench-"))
    os.environ["MEDSIGHT_CACHE"] = str(work / "cache")
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"{os.cpu_count()} cores, median of {args.repeats} interleaved runs (spread of the "
        "round-by-round ratios in brackets); ratio = MONAI time / medsight time"
    )

    cases = set(args.cases.split(","))
    if "2d" in cases:
        run_2d_cases(data, work, args.repeats)
    if cases & {"3d", "folder"}:
        ct = CtCase(work)
        if "3d" in cases:
            run_3d_case(ct, work, args.repeats)
        if "folder" in cases:
            run_folder_case(ct, work, args.repeats)


def run_2d_cases(data: Path, work: Path, repeats: int) -> None:
    """Cases 1 and 2: a batch of chest X-rays through a classifier, DRIVE images through a
    2D U-Net on patches."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import Compose, LoadImage, Resize, ScaleIntensity
    from tests._tasks import classifier_task, segmenter_2d_task

    from medsight.inference import Predictor, export_onnx
    from medsight.io import read_image
    from medsight.models import load_network

    # --- 1. 2D classifier batch ----------------------------------------------------------
    files = sorted((data / "kermany-cxr" / "train" / "PNEUMONIA").glob("*.jpeg"))[:64]
    task = classifier_task(
        work / "cls",
        acceptance={"spatial_dims": 2, "unknown_modality": "accept", "modalities": ["DX"]},
        preprocessing={"resize": [128, 128], "normalize": "unit", "batch_size": 32},
        arguments={
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "init_features": 32,
            "growth_rate": 16,
            "block_config": [4, 8, 8, 6],
            "bn_size": 4,
        },
    )
    export_onnx(task)
    model = load_network(task)
    ours = Predictor(task, backend="onnxruntime", explain=False)
    monai_load = Compose(
        [
            LoadImage(image_only=True, ensure_channel_first=True),
            ScaleIntensity(),
            Resize((128, 128)),
        ]
    )

    def monai_classify() -> object:
        batch = []
        for path in files:
            image = monai_load(str(path))
            batch.append(image[:1] if image.shape[0] == 3 else image)  # grayscale JPEG as RGB
        outputs = []
        with torch.no_grad():
            for first in range(0, len(batch), 32):
                outputs.append(torch.softmax(model(torch.stack(batch[first : first + 32])), 1))
        return torch.cat(outputs)

    def medsight_classify() -> object:
        return ours.predict_many([read_image(p) for p in files])

    report(
        "2D classifier, 64 images",
        *compare(repeats, monai_classify, medsight_classify),
    )

    # --- 2. 2D large-image segmentation --------------------------------------------------
    fundus = sorted((data / "drive" / "training" / "images").glob("*.tif"))[:4]
    task = segmenter_2d_task(
        work / "seg2d",
        preprocessing={
            "patch_size": [96, 96],
            "overlap": 0.25,
            "normalize": "unit",
            "batch_size": 16,
        },
        arguments={
            "spatial_dims": 2,
            "in_channels": 3,
            "out_channels": 2,
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 2,
        },
        display={"window": "minmax", "color": "rgb"},
    )
    export_onnx(task)
    model2d = load_network(task)
    ours2d = Predictor(task, backend="onnxruntime")
    monai_2d = Compose(
        [
            LoadImage(reader="PILReader", image_only=True, ensure_channel_first=True),
            ScaleIntensity(),
        ]
    )

    def monai_segment_2d() -> object:
        results = []
        for path in fundus:
            image = monai_2d(str(path))[None]
            with torch.no_grad():
                logits = sliding_window_inference(
                    image, (96, 96), 16, model2d, overlap=0.25, mode="gaussian"
                )
            results.append(torch.argmax(torch.softmax(logits, 1), 1))
        return results

    def medsight_segment_2d() -> object:
        return [ours2d.predict(read_image(p)).label_map for p in fundus]

    report(
        f"2D segmentation, {len(fundus)} fundus 565x584",
        *compare(repeats, monai_segment_2d, medsight_segment_2d),
    )


def run_3d_case(ct: CtCase, work: Path, repeats: int) -> None:
    """Case 3: one CT from a NIfTI file to a label map on disk, and the network alone."""
    import torch

    # --- 3. 3D CT volume -----------------------------------------------------------------
    classes, model3d, ours3d = ct.classes, ct.model3d, ct.ours3d
    monai_segment_3d, medsight_segment_3d = ct.monai, ct.medsight
    window = torch.zeros(2, 1, 96, 96, 96)
    ort_window = ours3d.backend()
    streams = ThreadPoolExecutor(ort_window.streams)

    def ort_as_medsight_runs_it() -> object:  # the two windows in parallel streams
        return list(streams.map(ort_window, window.split(2 // ort_window.streams)))

    with torch.no_grad():
        network_torch = measure(lambda: model3d(window), repeats)[0] * 24
    network_ort = measure(ort_as_medsight_runs_it, repeats)[0] * 24

    monai_result, ours_result = compare(repeats, monai_segment_3d, medsight_segment_3d)
    report("3D CT 256x256x200", monai_result, ours_result)
    print(
        f"  network alone (48 windows, 2 at a time): torch {network_torch:.2f} s, "
        f"ONNX Runtime in {ort_window.streams} stream(s) {network_ort:.2f} s, "
        f"ratio {network_torch / network_ort:.2f}"
    )
    volume = 256 * 256 * 200 * 4
    live = {name: live_memory_growth(name, work, repeats) for name in ("medsight", "monai")}
    print(
        f"  3D peak memory growth, live ({repeats} runs, untimed, fresh process):"
        f" medsight {live['medsight'] / 1e6:.0f} MB = {live['medsight'] / volume:.2f}x the "
        f"float32 volume (budget (classes + 2) = {classes + 2}x = "
        f"{(classes + 2) * volume / 1e6:.0f} MB, plus the model); "
        f"MONAI {live['monai'] / 1e6:.0f} MB = {live['monai'] / volume:.2f}x. In the timed "
        f"runs (glibc default): medsight {ours_result.peak / volume:.2f}x, "
        f"MONAI {monai_result.peak / volume:.2f}x"
    )


def run_folder_case(ct: CtCase, work: Path, repeats: int) -> None:
    """Case 4: a folder of four CTs, MONAI in a loop against `medsight analyze` (--jobs 1, 2)."""
    from medsight.analysis import AnalysisOptions, analyze_studies, find_studies

    monai_segment_3d = ct.monai
    # --- 4. a folder of 3D CT volumes ----------------------------------------------------
    folder = ct_folder(ct.volume_path)
    volumes = sorted(folder.glob("*.nii.gz"))

    def monai_folder() -> object:
        for path in volumes:
            monai_segment_3d(path)
        return None

    def medsight_folder(jobs: int) -> object:
        options = AnalysisOptions(task=str(ct.task_dir), backend="onnxruntime", outputs=("json",))
        return analyze_studies(find_studies(folder), work / f"out-jobs{jobs}", options, jobs=jobs)

    monai_all, one_job, two_jobs = compare(
        repeats, monai_folder, lambda: medsight_folder(1), lambda: medsight_folder(2)
    )
    print(
        f"{len(volumes)} x 3D CT 256x256x200, a folder: MONAI {monai_all.median:.2f} s, "
        f"medsight --jobs 1 {one_job.median:.2f} s ({ratio_text(monai_all, one_job)}), "
        f"--jobs 2 {two_jobs.median:.2f} s: throughput {ratio_text(monai_all, two_jobs)}"
    )


@dataclass
class Runs:
    """One pipeline's timed runs (seconds, in round order) and its peak memory."""

    seconds: list[float]
    peak: float

    @property
    def median(self) -> float:
        return float(statistics.median(self.seconds))


def compare(repeats: int, *pipelines: Callable[[], object]) -> list[Runs]:
    """The pipelines' runs interleaved (A B A B ...) so that a noisy, shared machine slows
    all alike; each pipeline's times and peak memory."""
    for pipeline in pipelines:
        pipeline()
    runs: list[list[tuple[float, float]]] = [[] for _ in pipelines]
    for _ in range(repeats):
        for pipeline, results in zip(pipelines, runs, strict=True):
            results.append(measure(pipeline, 1, warm_up=False))
    return [Runs([t for t, _ in results], max(m for _, m in results)) for results in runs]


def ratio_text(baseline: Runs, ours: Runs) -> str:
    """The ratio of the medians, and the spread of the ratios round by round."""
    rounds = [b / o for b, o in zip(baseline.seconds, ours.seconds, strict=True)]
    return f"ratio {baseline.median / ours.median:.2f} (rounds {min(rounds):.2f}-{max(rounds):.2f})"


def report(name: str, monai: Runs, ours: Runs) -> None:
    print(
        f"{name}: MONAI {monai.median:.2f} s, medsight {ours.median:.2f} s (medians), "
        f"throughput {ratio_text(monai, ours)}"
    )


if __name__ == "__main__":
    main()
