"""The evidence for fold detection (medsight.imaging.tissue.fold_mask) on GBM40's 40 H&E
tiles: each tile at 4 um per pixel as a slide's lowest level would show it, clean and with a
simulated fold (the tile's own tissue, shifted, laid over a band 25, 50 or 100 um tall across
the tile's 256 um: transmittances multiplied, as two layers do). Prints, per condition, how
many tiles are flagged and the area flagged.

    python scripts/fold_evidence.py [--data ../shared/data/pathology-gbm40/raw_image]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from medsight.imaging.tissue import fold_mask, tissue_mask

MPP = 0.5  # GBM40's assumed resolution (docs/pathology.md)
DOWNSAMPLE = 8


def simulated_fold(rgb: np.ndarray, rows: slice) -> np.ndarray:
    """``rgb`` (rows, columns, 3) with its own tissue, shifted, laid over ``rows``."""
    pixels = rgb.astype(np.float32)
    shifted = np.roll(pixels, (91, 53), axis=(0, 1))
    folded = pixels.copy()
    folded[rows] = pixels[rows] * shifted[rows] / 255.0
    return folded.astype(np.uint8)


def flagged_area_um2(rgb: np.ndarray) -> float:
    """Area of the regions fold_mask flags on ``rgb`` seen at the lowest-level resolution."""
    small = np.asarray(
        PILImage.fromarray(rgb).resize(
            (rgb.shape[1] // DOWNSAMPLE, rgb.shape[0] // DOWNSAMPLE), PILImage.Resampling.BOX
        )
    )
    chw = np.moveaxis(small, -1, 0).transpose(0, 2, 1)  # (3, i=x, j=y) as medsight holds it
    pixel_um = MPP * DOWNSAMPLE
    return float(fold_mask(chw, tissue_mask(chw), pixel_um).sum() * pixel_um**2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared/data/pathology-gbm40/raw_image"
    parser.add_argument("--data", type=Path, default=default)
    folder = parser.parse_args().data
    found: dict[str, list[float]] = {"clean": [], "fold 25 um": [], "fold 50 um": []}
    found["fold 100 um"] = []
    for number in range(1, 41):
        rgb = np.asarray(PILImage.open(folder / f"{number:02d}.png").convert("RGB"))
        found["clean"].append(flagged_area_um2(rgb))
        for height_um in (25, 50, 100):
            band = slice(200, 200 + round(height_um / MPP))
            found[f"fold {height_um} um"].append(flagged_area_um2(simulated_fold(rgb, band)))
    for name, areas in found.items():
        flagged = sum(a > 0 for a in areas)
        print(
            f"{name}: {flagged}/40 tiles flagged; flagged area um2 median "
            f"{np.median(areas):.0f}, min {min(areas):.0f}, max {max(areas):.0f}"
        )


if __name__ == "__main__":
    main()
