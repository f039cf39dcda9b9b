"""The DICOM files installed by test packages, and pydicom's own reading of them.

Used by the corpus walk test: every file must decode to exactly what pydicom gives (after the
documented modality step) or raise a medsight error naming the file.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from medsight.image import Image


def corpus_files(unpack_to: Path) -> list[Path]:
    """Files from pydicom's test data, pydicom-data, deid-data and nibabel's nicom tests.

    Never triggers a download: pydicom's ``get_testdata_files`` would fetch missing files, so
    the package folders are listed directly. ``.dcm.gz`` files are unpacked into
    ``unpack_to``.
    """
    import data_store
    import deid_data
    import nibabel
    import pydicom.data

    roots = [
        Path(pydicom.data.__file__).parent,
        Path(data_store.__file__).parent,
        Path(deid_data.__file__).parent,
        Path(nibabel.__file__).parent / "nicom" / "tests" / "data",
    ]
    files: list[Path] = []
    skip_suffixes = {".py", ".pyc", ".json", ".md", ".txt", ".dump", ".icc", ".bin", ".typed"}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in skip_suffixes or "__pycache__" in path.parts:
                continue
            if path.name.endswith(".dcm.gz"):
                target = unpack_to / f"{root.name}-{path.name[:-3]}"
                with gzip.open(path) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                files.append(target)
            elif path.suffix == ".gz":
                continue
            else:
                files.append(path)
    return files


def _enhanced_rescale(dataset: Dataset, frame: int) -> tuple[float, float] | None:
    """Per-frame rescale of an enhanced multi-frame object, straight from its groups."""
    for container in (
        (dataset.get("PerFrameFunctionalGroupsSequence") or [None] * (frame + 1))[frame],
        (dataset.get("SharedFunctionalGroupsSequence") or [None])[0],
    ):
        if container is None:
            continue
        items = container.get("PixelValueTransformationSequence")
        if items:
            return float(items[0].get("RescaleSlope", 1)), float(
                items[0].get("RescaleIntercept", 0)
            )
    return None


def pydicom_reference(path: Path) -> tuple[Dataset, np.ndarray]:
    """pydicom's pixel_array after the documented modality step, frames first.

    Returns (dataset, array of shape (frames, rows, columns, channels)).
    """
    dataset = pydicom.dcmread(path, force=True)
    # documented repair: a file meta without Transfer Syntax UID gets the encoding pydicom
    # detected (medsight does the same in io.dicom._header.infer_transfer_syntax)
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = dataset.original_encoding
        dataset.file_meta = getattr(dataset, "file_meta", None) or FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
    pixels = np.asarray(dataset.pixel_array)
    frames = int(dataset.get("NumberOfFrames") or 1)
    if (
        frames == 1
        or pixels.ndim == 2
        or (pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) > 1 and frames == 1)
    ):
        pixels = pixels[np.newaxis]
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        values = np.asarray(apply_color_lut(pixels, dataset))
    elif int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
        values = pixels  # the Modality LUT applies to grayscale only (PS3.3 C.11.1)
    elif (
        "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset
    ):
        values = np.empty(pixels.shape, dtype=np.float64)
        for index in range(pixels.shape[0]):
            rescale = _enhanced_rescale(dataset, index)
            if rescale is None and "RescaleSlope" in dataset:
                rescale = (float(dataset.RescaleSlope), float(dataset.get("RescaleIntercept", 0)))
            slope, intercept = rescale or (1.0, 0.0)
            values[index] = pixels[index] * slope + intercept
    else:
        values = np.asarray(apply_modality_lut(pixels, dataset))
    if values.ndim == 3:
        values = values[..., np.newaxis]
    return dataset, values


def same_values(ours: np.ndarray, reference: np.ndarray) -> bool:
    """Exact equality in medsight's storage type, refusing casts that wrap or round away."""
    if ours.shape != reference.shape:
        return False
    cast = reference.astype(ours.dtype)
    if not np.array_equal(ours, cast):
        return False
    if ours.dtype.kind in "iu":
        return bool(np.array_equal(cast.astype(np.float64), reference.astype(np.float64)))
    return bool(np.allclose(cast.astype(np.float64), reference, rtol=1e-6, atol=0))


def medsight_frames(image: Image) -> np.ndarray:
    """An image's array in source-frame order: (frames, rows, columns, channels)."""
    array = image.array
    if image.spatial_dims == 3 and image.is_sequence:  # (c, i, j, k, t)
        ordered = array.transpose(4, 3, 2, 1, 0)
        return ordered.reshape(-1, *ordered.shape[2:])
    if image.spatial_dims == 3:  # (c, i, j, k)
        return array.transpose(3, 2, 1, 0)
    if image.is_sequence:  # (c, i, j, t)
        return array.transpose(3, 2, 1, 0)
    return array.transpose(2, 1, 0)[np.newaxis]  # (c, i, j)
