"""``analyze --mpp``: a histology tile's stated resolution, applied only where the file
states none, and refused out of range."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from medsight.analysis.inputs import with_stated_spacing
from medsight.cli import app
from medsight.image import Image

runner = CliRunner()


def _tile(known: bool) -> Image:
    return Image(
        array=np.zeros((3, 20, 10), np.uint8),
        affine=np.diag([0.001 if known else 1.0, 0.001 if known else 1.0, 1.0, 1.0]),
        spatial_dims=2,
        photometric_interpretation="RGB",
        spacing_known=known,
    )


def test_stated_spacing_gives_a_tile_real_units():
    image = with_stated_spacing(_tile(False), 0.00025)
    assert image.spacing_known
    assert image.spacing[:2] == pytest.approx((0.00025, 0.00025))


def test_a_files_own_spacing_is_kept_and_the_stated_one_noted():
    image = with_stated_spacing(_tile(True), 0.00025)
    assert image.spacing[:2] == pytest.approx((0.001, 0.001))
    assert any("--mpp 0.25 not applied" in w and "1 um" in w for w in image.warnings)


@pytest.mark.parametrize("value", ["0", "-0.5", "500"])
def test_out_of_range_mpp_is_refused(tmp_path, value):
    result = runner.invoke(app, ["analyze", str(tmp_path), "--mpp", value])
    assert result.exit_code == 2
    assert "--mpp" in result.output and "Input should be" in result.output
