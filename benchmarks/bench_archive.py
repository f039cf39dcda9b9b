"""Archive throughput: studies per minute for plain ``medsight analyze``, ``analyze --jobs 2``
and ``analyze-archive`` on a local Ray instance with 2 workers, in one run, interleaved.

The studies are Kermany chest X-rays as 224x224 JPEGs (the archive issue's case), analysed
with ``cxr-pneumonia`` and JSON outputs (the throughput target: 20 images per second on 2
cores), and once more with every image output (overlay, heatmap, HTML report) to show what
those cost. Each command is timed from its start to its exit (start-up included, as a user
waits for it), and the per-study rate is also given without start-up: the time from the
first to the last study written, from the result files' modification times.

Peak memory per worker: the largest VmHWM (peak resident set) of any process of the run's
tree, sampled every 0.2 s from /proc: the CLI process for plain ``analyze``, each job
process for ``--jobs 2``, each Ray actor (``ray::StudyAnalyzer``) for ``analyze-archive``.

Memory for a large volume: ``medsight analyze`` on a 512x512x800 CT (int16, built from the
TotalSegmentator CT as bench_inference.py builds its volume) with bench_inference's own 3D
task, its peak resident memory and the growth over the same command on a tiny volume.

Usage: python benchmarks/bench_archive.py [--studies 240] [--repeats 3] [--ct-memory-only]
Prints the median over the interleaved repeats and the spread (min-max), so a busy machine
moves every side alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CACHE = HERE.parent / "bench-data"
MEDSIGHT = str(Path(sys.executable).with_name("medsight"))
RAY = str(Path(sys.executable).with_name("ray"))


def chest_folder(count: int) -> Path:
    from tests.archive._cluster import chest_films

    folder = CACHE / f"cxr-224-{count}"
    if not folder.is_dir() or len(list(folder.glob("*.jpg"))) != count:
        shutil.rmtree(folder, ignore_errors=True)
        chest_films(folder, count)
    return folder


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        return found
    return found


def _tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        current = todo.pop()
        seen.append(current)
        todo.extend(_children(current))
    return seen


def _peak_kib(pid: int) -> tuple[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return command, int(line.split()[1])
    return None


class PeakSampler(threading.Thread):
    """The peak resident set of each process in a tree (and of Ray's actors, which Ray's
    raylet starts outside the tree)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peaks: dict[int, tuple[str, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pids = set(_tree(self.root))
            pids |= {int(p) for p in _pgrep("ray::StudyAnalyzer")}
            for pid in pids:
                found = _peak_kib(pid)
                if found is not None:
                    self.peaks[pid] = found
            time.sleep(0.2)

    def worker_peak_mib(self, kind: str) -> float:
        def is_worker(command: str) -> bool:
            if kind == "archive":
                return "StudyAnalyzer" in command
            if kind == "jobs":
                return "multiprocessing" in command or "spawn_main" in command
            return "medsight" in command and "analyze" in command

        values = [kib for command, kib in self.peaks.values() if is_worker(command)]
        return max(values, default=0) / 1024


def _pgrep(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


def run_once(kind: str, folder: Path, outputs: str) -> tuple[float, float, float]:
    """(seconds from start to exit, seconds from first to last result, peak MiB/worker)."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    base = ["--task", "cxr-pneumonia", "--outputs", outputs, "--out", str(out / "dest")]
    if kind == "analyze":
        command = [MEDSIGHT, "analyze", str(folder), *base]
    elif kind == "jobs":
        command = [MEDSIGHT, "analyze", str(folder), *base, "--jobs", "2"]
    else:
        command = [MEDSIGHT, "analyze-archive", str(folder), *base, "--cpus", "2"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sampler = PeakSampler(process.pid)
    sampler.start()
    code = process.wait()
    elapsed = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    if code not in (0, 1):  # 1: the films are JPEGs, so every study needs review; fine
        raise SystemExit(f"{' '.join(command)} exited {code}")
    times = sorted(p.stat().st_mtime for p in (out / "dest").glob("*/result.json"))
    steady = times[-1] - times[0] if len(times) > 1 else elapsed
    shutil.rmtree(out, ignore_errors=True)
    if kind == "archive":
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
    return elapsed, steady, sampler.worker_peak_mib(kind)


def ct_memory() -> None:
    """Peak resident memory of `medsight analyze` on the 512x512x800 CT with the bench task,
    against the same command on a tiny volume (what the process holds without the CT)."""
    import nibabel as nib
    import numpy as np
    from benchmarks.bench_inference import bench_3d_task, ct_volume_path

    work = Path(tempfile.mkdtemp(prefix="bench-ct-"))
    task = work / "task"
    bench_3d_task(task)
    ct = ct_volume_path((512, 512, 800))
    tiny = work / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((96, 96, 96), np.int16), np.eye(4)), tiny)
    peaks = {}
    for name, volume in (("tiny", tiny), ("ct", ct)):
        command = [
            MEDSIGHT,
            "analyze",
            str(volume),
            "--task",
            str(task),
            "--outputs",
            "json",
            "--out",
            str(work / name),
        ]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sampler = PeakSampler(process.pid)
        sampler.start()
        _, errors = process.communicate()
        sampler.stop.set()
        sampler.join()
        if process.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(command)} exited {process.returncode}: {errors!r}")
        peaks[name] = (sampler.worker_peak_mib("analyze"), time.perf_counter() - started)
    input_mib = 512 * 512 * 800 * 2 / 2**20
    growth = peaks["ct"][0] - peaks["tiny"][0]
    print(
        f"512x512x800 CT (int16 {input_mib:.0f} MiB), bench 3D task (3 outputs, 96^3 windows): "
        f"peak {peaks['ct'][0]:.0f} MiB in {peaks['ct'][1]:.0f} s; the same command on a tiny "
        f"volume {peaks['tiny'][0]:.0f} MiB; growth {growth:.0f} MiB = "
        f"{growth / input_mib:.2f}x the int16 input (target: under 4 GB and under 4x)"
    )
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ct-memory-only", action="store_true", help="only the CT figure")
    args = parser.parse_args()
    ct_memory()
    if args.ct_memory_only:
        return
    folder = chest_folder(args.studies)
    cases = [
        ("analyze", "json"),
        ("jobs", "json"),
        ("archive", "json"),
        ("analyze", "json,html,overlay,heatmap"),
    ]
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {c: [] for c in cases}
    for _ in range(args.repeats):  # interleaved: a busy spell slows every side alike
        for kind, outputs in cases:
            results[(kind, outputs)].append(run_once(kind, folder, outputs))
    print(f"{args.studies} chest X-rays (224x224 JPEG), cxr-pneumonia, {os.cpu_count()} cores")
    print(f"median of {args.repeats} interleaved runs (min-max)")
    columns = ("command", "studies/min", "images/s w/o start-up", "peak MiB/worker")
    print(f"{columns[0]:<56} {columns[1]:>22} {columns[2]:>22} {columns[3]:>16}")
    names = {
        "analyze": "analyze",
        "jobs": "analyze --jobs 2",
        "archive": "analyze-archive (local Ray, 2 workers)",
    }
    for kind, outputs in cases:
        runs = results[(kind, outputs)]
        per_min = [60 * args.studies / r[0] for r in runs]
        steady = [(args.studies - 1) / r[1] for r in runs]
        peak = max(r[2] for r in runs)
        label = f"{names[kind]} --outputs {outputs}"
        print(
            f"{label:<56} {statistics.median(per_min):>9.0f}"
            f" ({min(per_min):.0f}-{max(per_min):.0f})"
            f" {statistics.median(steady):>11.1f} ({min(steady):.1f}-{max(steady):.1f})"
            f" {peak:>12.0f}"
        )


if __name__ == "__main__":
    main()
