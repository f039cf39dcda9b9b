"""Rebuild the shipped DICOM sample from the shipped Kermany JPEG (run once; output committed).

The Kermany chest X-rays are CC BY 4.0; the DICOM wrapper is a Secondary Capture with
made-up, non-identifying study identifiers, so the demo can show DICOM reading offline.
Usage: python scripts/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "medsight" / "samples" / "cxr"
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


if __name__ == "__main__":
    main()
