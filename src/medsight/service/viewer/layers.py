"""The study viewer's server side: the volume's description (size, spacing, orientation
labels from the affine, window presets that fit the modality, layers, findings with the
slice and box of each segmented one) and raw slices of each layer. The drawing (zoom, pan,
window/level, scrolling, measurement, layers with opacity and colour scale) happens in the
browser, in ``static/viewer.js``.

Why our own canvas code rather than Cornerstone3D: the viewer shows one analysis's stack with
at most two overlays; Cornerstone3D brings a WebGL volume renderer, a loader framework and
a build step for that (megabytes), while the canvas code is a few hundred lines a reviewer
can read, runs offline and needs no vendored package. OHIF or Weasis attach over DICOMweb for
everything beyond it."""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.findings.measurements import spoken_number, spoken_unit
from medsight.image import Image
from medsight.imaging import WINDOW_PRESETS
from medsight.io import read_image
from medsight.reporting.html_report import gate_html, study_finding_html

__all__ = [
    "Layers",
    "analysis_links",
    "load_layers",
    "orientation_labels",
    "presets",
    "slice_bytes",
    "viewer_body",
    "volume_info",
]

_MASK_COLOURS = np.array(
    [[0, 0, 0], [255, 64, 64], [64, 200, 255], [255, 210, 0], [120, 255, 120]], dtype=np.float32
)


@dataclass(frozen=True)
class Layers:
    """The source image and what can be drawn over it, all on the image's grid."""

    image: Image
    labels: np.ndarray | None
    heat: np.ndarray | None


def _same_grid(array: np.ndarray | None, image: Image) -> np.ndarray | None:
    return array if array is not None and array.shape == tuple(image.shape) else None


@functools.lru_cache(maxsize=4)
def load_layers(
    source: Path,
    label_map: Path | None,
    heatmap: Path | None,
    instances: tuple[str, ...] = (),
) -> Layers:
    """The source image, its label map and its heatmap (cached for scrolling). A layer
    whose grid differs from the image's is dropped: never draw on the wrong pixels. A cine
    shows the phase the analysis read (its SOP instances), the first phase otherwise."""
    image = _phase_of(read_image(source), instances)
    labels = heat = None
    if label_map is not None and label_map.is_file():
        labels = np.asarray(read_image(label_map).array[0]).astype(np.int16)
    if heatmap is not None and heatmap.is_file():
        heat = np.asarray(read_image(heatmap).array[0]).astype(np.float32)
        if heatmap.suffix == ".png":
            heat = heat / 255.0
    return Layers(image, _same_grid(labels, image), _same_grid(heat, image))


def _phase_of(image: Image, instances: tuple[str, ...]) -> Image:
    if not image.is_sequence:
        return image
    wanted = set(instances)
    for t in range(image.num_timepoints):
        phase = image.timepoint(t)
        if wanted and wanted <= set(phase.sop_instance_uids):
            return phase
    return image.timepoint(0)


def _direction(vector: np.ndarray) -> str:
    """The patient direction (LPS) a voxel axis points to: its largest components, e.g. "L"
    or "LA" for an oblique axis."""
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    order = np.argsort(-np.abs(vector))
    picked = [
        letters[axis][int(vector[axis] > 0)]
        for axis in order[:2]
        if abs(vector[axis]) > 0.3 * np.abs(vector).max()
    ]
    return "".join(picked)


_OPPOSITE = str.maketrans("RLAPIS", "LRPASI")


def orientation_labels(image: Image) -> dict[str, str] | None:
    """Where the patient is at each edge of a displayed slice (columns = i to the right,
    rows = j downwards), from the affine; None when the orientation is not known, and for
    photographs (a camera's frame has no patient direction, whatever a converter wrote)."""
    if not image.orientation_known or _kind(image) == "photograph":
        return None
    right = _direction(image.affine[:3, 0])
    down = _direction(image.affine[:3, 1])
    return {
        "right": right,
        "left": right.translate(_OPPOSITE),
        "bottom": down,
        "top": down.translate(_OPPOSITE),
    }


def _kind(image: Image) -> str:
    if image.photometric_interpretation == "RGB" or image.modality in ("XC", "OP", "GM", "ES"):
        return "photograph"
    if image.modality == "CT":
        return "CT"
    if image.modality in ("MR", "PT", "NM"):
        return image.modality
    return "radiograph" if image.spatial_dims == 2 else "volume"


def presets(image: Image) -> list[dict[str, Any]]:
    """Window presets that fit the image's kind: the CT presets only for CT, the image's own
    window where it has one, and percentile and full-range windows for the rest."""
    values = image.array[0]
    sample = values.ravel()[:: max(1, values.size // 2_000_000)]  # bounded work per stack
    low, high = np.percentile(sample, [1, 99]) if sample.size else (0.0, 1.0)
    low_all, high_all = float(np.min(values)), float(np.max(values))
    found: list[dict[str, Any]] = []
    kind = _kind(image)
    if kind == "photograph":
        return [{"name": "as acquired", "center": 127.5, "width": 255.0}]
    metadata = image.metadata
    if "WindowCenter" in metadata and "WindowWidth" in metadata:
        centre, width = metadata["WindowCenter"], metadata["WindowWidth"]
        centre = float(centre[0] if isinstance(centre, list) else centre)
        width = float(width[0] if isinstance(width, list) else width)
        found.append({"name": "as acquired (DICOM)", "center": centre, "width": width})
    if kind == "CT":
        found += [
            {"name": name, "center": centre, "width": width}
            for name, (centre, width) in WINDOW_PRESETS.items()
        ]
    found.append(
        {
            "name": "auto (1st-99th percentile)",
            "center": float(low + high) / 2,
            "width": max(float(high - low), 1e-3),
        }
    )
    found.append(
        {
            "name": "full range",
            "center": (low_all + high_all) / 2,
            "width": max(high_all - low_all, 1e-3),
        }
    )
    if kind in ("MR", "PT", "NM", "volume"):  # no standard window: the image's own range
        found.sort(key=lambda p: not str(p["name"]).startswith("auto"))
    return found


def _shown_boxes(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    detection = analysis.get("detection") or {}
    if detection.get("audit_only"):
        return []  # a withheld answer is not drawn
    floor = detection.get("finding_score", 0.0)
    return [
        {"label": b["label"], "score": b["score"], "pixel_box": b["pixel_box"]}
        for b in detection.get("boxes", [])
        if b["score"] >= floor
    ]


def volume_info(layers: Layers, analysis: dict[str, Any]) -> dict[str, Any]:
    """What the canvas viewer needs to know before it asks for slices."""
    image = layers.image
    depth = image.shape[2] if image.spatial_dims == 3 else 1
    findings = analysis.get("findings", [])
    flagged = any(f.get("flag") for f in findings)
    segments = analysis.get("segmentation", {}).get("segments", [])
    selected = []
    for finding in findings:
        entry: dict[str, Any] = {
            "name": finding["name"],
            "meaning": finding.get("code", {}).get("meaning", finding["name"]),
            "probability": finding.get("probability"),
            "flag": finding.get("flag"),
            "measurements": [
                {
                    "name": m["name"],
                    "value": spoken_number(m["value"]),
                    "unit": spoken_unit(m["unit"]),
                }
                for m in finding.get("measurements", [])
            ],
        }
        location = finding.get("location") or {}
        if depth == 1 and "pixel_box" in location:  # a detected box: its own pixels
            entry["box"] = [*location["voxel_min"][:2], *location["voxel_max"][:2]]
            entry["detected"] = finding.get("flag") is None
        index = next((s["index"] for s in segments if s["name"] == finding["name"]), None)
        if index is not None and layers.labels is not None:
            inside = np.argwhere(layers.labels == index)
            if inside.size:
                k = int(np.bincount(inside[:, 2]).argmax()) if depth > 1 else 0
                in_slice = inside[inside[:, 2] == k] if depth > 1 else inside
                entry["segment"] = index
                entry["slice"] = k
                entry["box"] = [  # columns (i) and rows (j) of the segment in that slice
                    int(in_slice[:, 0].min()),
                    int(in_slice[:, 1].min()),
                    int(in_slice[:, 0].max()),
                    int(in_slice[:, 1].max()),
                ]
        selected.append(entry)
    return {
        "columns": int(image.shape[0]),
        "rows": int(image.shape[1]),
        "slices": depth,
        "channels": int(image.num_channels),
        "spacing": [float(v) for v in image.spacing],
        "spacing_known": bool(image.spacing_known),
        "orientation": orientation_labels(image),
        "kind": _kind(image),
        "inverted": image.photometric_interpretation == "MONOCHROME1",
        "modality": image.modality,
        "presets": presets(image),
        "mask": layers.labels is not None,
        "segments": [
            {"index": s["index"], "name": s["name"], "colour": _colour(s["index"])}
            for s in segments
        ],
        "heatmap": layers.heat is not None,
        # a detection's boxes at or above its finding score, drawn with their scores
        "boxes": _shown_boxes(analysis) if depth == 1 else [],
        "flagged": flagged,  # the heatmap is shown at first only for a flagged finding
        "findings": selected,
    }


def _colour(index: int) -> list[int]:
    return [int(v) for v in _MASK_COLOURS[index % len(_MASK_COLOURS) or 1]]


def slice_bytes(layers: Layers, k: int, layer: str) -> bytes:
    """One slice of a layer as raw little-endian bytes in row order (rows = j, columns = i):
    the image as float32 per channel (values after the modality LUT), the label map as uint8,
    the heatmap as uint8 (0-255). IndexError when ``k`` is outside the stack, LookupError
    when the layer does not exist."""
    image = layers.image
    depth = image.shape[2] if image.spatial_dims == 3 else 1
    if not 0 <= k < depth:
        raise IndexError(f"slice {k} is outside the stack (0 to {depth - 1})")
    if layer == "image":
        values = image.array[..., k] if image.spatial_dims == 3 else image.array
        return np.ascontiguousarray(values.transpose(0, 2, 1), dtype="<f4").tobytes()
    source = {"mask": layers.labels, "heatmap": layers.heat}.get(layer)
    if source is None:
        raise LookupError(f"this analysis has no {layer} layer")
    plane = source[..., k] if image.spatial_dims == 3 else source
    if layer == "heatmap":
        plane = np.clip(plane, 0, 1) * 255
    return np.ascontiguousarray(plane.T, dtype=np.uint8).tobytes()


def analysis_links(document: dict[str, Any], index: int) -> str:
    """For a study of several analyses (a cine's phases, both eyes): one link each, named
    by its input (phase, file), the shown one marked."""
    analyses = document["analyses"]
    if len(analyses) < 2:
        return ""
    roles = {  # what a study finding took each analysis for: end-diastole, end-systole
        entry["analysis"]: f"{name}: {entry.get('description', '')}"
        for finding in document.get("study_findings", [])
        for name, entry in finding.get("phases", {}).items()
        if name in ("ED", "ES")
    }
    items = []
    for i, analysis in enumerate(analyses):
        source = analysis["input"]
        named = " ".join(v for v in (source.get("phase"), source.get("laterality")) if v)
        label = roles.get(i) or " ".join(v for v in (named, Path(source["path"]).name) if v)
        items.append(
            f'<li aria-current="true"><b>{html.escape(label)}</b></li>'
            if i == index
            else f'<li><a href="?analysis={i}">{html.escape(label)}</a></li>'
        )
    return f'<nav id="analyses"><h2>Analyses</h2><ol>{"".join(items)}</ol></nav>'


def _failures(document: dict[str, Any]) -> str:
    items = "".join(
        f"<li>{html.escape(f['what'])}: {html.escape(f['reason'])}</li>"
        for f in document.get("failures", [])
    )
    return f"<h2>Not analysed</h2><ul>{items}</ul>" if items else ""


def viewer_body(
    study_key: str, document: dict[str, Any], index: int, *, viewable: bool = True
) -> str:
    """The viewer's HTML body (the page frame, banner and script tag are the caller's): the
    canvas and its tools, the findings with feedback, the gate's notes."""
    priority = document["priority"]
    header = (
        f"<p>Priority <b>{html.escape(priority['level'])}</b>: "
        + "; ".join(html.escape(r) for r in priority["reasons"])
        + "</p>"
    )
    if not viewable:
        return header + _failures(document) + '<p><a href="/">worklist</a></p>'
    analysis = document["analyses"][index] if document["analyses"] else {}
    task = (
        f"{analysis['task']['id']} {analysis['task']['version']}"
        if analysis
        else "not analysed: the images as stored"
    )
    return f"""{header}
<div class="viewer" id="viewer" data-study="{html.escape(study_key)}" data-analysis="{index}">
<div class="stage">
<div class="tools" role="toolbar">
<button data-tool="pan" class="active" title="drag to pan">pan</button>
<button data-tool="window" title="drag: left-right width, up-down level">window/level</button>
<button data-tool="distance" title="drag to measure a distance">distance</button>
<button data-tool="area" title="click corners, double-click to close">area</button>
<button id="zoom-in" title="zoom in (+)">+</button>
<button id="zoom-out" title="zoom out (-)">-</button>
<button id="reset" title="reset view (r)">reset</button>
<select id="preset" aria-label="window preset"></select>
<label id="mask-control" hidden><input id="mask" type="checkbox" checked> mask
<input id="mask-opacity" type="range" min="0" max="100" value="45"
 aria-label="mask opacity"></label>
<label id="boxes-control" hidden><input id="boxes" type="checkbox" checked> boxes</label>
<label id="heat-control" hidden><input id="heatmap" type="checkbox"> heatmap
<input id="heat-opacity" type="range" min="0" max="100" value="50"
 aria-label="heatmap opacity"></label>
</div>
<canvas id="canvas" width="720" height="720" tabindex="0"
 aria-label="image: wheel or arrow keys scroll slices, drag with the chosen tool"></canvas>
<div id="legend"></div>
<p id="status" class="muted"></p><p id="measured"></p>
</div>
<div class="side">{analysis_links(document, index)}<h2>{html.escape(task)}</h2>
<table id="findings"><thead><tr><th>finding</th><th>result</th><th>measurements</th>
<th>your feedback</th></tr></thead><tbody></tbody></table><p id="feedback-status"></p>
{gate_html(analysis) if analysis else ""}
{"".join(study_finding_html(f, document["analyses"]) for f in document.get("study_findings", []))}
{_failures(document)}
<p><a href="report.html">full report</a> - <a href="/">worklist</a></p></div></div>"""
