"""The study viewer: slices rendered on the server (window/level presets, mask overlay), a
page with a slice slider, preset and overlay controls, the findings and measurements, and a
feedback control per finding. Small on purpose: server-rendered PNGs and a little JS."""

from __future__ import annotations

import functools
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from medsight.image import Image
from medsight.imaging import WINDOW_PRESETS, to_display
from medsight.io import read_image
from medsight.reporting.html_report import gate_html
from medsight.reporting.overlays import blend_heatmap

__all__ = ["Layers", "load_layers", "render_slice", "viewer_body"]

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
def load_layers(source: Path, label_map: Path | None, heatmap: Path | None) -> Layers:
    """The source image, its label map and its heatmap (cached for scrolling). A layer
    whose grid differs from the image's is dropped: never draw on the wrong pixels."""
    image = read_image(source)
    labels = heat = None
    if label_map is not None and label_map.is_file():
        labels = np.asarray(read_image(label_map).array[0]).astype(np.int16)
    if heatmap is not None and heatmap.is_file():
        heat = np.asarray(read_image(heatmap).array[0]).astype(np.float32)
        if heatmap.suffix == ".png":
            heat = heat / 255.0
    return Layers(image, _same_grid(labels, image), _same_grid(heat, image))


def render_slice(
    layers: Layers, k: int, window: str, *, show_mask: bool, show_heat: bool = False
) -> bytes:
    """PNG of slice ``k`` (2D images: the image) with the chosen overlays."""
    image, labels, heat = layers.image, layers.labels, layers.heat
    preset = WINDOW_PRESETS.get(window)
    shown = to_display(image, preset) if preset else to_display(image)
    if image.spatial_dims == 3:
        k = int(np.clip(k, 0, image.shape[2] - 1))
        shown = shown[..., k]
        labels = labels[..., k] if labels is not None else None
        heat = heat[..., k] if heat is not None else None
    rgb = np.repeat(shown[:1], 3, axis=0) if shown.shape[0] == 1 else shown[:3]
    picture = np.clip(rgb, 0, 1).transpose(2, 1, 0) * 255.0  # (rows, columns, 3)
    if show_heat and heat is not None:  # coloured as in the report's overlay
        picture = blend_heatmap(picture / 255.0, heat.T) * 255.0
    if show_mask and labels is not None:
        mask = labels.T
        colours = _MASK_COLOURS[np.clip(mask, 0, len(_MASK_COLOURS) - 1)]
        inside = mask > 0
        picture[inside] = 0.55 * picture[inside] + 0.45 * colours[inside]
    buffer = io.BytesIO()
    PILImage.fromarray(picture.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _failures(document: dict[str, Any]) -> str:
    items = "".join(
        f"<li>{html.escape(f['what'])}: {html.escape(f['reason'])}</li>"
        for f in document.get("failures", [])
    )
    return f"<h2>Not analysed</h2><ul>{items}</ul>" if items else ""


def viewer_body(study_key: str, document: dict[str, Any], index: int) -> tuple[str, str]:
    """The viewer's HTML body and script (the page frame and banner are the caller's)."""
    priority = document["priority"]
    header = (
        f"<p>Priority <b>{html.escape(priority['level'])}</b>: "
        + "; ".join(html.escape(r) for r in priority["reasons"])
        + "</p>"
    )
    if not document["analyses"]:
        return header + _failures(document) + '<p><a href="/">worklist</a></p>', ""
    analysis = document["analyses"][index]
    gate = gate_html(analysis)
    depth = analysis["input"]["shape"][2] if len(analysis["input"]["shape"]) == 3 else 1
    presets = "".join(
        f'<option value="{html.escape(name)}">{html.escape(name)}</option>'
        for name in ["default", *WINDOW_PRESETS]
    )
    rows = []
    for finding in analysis.get("findings", []):
        probability = finding.get("probability")
        measured = "; ".join(
            f"{html.escape(m['name'])} {m['value']:.4g} {html.escape(m['unit'])}"
            for m in finding.get("measurements", [])
        )
        name = html.escape(finding["name"])
        rows.append(
            f"<tr><td>{html.escape(finding['code'].get('meaning', finding['name']))}</td>"
            f"<td>{'' if probability is None else f'{probability:.3f}'}</td>"
            f"<td>{'FLAGGED' if finding.get('flag') else '-'}</td><td>{measured}</td>"
            f'<td><button class="fb" data-finding="{name}" data-verdict="agree">agree</button> '
            f'<button class="fb" data-finding="{name}" data-verdict="disagree">disagree</button>'
            "</td></tr>"
        )
    slider = (
        f'<label>slice <input id="slice" type="range" min="0" max="{depth - 1}" '
        f'value="{depth // 2}"></label>'
        if depth > 1
        else '<input id="slice" type="hidden" value="0">'
    )
    key = json.dumps(study_key)
    toggles = ""
    if "segmentation" in analysis:
        toggles += '<label><input id="mask" type="checkbox" checked> mask</label>'
    if analysis.get("classification", {}).get("heatmap"):
        toggles += '<label><input id="heatmap" type="checkbox" checked> heatmap</label>'
    body = f"""{header}<div style="display:flex;gap:1.5em"><div><div>{slider}
<label>window <select id="window">{presets}</select></label>
{toggles}</div>
<img id="view" alt="image with AI overlay" style="width:480px;border:1px solid #999"></div>
<div><h2>{html.escape(analysis["task"]["id"])} {html.escape(analysis["task"]["version"])}</h2>
<table><tr><th>finding</th><th>probability</th><th>flag</th><th>measurements</th>
<th>your feedback</th></tr>{"".join(rows)}</table><p id="status"></p>
{gate}
{_failures(document)}
<p><a href="report.html">full report</a> - <a href="/">worklist</a></p></div></div>"""
    script = f"""
const key = {key}, index = {index};
function checked(id) {{
  const box = document.getElementById(id); return box && box.checked ? 1 : 0; }}
const view = document.getElementById("view");
function draw() {{
  const k = document.getElementById("slice").value;
  const w = document.getElementById("window").value;
  view.src = `/api/studies/${{key}}/render?analysis=${{index}}&slice=${{k}}` +
    `&window=${{w}}&mask=${{checked("mask")}}&heatmap=${{checked("heatmap")}}`;
}}
for (const id of ["slice", "window", "mask", "heatmap"]) {{
  const control = document.getElementById(id);
  if (control) control.addEventListener("input", draw);
}}
for (const button of document.querySelectorAll("button.fb")) {{
  button.addEventListener("click", async () => {{
    const response = await fetch(`/api/studies/${{key}}/feedback`, {{
      method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{finding: button.dataset.finding,
                             verdict: button.dataset.verdict}})}});
    document.getElementById("status").textContent =
      response.ok ? `feedback stored: ${{button.dataset.verdict}}` : "feedback failed";
  }});
}}
draw();
"""
    return body, script
