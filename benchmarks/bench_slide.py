"""Whole-slide nucleus analysis: tiles per second and peak memory as the slide grows.

Builds pyramidal TIFFs of 10,240, 20,480 and 40,960 pixels a side (0.5 um per pixel, 512-pixel
TIFF tiles, levels down to 1/64) from the real GBM40 tiles: the same tissue island of
``--tissue`` x ``--tissue`` GBM40 tiles near the centre, glass elsewhere, written tile by tile
(no slide is ever held in memory). Each slide is analysed by the shipped pathology-nuclei
task in a fresh process (`analyse_slide_nuclei`, as `medsight analyze` runs it); the peak
resident memory of that process is its ``ru_maxrss``. The peer is QuPath-style classical
watershed cell detection (medsight.evaluation.nuclei_baseline) over the same tissue tiles:
the ratio says what the network costs over the method pathologists know.

Memory should not grow with the slide: only one tile (1,024 + 2 x 48 model pixels) and the
nuclei found so far (24 bytes each) are held; the tissue mask of the 1/64 level grows with
the slide's area (640 x 640 pixels at 40,960).

Usage: python benchmarks/bench_slide.py [--tissue 6] [--sizes 10240,20480,40960]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GLASS = 238
TIFF_TILE = 512
LEVELS = 7  # 1 ... 1/64


def _gbm_tiles() -> list[np.ndarray]:
    from PIL import Image as PILImage

    from medsight.datasets import shared_data_dir

    folder = shared_data_dir() / "pathology-gbm40" / "raw_image"
    return [np.asarray(PILImage.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def _level_tile(
    level: int, row: int, column: int, tissue: set[tuple[int, int]], tiles: list[np.ndarray]
) -> np.ndarray:
    """One 512-pixel TIFF tile of ``level``: level-0 GBM40 tiles (512 px) shrunk into it."""
    from PIL import Image as PILImage

    factor = 2**level
    out = np.full((TIFF_TILE, TIFF_TILE, 3), GLASS, np.uint8)
    per = TIFF_TILE // factor if factor <= TIFF_TILE else 0
    span = max(1, factor)  # level-0 tiles per level tile side
    for r in range(span):
        for c in range(span):
            key = (row * span + r, column * span + c)
            if key not in tissue:
                continue
            source = tiles[(key[0] * 7 + key[1]) % len(tiles)]
            shrunk = np.asarray(PILImage.fromarray(source).resize((per, per), PILImage.BOX))
            out[r * per : (r + 1) * per, c * per : (c + 1) * per] = shrunk
    return out


def build(path: Path, size: int, island: int) -> None:
    """A ``size``-pixel square pyramid with an island of ``island`` x ``island`` tissue tiles."""
    import tifffile

    tiles = _gbm_tiles()
    count = size // TIFF_TILE
    start = count // 2 - island // 2
    tissue = {(start + r, start + c) for r in range(island) for c in range(island)}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(LEVELS):
            side = size // 2**level
            grid = -(-side // TIFF_TILE)  # tiles a side; the last one padded

            def generate(level: int = level, grid: int = grid):
                for row in range(grid):
                    for column in range(grid):
                        yield _level_tile(level, row, column, tissue, tiles)

            scale = 1e4 / (0.5 * 2**level)
            tif.write(
                generate(),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE),
                photometric="rgb",
                compression="zlib",
                resolution=(scale, scale),
                resolutionunit="CENTIMETER",
                **({"subifds": LEVELS - 1} if level == 0 else {"subfiletype": 1}),
            )


def _child(path: str, method: str) -> None:
    """Runs in a fresh process: analyse one slide, print tiles, seconds and peak memory."""
    from medsight.analysis.slide_nuclei import analyse_slide_nuclei
    from medsight.evaluation.nuclei_baseline import watershed_nuclei
    from medsight.inference import Predictor
    from medsight.io.slide import open_slide
    from medsight.tasks import load_named_task

    task = load_named_task("pathology-nuclei")
    predictor = Predictor(task, explain=False)
    with open_slide(path) as slide:
        if method == "classical":  # the peer: the same tissue tiles, classical watershed
            predictor.predict = _classical(watershed_nuclei, predictor.predict)  # type: ignore[method-assign]
        started = time.perf_counter()
        result = analyse_slide_nuclei(slide, task, predictor, Path(path).with_suffix(".geojson"))
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "tiles": result.tiles_analysed,
                "seconds": seconds,
                "peak_mb": peak_mb,
                "nuclei": len(result.areas),
                "total_tiles": result.tiles_total,
            }
        )
    )


def _classical(detector, predict):
    """A predict() whose instance map comes from the classical detector (no network)."""

    def run(image):
        from medsight.inference.prediction import Prediction

        instances = detector(image.array[:3], mpp=float(image.spacing[0]) * 1000)
        return Prediction(
            task_id="classical",
            task_version="-",
            task_hash="-",
            weights_sha256={},
            kind="segmentation",
            output_names=[],
            affine=image.affine,
            shape=image.shape,
            backend="scikit-image",
            instance_map=instances,
        )

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tissue", type=int, default=6, help="island side in 512-px tiles")
    parser.add_argument("--sizes", default="10240,20480,40960")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    print(f"tissue island: {args.tissue} x {args.tissue} GBM40 tiles (0.5 um per pixel)")
    print("slide side | file MB | method | tiles analysed / all | tiles/s | peak MB | nuclei")
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(folder) / f"slide-{size}.tif"
            build(path, size, args.tissue)
            rates = {}
            for method in ("network", "classical"):
                output = (
                    subprocess.run(
                        [sys.executable, __file__, "--child", str(path), method],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                run = json.loads(output)
                rates[method] = run["tiles"] / run["seconds"]
                print(
                    f"{size} | {path.stat().st_size / 1e6:.0f} | {method} | "
                    f"{run['tiles']} / {run['total_tiles']} | {rates[method]:.3f} | "
                    f"{run['peak_mb']:.0f} | {run['nuclei']}"
                )
            print(
                f"{size}: network / classical tiles per second = "
                f"{rates['network'] / rates['classical']:.2f}x"
            )
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
