"""DICOM ingest: C-STORE throughput into `medsight serve` and into Orthanc (Debian, its
default configuration) on the same machine in one run, and the time from a CXR study's last
instance received to its worklist entry.

Throughput: each round writes a fresh set of uncompressed 512x512 CT instances (built from
the real TotalSegmentator slices, new UIDs per round so nothing is deduplicated), then sends
them over several parallel associations (one dcmtk storescu per association) to medsight
and to Orthanc, alternating which goes first. medsight runs as shipped: SQLite in WAL mode
with synchronous=FULL and an fsync of each file and its folder before the acknowledgement.
Its analysis is held back (a long quiet period) so only intake is measured.

Latency: CXR studies sent one at a time to a medsight with a 2 s quiet period; the time from
storescu's return (the last instance acknowledged) to the study on /api/worklist, seen from
the client, and the server's own `medsight_result_latency_seconds`.

Usage: python benchmarks/bench_ingest.py [--instances 240] [--associations 4] [--rounds 3]
       [--cxr-studies 12]
Prints instances/s for each, the ratio medsight/Orthanc (target >= 0.8), and latency p50/p95.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the tests' small helpers (free ports, API client)

ORTHANC = Path("/usr/sbin/Orthanc")


def build_instances(folder: Path, count: int) -> list[Path]:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from medsight.datasets import shared_data_dir

    source = shared_data_dir() / "totalseg-ct" / "example_ct_dicom"
    if not source.is_dir():
        sys.exit(f"benchmark needs the real CT series at {source} (set MEDSIGHT_DATA)")
    originals = [pydicom.dcmread(p) for p in sorted(source.iterdir())]
    for dataset in originals:
        dataset.decompress()  # uncompressed on the wire: the common case for a modality
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(count):
        dataset = originals[n % len(originals)]
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = n + 1
        path = folder / f"{n:05d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send_parallel(paths: list[Path], port: int, aec: str, associations: int) -> float:
    """Seconds to send ``paths`` over ``associations`` concurrent storescu processes."""
    shares = [paths[i::associations] for i in range(associations)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port), *map(str, share)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    for sender in senders:
        _out, err = sender.communicate(timeout=1800)
        if sender.returncode != 0:
            sys.exit(f"storescu to {aec} failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def start_orthanc(folder: Path, dicom: int, http: int) -> subprocess.Popen:
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [str(ORTHANC), str(folder / "orthanc.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return (
                urllib.request.urlopen(f"http://127.0.0.1:{http}/system", timeout=2).status == 200
            )
        except OSError:
            return False

    wait_until(up, 60, "Orthanc")
    return process


def start_medsight(data: Path, dicom: int, http: int, quiet: float, task: str) -> subprocess.Popen:
    from tests.service._client import Api

    command = [sys.executable, "-m", "medsight", "serve", "--data-dir", str(data), "--dev"]
    command += ["--dicom-port", str(dicom), "--http-port", str(http)]
    command += ["--quiet-seconds", str(quiet), "--task", task, "--outputs", "json"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(Api(f"http://127.0.0.1:{http}").up, 60, "medsight")
    return process


def throughput(args: argparse.Namespace, work: Path) -> None:
    from tests._net import free_port

    rates: dict[str, list[float]] = {"medsight": [], "orthanc": []}
    ports = {name: (free_port(), free_port()) for name in rates}
    orthanc = start_orthanc(work / "orthanc", *ports["orthanc"])
    medsight = start_medsight(work / "medsight", *ports["medsight"], quiet=86400, task="auto")
    try:
        for round_ in range(args.rounds):
            paths = build_instances(work / f"round{round_}", args.instances)
            order = ["medsight", "orthanc"] if round_ % 2 == 0 else ["orthanc", "medsight"]
            for name in order:
                aec = "MEDSIGHT" if name == "medsight" else "ORTHANC"
                seconds = send_parallel(paths, ports[name][0], aec, args.associations)
                rates[name].append(len(paths) / seconds)
            shutil.rmtree(work / f"round{round_}")
            print(
                f"round {round_ + 1}: medsight {rates['medsight'][-1]:.1f}/s, "
                f"orthanc {rates['orthanc'][-1]:.1f}/s"
            )
    finally:
        for process in (orthanc, medsight):
            process.terminate()
            process.wait(timeout=60)
    medsight_rate = statistics.median(rates["medsight"])
    orthanc_rate = statistics.median(rates["orthanc"])
    print(
        f"C-STORE, {args.instances} uncompressed CT instances x {args.rounds} rounds, "
        f"{args.associations} associations (median instances/s):"
    )
    print(f"  medsight (durable: fsync + SQLite synchronous=FULL): {medsight_rate:.1f}")
    print(f"  Orthanc (default configuration):                    {orthanc_rate:.1f}")
    print(f"  ratio medsight/Orthanc: {medsight_rate / orthanc_rate:.2f} (target >= 0.80)")


def latency(args: argparse.Namespace, work: Path) -> None:
    import pydicom
    from pydicom.uid import generate_uid
    from tests._net import free_port
    from tests.service._client import Api, account

    from medsight.service import InstanceStore
    from medsight.service.metrics import latencies

    sample = HERE.parent / "src/medsight/samples/cxr/pneumonia_sample_sc.dcm"
    dicom, http = free_port(), free_port()
    data = work / "latency"
    process = start_medsight(data, dicom, http, quiet=2.0, task="cxr-pneumonia")
    api = Api(f"http://127.0.0.1:{http}", account(data, "bench-reader", "clinician"))
    observed = []
    try:
        for n in range(args.cxr_studies):
            dataset = pydicom.dcmread(sample)
            dataset.StudyInstanceUID = generate_uid()
            dataset.SOPInstanceUID = generate_uid()
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            path = work / f"cxr{n}.dcm"
            dataset.save_as(path)
            send_parallel([path], dicom, "MEDSIGHT", 1)
            sent = time.perf_counter()
            wait_until(lambda n=n: api.json("/api/worklist")["total"] == n + 1, 300, "worklist")
            observed.append(time.perf_counter() - sent)
        server = latencies(InstanceStore(data))["result"]
    finally:
        process.terminate()
        process.wait(timeout=60)
    warm = observed[1:]  # the first includes loading the model into a fresh worker
    print(f"CXR study, last instance acknowledged -> on the worklist ({len(warm)} warm studies;")
    print("  includes the 2 s quiet period that decides the study is complete):")
    p50, p95 = np.percentile(warm, [50, 95])
    print(
        f"  client-observed p50 {p50:.2f} s, p95 {p95:.2f} s "
        f"(first, cold worker: {observed[0]:.2f} s)"
    )
    print(
        f"  server metric    p50 {np.percentile(server[1:], 50):.2f} s, "
        f"p95 {np.percentile(server[1:], 95):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=240)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cxr-studies", type=int, default=12)
    args = parser.parse_args()
    if not ORTHANC.exists() or shutil.which("storescu") is None:
        sys.exit("needs Debian orthanc and dcmtk (scripts/test installs them)")
    with tempfile.TemporaryDirectory(prefix="medsight-bench-ingest-") as folder:
        work = Path(folder)
        throughput(args, work)
        latency(args, work)


if __name__ == "__main__":
    main()
