"""The records of one analysis in result.json: its input, task, gate and model output, and
the label map, heatmap and overlay files they point to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from medsight.analysis.devices import device_hash
from medsight.analysis.inputs import ImageSource
from medsight.gate import GateResult
from medsight.image import Image
from medsight.inference import Prediction, Predictor
from medsight.inference.quantized import SCALE, QuantizedVolume
from medsight.io import write_nifti
from medsight.reporting import overlay_png
from medsight.tasks import Task
from medsight.tasks.task import sha256_file

__all__ = ["gate_record", "input_record", "prediction_record", "task_record"]


def input_record(image: Image, source: ImageSource, key: bytes = b"") -> dict[str, Any]:
    ids = image.identifiers
    return {
        "device": device_hash(image, key) if key else None,
        "kind": source.kind,
        "path": source.relative_path,
        "file_sha256": sha256_file(source.path) if source.path is not None else None,
        "study_instance_uid": ids.study_instance_uid,
        "series_instance_uid": ids.series_instance_uid,
        "sop_instance_uids": list(image.sop_instance_uids),
        "frame_of_reference_uid": ids.frame_of_reference_uid,
        "modality": image.modality,
        "shape": list(image.shape),
        "spacing_mm": list(image.spacing),
        "spacing_known": image.spacing_known,
        "affine_lps": image.affine.tolist(),
        "warnings": list(image.warnings),
        # what a manifest said the image shows (its pixels may not say it)
        **{k: v for k, v in (("laterality", source.laterality), ("phase", source.phase)) if v},
    }


def write_label_map(label_map: np.ndarray, image: Image, path_stem: Path) -> Path:
    if label_map.ndim == 3:
        return write_nifti(
            image.replace(array=label_map[np.newaxis], is_sequence=False),
            path_stem.with_suffix(".nii.gz"),
        )
    path = path_stem.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(label_map.T.astype(np.uint8)).save(path)  # (i, j) -> rows, columns
    return path


def write_instance_map(instances: np.ndarray, path_stem: Path) -> Path:
    """A 2D instance map as a 16-bit PNG (0 background, one id per object); beyond 65,535
    objects a 32-bit TIFF, so that no id is folded onto another."""
    rows_columns = np.ascontiguousarray(instances.T)  # (i, j) -> rows, columns
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    if int(instances.max(initial=0)) <= np.iinfo(np.uint16).max:
        path = path_stem.with_name(path_stem.name + ".png")
        PILImage.fromarray(rows_columns.astype(np.uint16)).save(path)
    else:
        path = path_stem.with_name(path_stem.name + ".tif")
        PILImage.fromarray(rows_columns.astype(np.int32)).save(path)
    return path


def write_heatmap(heatmap: np.ndarray, image: Image, path_stem: Path) -> Path:
    """The heatmap on the input's grid: float NIfTI for volumes, an 8-bit PNG for 2D."""
    if heatmap.ndim == 3:
        return write_nifti(
            image.replace(array=heatmap[np.newaxis].astype(np.float32), is_sequence=False),
            path_stem.with_suffix(".nii.gz"),
        )
    path = path_stem.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = np.round(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.uint8)
    PILImage.fromarray(scaled.T).save(path)  # (i, j) -> rows, columns
    return path


def write_probability_maps(
    probabilities: np.ndarray, task: Task, image: Image, masks_dir: Path, stem: str
) -> dict[str, dict[str, str]]:
    """Each segment's probability on the input's grid: ``<stem>_prob_<segment>.nii.gz``
    (float32, the image's geometry; for a volume segmented in bounded memory, 8-bit with the
    NIfTI scale factor 1/255, which readers apply) and, for a 2D source, an 8-bit PNG."""
    written: dict[str, dict[str, str]] = {}
    for output in task.spec.outputs:
        if output.index == 0 or output.index >= len(probabilities):
            continue
        segment = probabilities[output.index]
        base = masks_dir / f"{stem}_prob_{output.name}"
        target = base.with_name(base.name + ".nii.gz")
        if isinstance(segment, QuantizedVolume):  # written as stored: uint8 x 1/255
            nifti = write_nifti(
                image.replace(array=segment.raw[np.newaxis], is_sequence=False, frames=()),
                target,
                slope=SCALE,
            )
            written[output.name] = {"nifti": nifti.name}
            continue
        values = np.asarray(segment, dtype=np.float32)
        nifti = write_nifti(
            image.replace(array=values[np.newaxis], is_sequence=False, frames=()), target
        )
        entry = {"nifti": nifti.name}
        if values.ndim == 2:
            png = base.with_name(base.name + ".png")
            scaled = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
            PILImage.fromarray(scaled.T).save(png)  # (i, j) -> rows, columns
            entry["png"] = png.name
        written[output.name] = entry
    return written


def _label_counts(label_map: np.ndarray, outputs: int) -> np.ndarray:
    """Voxels per label, slab by slab (a whole-volume bincount makes an int64 copy: 8 bytes
    per voxel, 1.6 GB for a 512x512x800 CT)."""
    counts = np.zeros(outputs, dtype=np.int64)
    for slab in label_map:
        found = np.bincount(slab.ravel(), minlength=outputs)
        counts[: min(outputs, len(found))] += found[:outputs]
    return counts


def gate_record(gate: GateResult, statistics: dict[str, float]) -> dict[str, Any]:
    return {**gate.as_dict(), "statistics": {k: round(v, 5) for k, v in statistics.items()}}


def prediction_record(
    prediction: Prediction,
    task: Task,
    image: Image,
    study_dir: Path,
    stem: str,
    gate: GateResult | None = None,
    *,
    overlay: bool = True,
) -> dict[str, Any]:
    """The analysis block of result.json, writing the files it points to (label map,
    probability maps, heatmap; the overlay PNG only with ``overlay``)."""
    spec = task.spec
    gate = gate or GateResult()
    withheld = gate.withheld
    review = gate.withhold_reasons + gate.review_reasons + prediction.review_reasons
    record: dict[str, Any] = {
        "state": "NEEDS_REVIEW" if review or prediction.state != "OK" else "OK",
        "withheld": withheld,
        "review_reasons": review,
        "timings_s": {k: round(v, 4) for k, v in prediction.timings.items()},
        "overlays": [],
        "details": prediction.details,
    }
    overlay_label: np.ndarray | None = None
    if prediction.probabilities is not None and prediction.logits is not None:
        record["classification"] = {
            "logits": {o.name: float(prediction.logits[o.index]) for o in spec.outputs},
            "probabilities": prediction.probabilities,
            "temperature": spec.calibration.temperature,
            # a withheld answer is kept for audit only: no flag is presented from it
            "audit_only": withheld,
            "operating_points": {
                name: {
                    **flag,
                    "sensitivity": spec.operating_points[name].sensitivity,
                    "specificity": spec.operating_points[name].specificity,
                }
                for name, flag in prediction.flags.items()
            },
        }
        if spec.calibration.temperatures:
            record["classification"]["temperatures"] = spec.calibration.temperatures
        if prediction.grades:
            record["classification"]["grades"] = prediction.grades
        if prediction.heatmap is not None:
            heatmap = write_heatmap(prediction.heatmap, image, study_dir / "heatmaps" / stem)
            record["classification"]["heatmap"] = heatmap.relative_to(study_dir).as_posix()
        elif spec.explanation == "gradcam" and "explain" not in prediction.timings:
            record["classification"]["heatmap_note"] = (
                "no Grad-CAM heatmap computed: no output that shows it was asked "
                "(--outputs heatmap, overlay, html, sc or sr); the finding has no location"
            )
    if prediction.boxes is not None:
        assert spec.detection is not None
        record["detection"] = {
            "audit_only": withheld,
            "boxes": prediction.boxes,
            "finding_score": spec.detection.finding_score,
            # what the image says it shows (DICOM BodyPartExamined, ViewPosition), if it does
            "body_part": image.metadata.get("BodyPartExamined") or None,
            "view": image.metadata.get("ViewPosition") or None,
        }
    if prediction.label_map is not None:
        label_path = write_label_map(prediction.label_map, image, study_dir / "masks" / stem)
        counts = _label_counts(prediction.label_map, len(spec.outputs))
        record["segmentation"] = {
            "audit_only": withheld,
            "label_map": label_path.relative_to(study_dir).as_posix(),
            "segments": [
                {
                    "name": o.name,
                    "index": o.index,
                    "code": o.code.model_dump(),
                    "voxels": int(counts[o.index]) if o.index < len(counts) else 0,
                }
                for o in spec.outputs
                if o.index != 0
            ],
        }
        if prediction.instance_map is not None:
            instances = write_instance_map(
                prediction.instance_map, study_dir / "masks" / f"{stem}_instances"
            )
            record["segmentation"]["instance_map"] = instances.relative_to(study_dir).as_posix()
            record["segmentation"]["instances"] = int(prediction.instance_map.max(initial=0))
        if prediction.segment_probabilities is not None:
            maps = write_probability_maps(
                prediction.segment_probabilities, task, image, study_dir / "masks", stem
            )
            record["segmentation"]["probability_maps"] = {
                name: {kind: f"masks/{file}" for kind, file in files.items()}
                for name, files in maps.items()
            }
        overlay_label = prediction.label_map
    if overlay:
        drawn = overlay_png(  # a withheld answer is not drawn over the image
            image,
            study_dir / "overlays" / f"{stem}.png",
            label_map=None if withheld else overlay_label,
            heatmap=None if withheld else prediction.heatmap,
            boxes=None if withheld else _shown_boxes(prediction, spec),
        )
        record["overlays"].append(drawn.relative_to(study_dir).as_posix())
    return record


def _shown_boxes(prediction: Prediction, spec: Any) -> list[dict[str, Any]] | None:
    """The boxes an overlay draws: those scoring at least the task's finding score."""
    if prediction.boxes is None or spec.detection is None:
        return None
    return [b for b in prediction.boxes if b["score"] >= spec.detection.finding_score]


def task_record(task: Task, predictor: Predictor, mode: str, reasons: list[str]) -> dict[str, Any]:
    return {
        "id": task.id,
        "version": task.version,
        "hash": task.task_hash,
        "weights_sha256": task.weights_sha256,
        "backend": predictor.backend_name,
        "selection": {"mode": mode, "reasons": reasons},
        "intended_use": task.spec.intended_use,
    }
