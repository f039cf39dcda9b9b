"""The result.json analysis of a whole slide analysed for nuclei: its measurements, its
highest-density regions as findings in slide millimetres, the density map and the nucleus
outlines (GeoJSON) it points to."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from medsight.analysis.slide_nuclei import SlideNuclei, analyse_slide_nuclei, density_hotspots
from medsight.findings import Finding
from medsight.findings.measurements import Measurement
from medsight.gate import GateResult
from medsight.image import Image
from medsight.inference import Predictor
from medsight.io.slide import Slide
from medsight.reporting.overlays import overlay_png
from medsight.tasks import Task

__all__ = ["slide_nuclei_record"]

_HOTSPOT_CODE = {
    "value": "nucleus-density-hotspot",
    "scheme": "99MEDSIGHT",
    "meaning": "Region of highest nucleus density",
}


def _model(task: Task) -> dict[str, str]:
    return {"id": task.id, "version": task.version, "hash": task.task_hash}


def _findings(result: SlideNuclei, task: Task) -> list[Finding]:
    interior = task.spec.instances.interior if task.spec.instances else "nucleus"
    output = next(o for o in task.spec.outputs if o.name == interior)
    count = len(result.areas)
    findings = [
        Finding(
            name=output.name,
            code=output.code.model_dump(),
            model=_model(task),
            segment_index=output.index,
            measurements=result.measurements(),
            evidence=f"{count} nuclei in {result.tiles_analysed} tissue tiles "
            f"(of {result.tiles_total} tiles over the slide)",
        )
    ]
    level0_mm = (result.mpp or result.model_mpp) / 1000.0
    unit = "/mm2" if result.known else "{nuclei}/10*6{px2}"
    for rank, (row, column, density) in enumerate(density_hotspots(result), start=1):
        x = (column + 0.5) * result.density_cell
        y = (row + 0.5) * result.density_cell
        side_um = result.density_cell * (result.mpp or result.model_mpp)
        findings.append(
            Finding(
                name="nucleus_density_hotspot",
                code=_HOTSPOT_CODE,
                model=_model(task),
                location={
                    "kind": "point",
                    "voxel": [int(x), int(y)],  # level-0 pixels (x, y)
                    "lps_mm": [x * level0_mm, y * level0_mm, 0.0],  # slide mm from top-left
                },
                measurements=[
                    Measurement(
                        "nucleus density",
                        density,
                        unit,
                        f"nuclei / tissue area over 3 x 3 cells of {side_um:.0f} um",
                        "nucleus",
                    )
                ],
                evidence=f"highest-density region {rank} of the slide"
                + ("" if result.known else " (no microns per pixel: per million pixels)"),
            )
        )
    return findings


def _density_files(
    result: SlideNuclei, thumbnail: Image, study_dir: Path, stem: str
) -> tuple[str, str, float | None]:
    """The density map as an 8-bit PNG (its maximum in result.json) and an overlay of it
    on the slide's thumbnail; paths relative to the study folder."""
    from medsight.inference.preprocess import resample

    density = np.nan_to_num(result.density, nan=0.0)
    top = float(density.max()) if density.size else 0.0
    scaled = density / top if top > 0 else density
    path = study_dir / "heatmaps" / f"{stem}_density.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.round(scaled * 255).astype(np.uint8)).save(path)
    heat = resample(scaled.T[np.newaxis].astype(np.float32), thumbnail.shape)[0]
    overlay = overlay_png(thumbnail, study_dir / "overlays" / f"{stem}.png", heatmap=heat)
    return (
        path.relative_to(study_dir).as_posix(),
        overlay.relative_to(study_dir).as_posix(),
        top if top > 0 else None,
    )


#: the largest region of interest whose instance map is written (level-0 pixels)
MAX_REGION_PIXELS = 8192 * 8192


def _region_segmentation(
    geojson: Path, roi: Any, task: Task, image: Image, study_dir: Path, stem: str
) -> dict[str, Any] | None:
    """The segmentation block of a region of interest (its bounding box, level-0 pixels)
    from the outlines found, written as a tile's is: ``masks/<stem>_instances.png`` (ids in
    outline order) and the label map ``masks/<stem>.png``. None for a region larger than
    MAX_REGION_PIXELS (the outlines are its result)."""
    import json

    from skimage.draw import polygon as fill_polygon

    from medsight.analysis.records import write_instance_map, write_label_map

    x0, y0, x1, y1 = (int(v) for v in np.floor(roi.bounds))
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if width * height > MAX_REGION_PIXELS:
        return None
    instances = np.zeros((width, height), np.uint32)  # (i, j) = (x, y), as images are held
    features = json.loads(geojson.read_text())["features"]
    for number, feature in enumerate(features, start=1):
        ring = np.asarray(feature["geometry"]["coordinates"][0], dtype=np.float64)
        # image coordinates (pixel corners) -> pixel indices of the region
        i, j = fill_polygon(ring[:, 0] - 0.5 - x0, ring[:, 1] - 0.5 - y0, (width, height))
        instances[i, j] = number
    options = task.spec.instances
    assert options is not None
    interior = next(o for o in task.spec.outputs if o.name == options.interior)
    labels = np.where(instances > 0, interior.index, 0).astype(np.uint8)
    label_path = write_label_map(labels, image, study_dir / "masks" / stem)
    instance_path = write_instance_map(instances, study_dir / "masks" / f"{stem}_instances")
    return {
        "audit_only": False,
        "label_map": label_path.relative_to(study_dir).as_posix(),
        "instance_map": instance_path.relative_to(study_dir).as_posix(),
        "instances": len(features),
        "origin_px": [x0, y0],
        "segments": [
            {
                "name": interior.name,
                "index": interior.index,
                "code": interior.code.model_dump(),
                "voxels": int((instances > 0).sum()),
            }
        ],
    }


def slide_nuclei_record(
    slide: Slide,
    task: Task,
    predictor: Predictor,
    thumbnail: Image,
    study_dir: Path,
    stem: str,
    *,
    roi: Any = None,
    outputs: tuple[str, ...] = (),
    gate: Any = None,
) -> dict[str, Any]:
    """Analyse the slide's nuclei and return its result.json analysis block (with "ann" in
    ``outputs``, a DICOM slide also gets its outlines as bulk annotations)."""
    started = time.perf_counter()
    geojson = study_dir / "masks" / f"{stem}_nuclei.geojson"
    result = analyse_slide_nuclei(slide, task, predictor, geojson, roi=roi, gate=gate)
    elapsed = time.perf_counter() - started
    review = list(result.notes)
    if not result.known:
        review.append(
            "the slide states no microns per pixel: analysed at the model's resolution, "
            "measured in pixels"
        )
    if result.tiles_with_tissue == 0:
        review.append("no tissue found on the slide: nothing analysed")
    # most judged tiles withheld by the tile gate: the slide is not one the task may judge
    refused = bool(result.gate_judged) and len(result.gate_withheld) * 2 > result.gate_judged
    if result.gate_withheld:
        review.append(
            f"{len(result.gate_withheld)} of {result.gate_judged} tissue tiles withheld by the "
            f"tile gate ({result.gate_withheld[0]})"
            + ("; the slide's answer is withheld" if refused else "")
        )
    kinds = sorted({region.kind for region in result.quality})
    for kind in kinds:
        count = sum(region.kind == kind for region in result.quality)
        if kind == "pen mark":  # taken out of the tissue: said, not a reason to review
            continue
        taken_out = "; taken out of the tissue analysed" if kind == "fold" else ""
        review.append(
            f"{count} region(s) flagged: {kind} (listed in slide.quality_regions{taken_out})"
        )
    density_map, overlay, top = _density_files(result, thumbnail, study_dir, stem)
    withheld = result.tiles_with_tissue == 0 or refused
    findings = [] if withheld else _findings(result, task)
    region = None
    if roi is not None and findings:
        region = _region_segmentation(geojson, roi, task, thumbnail, study_dir, stem)
        if region is None:
            result.notes.append("the region of interest is too large for an instance map")
    dicom_outputs, output_notes = [], []
    if "ann" in outputs:
        files = getattr(slide, "files", None)
        if not files:
            output_notes.append("ann: bulk annotations are written for DICOM slides only")
        elif findings:
            from medsight.reporting.dicom_ann import write_nucleus_annotations

            written = write_nucleus_annotations(
                geojson, files, task, study_dir / "dicom" / f"{stem}_ann.dcm"
            )
            dicom_outputs.append(written.relative_to(study_dir).as_posix())
    return {
        "dicom_outputs": dicom_outputs,
        "output_notes": output_notes,
        "state": "NEEDS_REVIEW" if review else "OK",
        "withheld": withheld,
        "review_reasons": review,
        "timings_s": {"slide": round(elapsed, 3)},
        "overlays": [overlay],
        "details": {"slide_level": result.level},
        "gate": {
            **GateResult(
                notes=[
                    f"the tile gate judged {result.gate_judged} tissue tile(s) and withheld "
                    f"{len(result.gate_withheld)}; the slide's tissue, ink and focus are "
                    "checked on the slide (slide.quality_regions)"
                ]
            ).as_dict(),
            "decision": "withhold" if withheld else ("review" if review else "pass"),
        },
        "slide": {
            "level": result.level,
            "mpp": result.mpp,
            "model_mpp": result.model_mpp,
            "tile_px": result.tile,
            "margin_px": result.margin,
            "tiles_total": result.tiles_total,
            "tiles_with_tissue": result.tiles_with_tissue,
            "tiles_analysed": result.tiles_analysed,
            "tiles_gated": result.gate_judged,
            "tiles_withheld_by_gate": len(result.gate_withheld),
            "nuclei": len(result.areas),
            "nuclei_left_out": result.left_out,
            "geojson": geojson.relative_to(study_dir).as_posix(),
            "density_map": density_map,
            "density_cell_px": result.density_cell,
            "density_cell_um": (
                result.density_cell * result.mpp if result.mpp is not None else None
            ),
            "density_max": top,
            "roi": None if roi is None else roi.wkt[:200],
            "quality_regions": [region.as_dict(result.mpp) for region in result.quality],
            "notes": result.notes,
        },
        "findings": [f.as_dict() for f in findings],
        **({"segmentation": region} if region is not None else {}),
    }
