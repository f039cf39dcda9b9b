"""DICOM input: discovery of studies, series and stacks; geometry; pixel decoding."""

from medsight.io.dicom.discovery import DicomScan, Series, SkippedFile, Stack, Study, scan_dicom
from medsight.io.dicom.reader import read_dicom, read_series, read_stack, read_volumes

__all__ = [
    "DicomScan",
    "Series",
    "SkippedFile",
    "Stack",
    "Study",
    "read_dicom",
    "read_series",
    "read_stack",
    "read_volumes",
    "scan_dicom",
]
