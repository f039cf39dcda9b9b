"""Rebuild the shipped DICOM samples from the shipped JPEGs (run once; output committed).

The Kermany chest X-rays and the FracAtlas radiographs are CC BY 4.0; the DICOM wrappers
carry made-up, non-identifying study identifiers, so the demos can show DICOM reading
offline: the chest film as a Secondary Capture, the fracture film as Computed Radiography
(BodyPartExamined HAND, ViewPosition PA; no pixel spacing: FracAtlas states none).
Usage: python scripts/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "medsight" / "samples" / "cxr"
FRACTURE = SAMPLES.parent / "fracture"
# fixed UIDs under the pydicom example root, so rebuilding gives identical bytes
ROOT = "1.2.826.0.1.3680043.8.498.1000."


def main() -> None:
    source = SAMPLES / "pneumonia_person1000_bacteria_2931.jpeg"
    pixels = np.asarray(Image.open(source).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = ROOT + "3"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = ROOT + "1"
    ds.SeriesInstanceUID = ROOT + "2"
    ds.FrameOfReferenceUID = ROOT + "4"
    ds.PatientName = "SAMPLE^KERMANY"
    ds.PatientID = "KERMANY-SAMPLE-1"
    ds.PatientAge = "003Y"
    ds.StudyDate = "20180101"
    ds.StudyDescription = "Sample chest X-ray (Kermany et al. 2018, CC BY 4.0)"
    ds.SeriesDescription = "PA chest, paediatric pneumonia sample"
    ds.Modality = "DX"
    ds.ConversionType = "WSD"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(SAMPLES / "pneumonia_sample_sc.dcm", enforce_file_format=True)
    fracture_cr()


def fracture_cr() -> None:
    """FracAtlas IMG0000019 (a fractured wrist) as DICOM Computed Radiography: the
    radiograph IOD that allows an unknown pixel spacing (DX requires Imager Pixel Spacing,
    and FracAtlas states none: a made-up one would give boxes wrong sizes in mm)."""
    pixels = np.asarray(Image.open(FRACTURE / "IMG0000019.jpg").convert("L"), dtype=np.uint8)
    cr = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = cr
    meta.MediaStorageSOPInstanceUID = ROOT + "13"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = cr, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ROOT + "11", ROOT + "12"
    ds.PatientName, ds.PatientID = "SAMPLE^FRACATLAS", "FRACATLAS-SAMPLE-1"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20230101", "120000", "FA19", "1"
    ds.StudyDescription = "Sample wrist radiograph (FracAtlas 2023, CC BY 4.0)"
    ds.SeriesDescription = "Hand and wrist, frontal"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "HAND", "PA"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.PatientOrientation = ["L", "F"]
    # what the CR IOD requires, empty where FracAtlas says nothing (dciodvfy clean)
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName",
                    "Manufacturer", "Laterality"):  # fmt: skip
        setattr(ds, keyword, "")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"  # the source is a JPEG
    ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = 10, "ISO_10918_1"
    ds.BurnedInAnnotation = "YES"  # the film's side marker and text
    ds.PixelData = pixels.tobytes()
    ds.save_as(FRACTURE / "fracture_sample_cr.dcm", enforce_file_format=True)


if __name__ == "__main__":
    main()
