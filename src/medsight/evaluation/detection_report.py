"""``medsight evaluate`` for a detection task: every image of a COCO file through the
Predictor, then lesion-level FROC, the image-level ROC AUC and locked operating point, the
same per subgroup, the card's claims re-checked, and galleries of missed lesions and of
false positives (reference boxes green, the model's boxes yellow)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InvalidInputError
from medsight.evaluation.claims import check_claims, claims_html
from medsight.evaluation.detection import ImageDetections, box_iou, froc, study_level
from medsight.tasks import Task

__all__ = [
    "DetectionCase",
    "detection_cases",
    "detection_figures",
    "evaluate_detector",
    "write_detection_report",
]

GALLERY = 8  # images shown in each gallery
MATCH_IOU = 0.3  # as the FROC matches


@dataclass(frozen=True)
class DetectionCase:
    image: Path
    reference: np.ndarray  # (n, 4) boxes, pixel edges
    groups: dict[str, str]  # subgroup column -> value


def detection_cases(
    coco: Path, images: Path, labels: Path | None = None, columns: list[str] | tuple = ()
) -> list[DetectionCase]:
    """Each image of a COCO file (found in ``images``) with its boxes; subgroup values from
    ``labels`` (a CSV with an ``image`` column holding the file names)."""
    from medsight.io.boxes import read_coco_boxes

    found = read_coco_boxes(coco)
    groups: dict[str, dict[str, str]] = {}
    if columns:
        if labels is None or not labels.is_file():
            raise InvalidInputError("subgroup columns need --labels, a CSV of the images")
        with labels.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
        missing = [c for c in ("image", *columns) if rows and c not in rows[0]]
        if missing:
            raise InvalidInputError(f"columns {missing} not in the labels CSV", path=labels)
        groups = {row["image"]: {c: row[c] for c in columns} for row in rows}
    cases = []
    absent = []
    for name, boxes in sorted(found.items()):
        path = images / name
        if not path.is_file():
            absent.append(name)
            continue
        cases.append(DetectionCase(path, boxes.boxes.astype(np.float64), groups.get(name, {})))
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise InvalidInputError(f"{len(absent)} image(s) of the COCO file not found: {shown}",
                                path=images)  # fmt: skip
    if not cases:
        raise InvalidInputError("the COCO file lists no images", path=coco)
    return cases


def _point(task: Task) -> tuple[str, Any]:
    points = task.spec.operating_points
    if not points:
        raise InvalidInputError(f"task {task.id} has no operating point to evaluate")
    name = "high_sensitivity" if "high_sensitivity" in points else sorted(points)[0]
    return name, points[name]


def detection_figures(
    detections: list[ImageDetections], probabilities: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Counts, the image-level AUC and the point's sensitivity and specificity (where both
    kinds of image are present), and lesion FROC (where there are lesions)."""
    labels = np.array([len(d.reference) > 0 for d in detections])
    figures: dict[str, Any] = {
        "images": len(detections),
        "with_lesions": int(labels.sum()),
        "lesions": int(sum(len(d.reference) for d in detections)),
    }
    if labels.any() and (~labels).any():
        figures.update(
            {k: v.as_dict() for k, v in study_level(labels, probabilities, threshold).items()}
        )
    if figures["lesions"]:
        figures["froc"] = froc(detections, iou=MATCH_IOU, resamples=500)
    return figures


def evaluate_detector(
    task: Task, cases: list[DetectionCase], progress: Any = None, predictor: Any = None
) -> dict[str, Any]:
    """Every figure of the report (``predictor``: the task's own unless given)."""
    from medsight.inference import Predictor
    from medsight.io import read_image

    assert task.spec.detection is not None
    name, point = _point(task)
    label = task.spec.outputs[0].name
    predictor = predictor or Predictor(task)
    job = progress.add_task("evaluating", total=len(cases)) if progress is not None else None
    detections, probabilities, shown = [], [], []
    for case in cases:
        image = read_image(case.image)
        prediction = predictor.predict(image)
        boxes = prediction.boxes or []
        detections.append(
            ImageDetections(
                case.image.name,
                case.reference,
                np.array([b["pixel_box"] for b in boxes]).reshape(-1, 4),
                np.array([b["score"] for b in boxes]),
            )
        )
        probabilities.append(float((prediction.probabilities or {})[label]))
        shown.append(image)
        if job is not None:
            progress.advance(job)
    scores = np.array(probabilities)
    results = {
        "task": {"id": task.id, "version": task.version, "hash": task.task_hash},
        "operating_point": {"name": name, "threshold": point.threshold},
        "match_iou": MATCH_IOU,
        "finding_score": task.spec.detection.finding_score,
        **detection_figures(detections, scores, point.threshold),
    }
    columns = sorted({c for case in cases for c in case.groups})
    subgroups: dict[str, dict[str, Any]] = {}
    for column in columns:
        for value in sorted({case.groups.get(column, "") for case in cases}):
            chosen = [i for i, c in enumerate(cases) if c.groups.get(column, "") == value]
            subgroups[f"{column}={value}"] = detection_figures(
                [detections[i] for i in chosen], scores[chosen], point.threshold
            )
    results["subgroups"] = subgroups
    observed = {
        (metric, None if metric == "roc_auc" else name): results[key]
        for metric, key in (("roc_auc", "auc"), ("sensitivity", "sensitivity"))
        if key in results
    }
    if "specificity" in results:
        observed[("specificity", name)] = results["specificity"]
    results["claims"] = [c.as_dict() for c in check_claims(task.spec.claims, observed)]
    results["_galleries"] = _galleries(detections, shown, task.spec.detection.finding_score)
    return results


def _misses_and_false_positives(
    detection: ImageDetections, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reference boxes no shown box finds, and shown boxes on no reference box."""
    kept = detection.scores >= floor
    boxes = np.asarray(detection.boxes).reshape(-1, 4)[kept]
    reference = np.asarray(detection.reference).reshape(-1, 4)
    if len(boxes) == 0 or len(reference) == 0:
        return reference, boxes
    overlaps = box_iou(reference, boxes)
    return reference[overlaps.max(axis=1) < MATCH_IOU], boxes[overlaps.max(axis=0) < MATCH_IOU]


def _galleries(
    detections: list[ImageDetections], images: list[Any], floor: float
) -> dict[str, list[tuple[str, bytes]]]:
    missed: list[tuple[str, bytes]] = []
    false: list[tuple[str, bytes]] = []
    for detection, image in zip(detections, images, strict=True):
        misses, extras = _misses_and_false_positives(detection, floor)
        if len(misses) and len(missed) < GALLERY:
            missed.append((detection.name, _picture(image, detection, floor)))
        if len(extras) and len(false) < GALLERY:
            false.append((detection.name, _picture(image, detection, floor)))
    return {"missed": missed, "false_positives": false}


def _picture(image: Any, detection: ImageDetections, floor: float) -> bytes:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    from medsight.imaging import to_display

    shown = np.asarray(to_display(image, None))  # (c, i, j) in 0-1
    channels = shown[:3] if shown.shape[0] >= 3 else np.repeat(shown[:1], 3, axis=0)
    pixels = np.round(np.clip(channels, 0, 1) * 255).astype(np.uint8).transpose(2, 1, 0)
    picture = PILImage.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(picture)
    for box in np.asarray(detection.reference).reshape(-1, 4):
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(0, 220, 0), width=2)
    for box, score in zip(
        np.asarray(detection.boxes).reshape(-1, 4), detection.scores, strict=True
    ):
        if score >= floor:
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 220, 0), width=2)
            draw.text((box[0] + 2, max(0, box[1] - 12)), f"{score:.2f}", fill=(255, 220, 0))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def _estimate(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


def _row(name: str, figures: dict[str, Any]) -> str:
    froc_figures = figures.get("froc", {}).get("sensitivity_at_fp_per_image", {})
    cells = [
        html.escape(name),
        str(figures["images"]),
        str(figures["lesions"]),
        _estimate(figures.get("auc")),
        _estimate(figures.get("sensitivity")),
        _estimate(figures.get("specificity")),
        *(_estimate(froc_figures.get(rate)) for rate in ("0.5", "1.0", "2.0", "4.0")),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def write_detection_report(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``evaluation.json`` and ``report.html`` (with the galleries) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    galleries = results.get("_galleries", {})
    numbers = {k: v for k, v in results.items() if not k.startswith("_")}
    json_path = out / "evaluation.json"
    json_path.write_text(json.dumps(numbers, indent=2, default=float))
    headers = (
        "<tr><th>group</th><th>images</th><th>lesions</th><th>image ROC AUC</th>"
        "<th>sensitivity</th><th>specificity</th><th>lesion sensitivity at 0.5 FP/image</th>"
        "<th>at 1</th><th>at 2</th><th>at 4</th></tr>"
    )
    rows = [_row("all", results)] + [_row(k, v) for k, v in results["subgroups"].items()]
    sections = []
    for key, title in (("missed", "Missed lesions"), ("false_positives", "False positives")):
        items = "".join(
            f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
            f'alt="{html.escape(name)}" style="max-width:320px"><figcaption>'
            f"{html.escape(name)}</figcaption></figure>"
            for name, png in galleries.get(key, [])
        )
        sections.append(f"<h2>{title}</h2><div style='display:flex;flex-wrap:wrap'>{items}</div>")
    point = results["operating_point"]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>medsight evaluation: {html.escape(results["task"]["id"])}</title></head><body>
<p style="background:#b00020;color:#fff;padding:.5em"><b>Research use only, not for diagnostic
use.</b></p>
<h1>{html.escape(results["task"]["id"])} {html.escape(results["task"]["version"])}</h1>
<p>Operating point {html.escape(point["name"])} (threshold {point["threshold"]:.4f}) on the
image's calibrated probability; a model box finds a reference box at IoU &ge;
{results["match_iou"]}; galleries show boxes scoring at least {results["finding_score"]}
(reference green, model yellow). 95% CIs: DeLong (AUC), Wilson (sensitivity, specificity),
bootstrap over images (lesion sensitivity).</p>
<table border="1" cellpadding="4">{headers}{"".join(rows)}</table>
{claims_html(results["claims"], results.get("warning", ""))}{"".join(sections)}</body></html>"""
    html_path = out / "report.html"
    html_path.write_text(page)
    return json_path, html_path
