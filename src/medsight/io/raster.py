"""2D raster images (PNG, JPEG, TIFF, BMP, PGM/PPM, GIF) for fundus, skin and photo inputs.

Pixel size is rarely in such files: pass ``spacing`` (mm per pixel, (column, row)) when it is
known (e.g. from the camera calibration); otherwise the image says ``spacing_known=False``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from medsight.errors import InvalidInputError, UnreadableFileError
from medsight.image import FrameReference, Image
from medsight.io.limits import ReadLimits, ResourceLimitError, current_limits

__all__ = ["RASTER_SUFFIXES", "read_raster"]

RASTER_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".pnm", ".gif"}
)


def _to_array(picture: PILImage.Image) -> tuple[np.ndarray, str, list[str]]:
    """Pixels as (rows, columns, channels) plus the photometric interpretation and notes."""
    notes: list[str] = []
    mode = picture.mode
    if mode in ("P", "PA"):
        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
        notes.append("palette image expanded to RGB")
        mode = picture.mode
    if mode in ("RGBA", "LA"):
        notes.append(f"alpha channel of a {mode} image dropped")
        picture = picture.convert("RGB" if mode == "RGBA" else "L")
        mode = picture.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} image converted to RGB")
        picture = picture.convert("RGB")
        mode = "RGB"
    if mode == "1":
        picture = picture.convert("L")
        mode = "L"
    pixels = np.asarray(picture)
    if pixels.ndim == 2:
        return pixels[..., np.newaxis], "MONOCHROME2", notes
    return pixels, "RGB", notes


#: a raster longer than this on a side is reduced (in 8/16-bit, by a whole factor, before
#: any float conversion) as it is read: every model here takes well under this, and memory
#: then follows the model's input size rather than the file's
MAX_RASTER_SIDE = 4096


def _reduction(size: tuple[int, int]) -> int:
    return max(1, -(-max(size) // MAX_RASTER_SIDE))  # ceiling division


def _draft_size(size: tuple[int, int]) -> tuple[int, int]:
    factor = _reduction(size)
    return (max(1, size[0] // factor), max(1, size[1] // factor))


def _reduced_note(original: tuple[int, int], reduced: tuple[int, int]) -> str:
    return (
        f"reduced from {original[0]}x{original[1]} to {reduced[0]}x{reduced[1]} pixels as read "
        f"(longest side over {MAX_RASTER_SIDE}); pixel sizes scale with it"
    )


def _check_declared(path: Path, limits: ReadLimits) -> None:
    """The file's size and its declared width x height against the limits, before decoding
    (Pillow's own bomb guard is replaced by the configurable ``frame_pixels`` limit)."""
    size = path.stat().st_size
    limits.check("file_bytes", size, f"a file of {size:,} bytes", path)
    with warnings.catch_warnings():  # Pillow's bomb warning: the check below decides
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            with PILImage.open(path) as picture:
                width, height = picture.size
                samples = len(picture.getbands())
        except PILImage.DecompressionBombError:  # over twice Pillow's guard, set to the limit
            found = f"an image declaring over {2 * limits.frame_pixels:,} pixels"
            limits.check("frame_pixels", 2 * limits.frame_pixels + 1, found, path)
    limits.check_frame(height, width, samples, 2 if picture.mode.startswith("I") else 1, path)


def read_raster(path: str | Path, *, spacing: tuple[float, float] | None = None) -> Image:
    """Read one 2D raster image; ``spacing`` is (column, row) pixel size in mm when known.

    An image longer than ``MAX_RASTER_SIDE`` is reduced as it is read; one over the
    ``frame_pixels`` resource limit is refused before decoding.
    """
    path = Path(path)
    limits = current_limits()
    # Pillow's own guard (a process-wide setting) is raised to the configured limit, which is
    # checked here from the header; raised only, so threads cannot race it lower
    PILImage.MAX_IMAGE_PIXELS = max(PILImage.MAX_IMAGE_PIXELS or 0, limits.frame_pixels)
    try:
        _check_declared(path, limits)
        with PILImage.open(path) as picture:
            original = picture.size
            if picture.format == "JPEG" and _reduction(original) > 1:
                picture.draft(picture.mode, _draft_size(original))  # decode smaller
            picture.load()
            factor = _reduction(picture.size)
            reduced = picture.reduce(factor) if factor > 1 else picture
            pixels, photometric, notes = _to_array(reduced)
            shown = reduced.size
            if shown != original:
                notes.insert(0, _reduced_note(original, shown))
    except FileNotFoundError as exc:
        raise UnreadableFileError("file not found", path=path) from exc
    except ResourceLimitError:
        raise
    except UnidentifiedImageError as exc:
        raise UnreadableFileError("not an image file Pillow can read", path=path) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableFileError(f"cannot decode image ({exc})", path=path) from exc
    if spacing is not None and (len(spacing) != 2 or min(spacing) <= 0):
        raise InvalidInputError(f"spacing must be two positive numbers (mm), got {spacing}")
    column_size, row_size = spacing if spacing is not None else (1.0, 1.0)
    # a reduced image's pixel covers several of the file's (placeholder or real) pixels
    column_size *= original[0] / shown[0]
    row_size *= original[1] / shown[1]
    affine = np.diag([column_size, row_size, 1.0, 1.0])
    notes_out = list(notes)
    if spacing is None:
        notes_out.append("pixel spacing unknown: the affine uses 1 mm pixels as a placeholder")
    return Image(
        # (rows, columns, c) -> (c, i=columns, j=rows)
        array=pixels.transpose(2, 1, 0),
        affine=affine,
        spatial_dims=2,
        modality=None,
        photometric_interpretation=photometric,
        frames=(FrameReference(path),),
        spacing_known=spacing is not None,
        orientation_known=False,
        metadata={"source_format": path.suffix.lower().lstrip(".")},
        warnings=tuple(notes_out),
    )
