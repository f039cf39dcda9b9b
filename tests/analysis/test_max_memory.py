"""--max-memory: refused before the network runs when the estimate cannot fit, stopped by the
watchdog when the process grows past it; exit 2 with one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsight.analysis.memory import (
    MemoryLimitError,
    memory_guard,
    parse_size,
    resident_bytes,
)
from medsight.cli import app
from medsight.errors import InvalidInputError
from tests.conftest import require_data

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4G", 4 * 2**30), ("4GiB", 4 * 2**30), ("3500M", 3500 * 2**20), ("1.5g", 3 * 2**29)],
)
def test_sizes_are_read_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "4X", "10M", ""])
def test_a_bad_or_tiny_size_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="max-memory"):
        parse_size(text)


def test_the_watchdog_stops_a_block_that_grows_past_the_limit() -> None:
    limit = resident_bytes() + 200 * 2**20
    held = []
    growing = memory_guard(limit, "growing.nii.gz")
    with pytest.raises(MemoryLimitError, match="used more than --max-memory"), growing:
        for _ in range(200):  # 20 MiB at a time, each page touched: up to 4 GiB
            held.append(np.ones(5 * 2**20, dtype=np.float32))
    assert len(held) < 60  # stopped near 200 MiB, far before the loop's end
    held.clear()
    with memory_guard(limit, "small"):  # within the limit: nothing raised, later either
        np.ones(2**20, dtype=np.float32)


def _volume(path: Path, shape: tuple[int, int, int]) -> Path:
    source = nib.load(sorted(require_data("hippocampus-mr", "imagesTr").glob("*.nii.gz"))[0])
    data = np.resize(np.asarray(source.dataobj, dtype=np.float32), shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, source.affine), path)
    return path


def _analyze(volume: Path, out: Path, *extra: str) -> Any:
    command = ["analyze", str(volume), "--task", "hippocampus-mr", "--outputs", "json"]
    return runner.invoke(app, [*command, "--out", str(out), *extra])


def test_analyze_refuses_a_volume_whose_estimate_cannot_fit(tmp_path: Path) -> None:
    # 13 M voxels: the estimate (outputs + 2 float32 copies) is 260 MB over what is held
    large = _volume(tmp_path / "large.nii.gz", (256, 256, 200))
    small = _volume(tmp_path / "small.nii.gz", (36, 50, 35))
    # torch and the model loaded: what the limit is measured over
    warm = _analyze(small, tmp_path / "warm")
    assert warm.exit_code == 0, warm.output
    # headroom for reading the volume and the run's own allocations, far below the estimate
    limit = f"{(resident_bytes() + 150 * 2**20) // 2**20}M"
    refused = _analyze(large, tmp_path / "out", "--max-memory", limit)
    assert refused.exit_code == 2, refused.output
    result = json.loads(next((tmp_path / "out").glob("*/result.json")).read_text())
    (failure,) = result["failures"]
    assert "needs about" in failure["reason"] and "--max-memory" in failure["reason"]
    assert result["priority"]["level"] == "NEEDS_REVIEW"  # never a silent gap
    done = _analyze(small, tmp_path / "out2", "--max-memory", limit)
    assert done.exit_code == 0, done.output
