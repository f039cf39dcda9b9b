"""Intake: how studies arrive (DICOM C-STORE so far)."""

from medsight.service.intake.dicom_listener import DicomListener

__all__ = ["DicomListener"]
