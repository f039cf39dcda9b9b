"""Read the same CT-sized series with medsight, SimpleITK and a plain pydicom loop.

Builds two series of 300 slices of 512x512 from the real TotalSegmentator CT slices
(`../shared/data/totalseg-ct/example_ct_dicom`, via MEDSIGHT_DATA): one uncompressed
(Explicit VR Little Endian) and one JPEG 2000 lossless (the original compressed frames, reused
as they are). Each reader runs in a fresh subprocess (one timed read after a warm-up that puts
the files in the page cache), the readers interleaved round by round so that a busy machine
slows all alike; the figure is the median of the rounds (5 by default) with the spread of the
round-by-round ratios; peak memory is the growth of the proportional set size (PSS) of
the reading process and its children, sampled every 5 ms in a separate, untimed read (so
shared pages count once, and the sampling does not slow the timed read).

Usage: python benchmarks/bench_dicom_read.py [--slices 300] [--repeats 5]
Prints time ratios (SimpleITK time / medsight time: >= 1.0 means medsight is at least as fast)
and peak memory as a multiple of the volume size.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / "bench-data"


# --- building the series ---------------------------------------------------------------------


def build_series(slices: int) -> dict[str, Path]:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from medsight.datasets import shared_data_dir

    source = shared_data_dir() / "totalseg-ct" / "example_ct_dicom"
    if not source.is_dir():
        sys.exit(f"benchmark needs the real CT series at {source} (set MEDSIGHT_DATA)")
    originals = sorted(
        (pydicom.dcmread(p) for p in source.iterdir()),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    targets = {
        "uncompressed": CACHE / f"ct{slices}_uncompressed",
        "jpeg2000": CACHE / f"ct{slices}_j2k",
    }
    for kind, folder in targets.items():
        if folder.is_dir() and len(list(folder.iterdir())) == slices:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        series_uid, study_uid = generate_uid(), generate_uid()
        for n in range(slices):
            template = originals[n % len(originals)]
            ds = copy.deepcopy(template)
            if kind == "uncompressed":
                pixels = template.pixel_array
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.PixelData = pixels.tobytes()
                ds["PixelData"].VR = "OW"
            position = [float(v) for v in template.ImagePositionPatient]
            position[2] = -800.0 + 1.0 * n
            ds.ImagePositionPatient = position
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ds.InstanceNumber = slices - n
            ds.save_as(folder / f"{os.urandom(6).hex()}.dcm", enforce_file_format=True)
    return targets


# --- readers (run inside a subprocess) -------------------------------------------------------


def read_medsight(folder: Path) -> np.ndarray:
    from medsight.io.dicom import read_dicom

    return read_dicom(folder).array


def read_simpleitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayViewFromImage(reader.Execute())


def read_pydicom(folder: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    slices = [pydicom.dcmread(p) for p in folder.iterdir()]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([apply_modality_lut(ds.pixel_array, ds).astype(np.int16) for ds in slices])


READERS = {"medsight": read_medsight, "SimpleITK": read_simpleitk, "pydicom loop": read_pydicom}


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _tree_pss_kib() -> int:
    pids = [os.getpid()]
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return sum(_pss_kib(pid) for pid in pids)


def _sampled_peak(reader: Callable[[Path], np.ndarray], folder: Path) -> float:
    """Peak PSS growth of one read as a multiple of the volume, sampled every 5 ms."""
    baseline = _tree_pss_kib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    volume = reader(folder)
    peak[0] = max(peak[0], _tree_pss_kib())
    done.set()
    sampler.join()
    return (peak[0] - baseline) * 1024 / volume.nbytes


def run_reader(name: str, folder: Path, repeats: int) -> dict[str, float]:
    """Timed reads with nothing else running, then one untimed read for the memory peak:
    the sampler walks the page tables of every process 200 times a second, which slowed
    the timed reads of both medsight and SimpleITK by a third when it ran beside them."""
    reader = READERS[name]
    reader(folder)  # warm-up: imports, page cache
    times, nbytes = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        volume = reader(folder)
        times.append(time.perf_counter() - start)
        nbytes = volume.nbytes
        del volume
    peak = _sampled_peak(reader, folder)
    return {"seconds": min(times), "peak_over_volume": peak, "volume_mb": nbytes / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=2, metavar=("READER", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_reader(args.worker[0], Path(args.worker[1]), args.repeats)))
        return
    series = build_series(args.slices)
    print(
        f"series of {args.slices} slices 512x512, median of {args.repeats} interleaved rounds, "
        f"{os.cpu_count()} cores"
    )
    for kind, folder in series.items():
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in READERS}
        for _ in range(args.repeats):
            for name in READERS:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", name, str(folder), "--repeats", "1"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rounds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        ours = [r["seconds"] for r in rounds["medsight"]]
        print(f"\n{kind}: volume {rounds['medsight'][0]['volume_mb']:.0f} MB")
        for name, results in rounds.items():
            seconds = [r["seconds"] for r in results]
            ratios = [t / o for t, o in zip(seconds, ours, strict=True)]
            print(
                f"  {name:13s} {statistics.median(seconds):7.2f} s   peak memory "
                f"{statistics.median(r['peak_over_volume'] for r in results):4.2f}x volume   "
                f"speed ratio {name}/medsight time = "
                f"{statistics.median(seconds) / statistics.median(ours):5.2f} "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
            )


if __name__ == "__main__":
    main()
