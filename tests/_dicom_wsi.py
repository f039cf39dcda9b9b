"""DICOM whole-slide pyramids (VL Whole Slide Microscopy Image) built from real pixels for the
tests: one instance per level, TILED_FULL or TILED_SPARSE (a per-frame position for each
tile, tiles left out where ``missing`` says). Modelled on highdicom's own conformant test file
``sm_image.dcm`` (its patient, specimen and optical path modules are kept), uncompressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import require_data


def write_dicom_pyramid(
    folder: Path,
    canvas: np.ndarray,
    *,
    mpp: float = 0.5,
    tile: int = 256,
    levels: int = 3,
    sparse: bool = False,
    missing: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset(),
) -> list[Path]:
    """Write ``canvas`` (rows, columns, 3 uint8) as a pyramid of ``levels`` instances (each
    level half the last) into ``folder``; ``missing`` names level-0 tiles (row, column) a
    sparse pyramid leaves out. Returns the files, level 0 first."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(
        require_data("dicom", "highdicom_test_files", "sm_image.dcm"), stop_before_pixels=True
    )
    series, frame_of_reference = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    image = canvas
    for level in range(levels):
        ds = template.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = level + 1
        ds.ImageType = (
            ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
            if level == 0
            else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        )
        rows, columns = image.shape[:2]
        spacing = mpp * 2**level / 1000.0
        ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = rows, columns
        ds.Rows = ds.Columns = tile
        ds.ImagedVolumeWidth = columns * spacing
        ds.ImagedVolumeHeight = rows * spacing
        shared = ds.SharedFunctionalGroupsSequence[0]
        shared.PixelMeasuresSequence[0].PixelSpacing = [spacing, spacing]
        shared.WholeSlideMicroscopyImageFrameTypeSequence[0].FrameType = list(ds.ImageType)
        frames, positions = [], []
        for row in range(0, rows, tile):
            for column in range(0, columns, tile):
                whole = (row * 2**level // tile, column * 2**level // tile)
                if sparse and level == 0 and whole in missing:
                    continue
                block = np.zeros((tile, tile, 3), np.uint8)
                part = image[row : row + tile, column : column + tile]
                block[: part.shape[0], : part.shape[1]] = part
                frames.append(block)
                positions.append((row, column))
        ds.NumberOfFrames = len(frames)
        if sparse:
            ds.DimensionOrganizationType = "TILED_SPARSE"
            items = []
            for row, column in positions:
                position = Dataset()
                position.ColumnPositionInTotalImagePixelMatrix = column + 1
                position.RowPositionInTotalImagePixelMatrix = row + 1
                origin = ds.TotalPixelMatrixOriginSequence[0]
                position.XOffsetInSlideCoordinateSystem = round(
                    float(origin.XOffsetInSlideCoordinateSystem) + row * spacing, 6
                )
                position.YOffsetInSlideCoordinateSystem = round(
                    float(origin.YOffsetInSlideCoordinateSystem) + column * spacing, 6
                )
                position.ZOffsetInSlideCoordinateSystem = 0.0
                content = Dataset()  # the tile's row and column index (the template's dimensions)
                content.DimensionIndexValues = [row // tile + 1, column // tile + 1]
                item = Dataset()
                item.FrameContentSequence = Sequence([content])
                item.PlanePositionSlideSequence = Sequence([position])
                items.append(item)
            ds.PerFrameFunctionalGroupsSequence = Sequence(items)
        else:
            ds.DimensionOrganizationType = "TILED_FULL"
            if "PerFrameFunctionalGroupsSequence" in ds:
                del ds.PerFrameFunctionalGroupsSequence
        ds.PixelData = np.stack(frames).tobytes()
        ds["PixelData"].VR = "OB"
        path = folder / f"level-{level}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
        image = image[::2, ::2]
    return written
