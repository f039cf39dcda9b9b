"""Every DICOM file the test packages install: decoded exactly like pydicom, or a clear error.

Files: pydicom's test files, pydicom-data, deid-data and nibabel's nicom test data (never
downloaded). Compressed ones are also cross-checked against independent decoders: GDCM
(through SimpleITK) and dcmtk (dcmdjpeg / dcmdrle / dcmdjpls).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from medsight.errors import MedsightError
from medsight.image import Image
from medsight.io.dicom import read_series, scan_dicom
from tests._dicom_corpus import corpus_files, medsight_frames, pydicom_reference, same_values

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Outcome:
    path: Path
    result: str  # "decoded", "skipped", "error", "mismatch", "crash"
    detail: str
    images: list[Image]


def _read_all(path: Path) -> Outcome:
    try:
        scan = scan_dicom(path)
        images = [image for series in scan.series for image in read_series(series)]
    except MedsightError as exc:
        named = str(path) in str(exc) or any(str(p) in str(exc) for p in [path.parent])
        kind = "error" if named else "crash"
        return Outcome(path, kind, f"{type(exc).__name__}: {exc}", [])
    except Exception as exc:  # any raw library exception is a failure of medsight
        return Outcome(path, "crash", f"{type(exc).__name__}: {exc}", [])
    if not images:
        reason = scan.skipped[0].reason if scan.skipped else "nothing found"
        return Outcome(path, "skipped", reason, [])
    references: dict[Path, np.ndarray] = {}
    for image in images:
        ours = medsight_frames(image)
        expected = []
        for frame in image.frames:
            assert frame.path is not None
            if frame.path not in references:
                try:
                    references[frame.path] = pydicom_reference(frame.path)[1]
                except Exception as exc:
                    return Outcome(
                        path, "mismatch", f"medsight decoded, pydicom failed: {exc}", images
                    )
            expected.append(references[frame.path][(frame.frame_number or 1) - 1])
        reference = np.stack(expected)
        if any("Siemens mosaic" in warning for warning in image.warnings):
            reference = _untiled(reference, ours.shape[1:3], image.shape[2])
        if not same_values(ours, reference):
            return Outcome(
                path, "mismatch", f"shape {ours.shape} vs pydicom {reference.shape}", images
            )
    shapes = "; ".join(f"{im.shape} {im.array.dtype}" for im in images)
    return Outcome(path, "decoded", shapes, images)


def _untiled(mosaics: np.ndarray, tile: tuple[int, ...], slices: int) -> np.ndarray:
    """The slices of (volumes, rows, columns, channels) mosaics in tile order, row by row:
    an independent check of the untiling (nibabel does it for medsight)."""
    across = int(np.ceil(np.sqrt(slices)))
    rows, columns = tile
    return np.stack(
        [
            mosaic[(n // across) * rows : (n // across + 1) * rows, (n % across) * columns :][
                :, :columns
            ]
            for mosaic in mosaics
            for n in range(slices)
        ]
    )


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[Outcome]:
    files = corpus_files(tmp_path_factory.mktemp("unpacked"))
    results = [_read_all(path) for path in files]
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "dicom_corpus_outcomes.tsv").open("w") as table:
        table.write("file\toutcome\tdetail\n")
        for item in results:
            detail = " ".join(item.detail.split())
            table.write(f"{item.path}\t{item.result}\t{detail}\n")
    return results


@pytest.mark.timeout(900)
def test_every_file_decodes_like_pydicom_or_fails_clearly(outcomes):
    counts: dict[str, int] = {}
    for item in outcomes:
        counts[item.result] = counts.get(item.result, 0) + 1
        print(f"{item.result:9s} {item.path.name}: {item.detail[:160]}")
    print(counts)
    bad = [
        f"{o.path}: {o.result}: {o.detail}" for o in outcomes if o.result in ("crash", "mismatch")
    ]
    assert not bad, "\n".join(bad)
    assert len(outcomes) >= 250  # the packages hold about 285 files; fewer means a lost root
    assert counts.get("decoded", 0) >= 180
    errors = [o for o in outcomes if o.result == "error"]
    for item in errors:  # a clear error names the file
        assert str(item.path) in item.detail


# --- independent decoders --------------------------------------------------------------------

_DCMTK = {
    "1.2.840.10008.1.2.4.50": "dcmdjpeg",
    "1.2.840.10008.1.2.4.51": "dcmdjpeg",
    "1.2.840.10008.1.2.4.57": "dcmdjpeg",
    "1.2.840.10008.1.2.4.70": "dcmdjpeg",
    "1.2.840.10008.1.2.5": "dcmdrle",
    "1.2.840.10008.1.2.4.80": "dcmdjpls",
    "1.2.840.10008.1.2.4.81": "dcmdjpls",
}


def _dcmtk_decode(path: Path, syntax: str, workdir: Path) -> np.ndarray | None:
    tool = _DCMTK.get(syntax)
    if tool is None or shutil.which(tool) is None:
        return None
    output = workdir / f"{path.name}.{tool}.dcm"
    run = subprocess.run([tool, str(path), str(output)], capture_output=True, timeout=120)
    if run.returncode != 0 or not output.exists():
        return None
    return pydicom_reference(output)[1]


def _gdcm_candidates(path: Path, ours: np.ndarray) -> list[np.ndarray]:
    import SimpleITK as sitk
    from pydicom.pixels import convert_color_space

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError:
        return []
    if values.size != ours.size:
        return []
    values = values.reshape(ours.shape)
    candidates = [values]
    if ours.shape[-1] == 3:  # GDCM may leave YBR unconverted
        candidates.append(convert_color_space(values.astype(np.uint8), "YBR_FULL", "RGB"))
    return candidates


def _agrees(ours: np.ndarray, other: np.ndarray, lossy: bool) -> bool:
    if other.shape != ours.shape:
        return False
    difference = np.abs(ours.astype(np.float64) - other.astype(np.float64))
    if lossy:  # decoders may round the inverse DCT and chroma upsampling differently
        return float(difference.max()) <= 8 and float(difference.mean()) <= 0.5
    scale = max(1.0, float(np.abs(ours).max()))
    return float(difference.max()) <= 1e-6 * scale


def _inverted(ours: np.ndarray, other: np.ndarray) -> bool:
    """GDCM turns MONOCHROME1 into MONOCHROME2 by inversion: ours + other is constant."""
    total = ours.astype(np.int64) + other.astype(np.int64)
    return other.shape == ours.shape and int(total.max() - total.min()) == 0


@pytest.mark.timeout(900)
def test_compressed_files_agree_with_an_independent_decoder(outcomes, tmp_path):
    checked, disagreements = [], []
    for item in outcomes:
        if item.result != "decoded" or len(item.images) != 1:
            continue
        header = pydicom.dcmread(item.path, stop_before_pixels=True, force=True)
        syntax = UID(str(getattr(header.file_meta, "TransferSyntaxUID", "")))
        if not syntax or not syntax.is_compressed:
            continue
        image = item.images[0]
        if len({f.path for f in image.frames}) != 1:
            continue
        ours = medsight_frames(image)
        order = [(f.frame_number or 1) - 1 for f in image.frames]
        lossy = (
            syntax.name.startswith(("JPEG Baseline", "JPEG Extended", "JPEG-LS Lossy"))
            or (syntax == "1.2.840.10008.1.2.4.91")
            or str(header.get("LossyImageCompression", "00")) == "01"
        )
        agreed_with = []
        dcmtk = _dcmtk_decode(item.path, str(syntax), tmp_path)
        if dcmtk is not None and _agrees(ours, dcmtk[order], lossy):
            agreed_with.append("dcmtk")
        for candidate in _gdcm_candidates(item.path, ours):
            if _agrees(ours, candidate, lossy) or (
                image.photometric_interpretation == "MONOCHROME1" and _inverted(ours, candidate)
            ):
                agreed_with.append("gdcm")
                break
        record = f"{item.path.name} ({syntax.name}, {image.photometric_interpretation})"
        if agreed_with:
            checked.append(f"{record}: agrees with {', '.join(agreed_with)}")
        elif dcmtk is None and not _gdcm_candidates(item.path, ours):
            checked.append(f"{record}: no independent decoder reads it")
        else:
            disagreements.append(record)
    print("\n".join(checked))
    assert not disagreements, "medsight disagrees with every independent decoder: " + "; ".join(
        disagreements
    )
    assert sum("agrees" in line for line in checked) >= 50
