"""Box annotations for detection: COCO files in, per-image boxes out.

A COCO file (``images``, ``annotations`` with ``bbox`` [x, y, width, height] in pixels from
the image's top-left corner, ``categories``) gives each image its boxes as [x0, y0, x1, y1]
with their category names; images without annotations get none (they are the negatives a
detector must learn to leave empty). Every problem found is named with the annotation's id
and file, all at once, so a training run never starts on boxes that do not fit their images:
a box reaching outside its image (refused, not clipped: it says the annotation was drawn on
another size of the image), a box of no width or height, an annotation of an unknown image
or category.
Written with the standard library: pycocotools indexes the same JSON but checks none of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsight.errors import InvalidInputError

__all__ = ["ImageBoxes", "read_coco_boxes"]

_SHOWN = 8  # problems listed in the message; the rest are counted


@dataclass(frozen=True)
class ImageBoxes:
    """One image's boxes: [x0, y0, x1, y1] pixels (n, 4) and each box's category name."""

    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: tuple[str, ...]


def read_coco_boxes(path: str | Path) -> dict[str, ImageBoxes]:
    """Every image of a COCO file with its boxes, by file name; refuses a file whose
    boxes do not fit their images, naming each (annotation id, file, problem)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        images = {int(i["id"]): i for i in document["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in document.get("categories", [])}
        annotations = document.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"not a COCO annotation file ({exc})", path=path) from exc
    boxes: dict[int, list[list[float]]] = {k: [] for k in images}
    labels: dict[int, list[str]] = {k: [] for k in images}
    problems = []
    for annotation in annotations:
        ident = annotation.get("id", "?")
        image = images.get(int(annotation.get("image_id", -1)))
        if image is None:
            problems.append(f"annotation {ident}: image_id {annotation.get('image_id')} unknown")
            continue
        name = image["file_name"]
        category = categories.get(int(annotation.get("category_id", -1)))
        if category is None:
            problems.append(f"annotation {ident} ({name}): unknown category")
            continue
        try:
            x, y, width, height = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"annotation {ident} ({name}): bbox is not [x, y, width, height]")
            continue
        if not (width > 0 and height > 0):
            problems.append(f"annotation {ident} ({name}): box of no width or height")
            continue
        x1, y1 = x + width, y + height
        if x < 0 or y < 0 or x1 > image["width"] or y1 > image["height"]:
            problems.append(
                f"annotation {ident} ({name}): box [{x:.1f}, {y:.1f}, {x1:.1f}, {y1:.1f}] "
                f"outside the {image['width']}x{image['height']} image"
            )
            continue
        boxes[image["id"]].append([x, y, x1, y1])
        labels[image["id"]].append(category)
    if problems:
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise InvalidInputError(
            f"{len(problems)} annotation(s) refused: " + "; ".join(problems[:_SHOWN]) + more,
            path=path,
        )
    return {
        image["file_name"]: ImageBoxes(
            image["file_name"],
            int(image["width"]),
            int(image["height"]),
            np.asarray(boxes[k], dtype=np.float32).reshape(-1, 4),
            tuple(labels[k]),
        )
        for k, image in images.items()
    }
