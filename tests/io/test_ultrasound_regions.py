"""Ultrasound pixel spacing from its calibrated regions (SequenceOfUltrasoundRegions): 2D
tissue regions in centimetres give the spacing, with a note that it holds inside them only;
regions that disagree or are not in centimetres leave the spacing unknown."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medsight.io import read_image

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _region(delta_x: float, delta_y: float, units: int = 3) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 20
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 100, 110
    region.PhysicalUnitsXDirection = units
    region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX = delta_x
    region.PhysicalDeltaY = delta_y
    return region


def _ultrasound(path, regions: list[Dataset]):
    dataset = Dataset()
    dataset.SOPClassUID = US_IMAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "US"
    dataset.Rows, dataset.Columns = 128, 120
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.arange(128 * 120, dtype=np.uint8).tobytes()
    dataset.SequenceOfUltrasoundRegions = regions
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = US_IMAGE
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_a_calibrated_region_gives_the_spacing_and_says_where_it_holds(tmp_path):
    image = read_image(_ultrasound(tmp_path / "us.dcm", [_region(0.02, 0.03)]))
    assert image.spacing_known
    column, row = image.spacing
    assert np.isclose(column, 0.2) and np.isclose(row, 0.3)
    assert "SequenceOfUltrasoundRegions" in str(image.metadata.get("PixelSpacingSource"))
    assert "x 10-100, y 20-110" in str(image.metadata.get("PixelSpacingSource"))


def test_regions_that_disagree_or_are_not_in_cm_leave_the_spacing_unknown(tmp_path):
    two = read_image(_ultrasound(tmp_path / "a.dcm", [_region(0.02, 0.02), _region(0.05, 0.05)]))
    assert not two.spacing_known
    seconds = read_image(_ultrasound(tmp_path / "b.dcm", [_region(0.02, 0.02, units=4)]))
    assert not seconds.spacing_known
    assert pydicom.dcmread(tmp_path / "b.dcm").Modality == "US"
