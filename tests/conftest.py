"""Shared test helpers: the real-data gate and small builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsight.datasets import shared_data_dir


def require_data(*parts: str) -> Path:
    """Path to a real dataset; skip with the reason on a user's machine, fail under CI=true."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        message = (
            f"real dataset {path} not found (set MEDSIGHT_DATA to the folder holding "
            "../shared/data)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " - CI must have the real data", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def ct_dicom_dir() -> Path:
    """The TotalSegmentator CT series (20 slices, JPEG 2000 lossless)."""
    return require_data("totalseg-ct", "example_ct_dicom")
