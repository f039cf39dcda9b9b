"""The study viewer: slices rendered on the server (window/level presets, mask overlay), a
page with a slice slider, preset and overlay controls, the findings and measurements, and a
feedback control per finding. Small on purpose: server-rendered PNGs and a little JS."""

from __future__ import annotations

import functools
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from medsight.image import Image
from medsight.imaging import WINDOW_PRESETS, to_display
from medsight.io import read_image

__all__ = ["render_slice", "viewer_page"]

_MASK_COLOURS = np.array(
    [[0, 0, 0], [255, 64, 64], [64, 200, 255], [255, 210, 0], [120, 255, 120]], dtype=np.float32
)


@functools.lru_cache(maxsize=4)
def load_pair(source: Path, label_map: Path | None) -> tuple[Image, np.ndarray | None]:
    """The source image and its label map (same grid), cached for scrolling."""
    image = read_image(source)
    labels = None
    if label_map is not None and label_map.is_file():
        labels = np.asarray(read_image(label_map).array[0]).astype(np.int16)
        if labels.shape != tuple(image.shape):
            labels = None  # never overlay a mask on the wrong grid
    return image, labels


def render_slice(
    image: Image, labels: np.ndarray | None, k: int, window: str, show_mask: bool
) -> bytes:
    """PNG of slice ``k`` (2D images: the image) with an optional mask overlay."""
    preset = WINDOW_PRESETS.get(window)
    shown = to_display(image, preset) if preset else to_display(image)
    if image.spatial_dims == 3:
        k = int(np.clip(k, 0, image.shape[2] - 1))
        shown = shown[..., k]
        labels = labels[..., k] if labels is not None else None
    rgb = np.repeat(shown[:1], 3, axis=0) if shown.shape[0] == 1 else shown[:3]
    picture = np.clip(rgb, 0, 1).transpose(2, 1, 0) * 255.0  # (rows, columns, 3)
    if show_mask and labels is not None:
        mask = labels.T
        colours = _MASK_COLOURS[np.clip(mask, 0, len(_MASK_COLOURS) - 1)]
        inside = mask > 0
        picture[inside] = 0.55 * picture[inside] + 0.45 * colours[inside]
    buffer = io.BytesIO()
    PILImage.fromarray(picture.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def viewer_page(study_key: str, document: dict[str, Any], index: int) -> str:
    analysis = document["analyses"][index]
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
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>medsight viewer {html.escape(study_key)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:0}}
.banner{{background:#b00020;color:#fff;padding:.6em 1em;font-weight:700}}
main{{display:flex;gap:1.5em;padding:1em}} img{{width:480px;image-rendering:pixelated;
border:1px solid #999}} td,th{{border:1px solid #ccc;padding:.3em}}
table{{border-collapse:collapse}}
</style></head><body>
<div class="banner" role="alert">medsight viewer - Research use only, not for diagnostic use.
No AI finding is not a negative read.</div>
<main><div><div>{slider}
<label>window <select id="window">{presets}</select></label>
<label><input id="mask" type="checkbox" checked> mask</label></div>
<img id="view" alt="image with AI overlay"></div>
<div><h2>{html.escape(analysis["task"]["id"])} {html.escape(analysis["task"]["version"])}</h2>
<table><tr><th>finding</th><th>probability</th><th>flag</th><th>measurements</th>
<th>your feedback</th></tr>{"".join(rows)}</table><p id="status"></p>
<p><a href="report.html">full report</a> - <a href="/">worklist</a></p></div></main>
<script>
const key = {key}, index = {index};
const view = document.getElementById("view");
function draw() {{
  const k = document.getElementById("slice").value;
  const w = document.getElementById("window").value;
  const m = document.getElementById("mask").checked ? 1 : 0;
  view.src = `/api/studies/${{key}}/render?analysis=${{index}}&slice=${{k}}` +
    `&window=${{w}}&mask=${{m}}`;
}}
for (const id of ["slice", "window", "mask"]) {{
  document.getElementById(id).addEventListener("input", draw);
}}
for (const button of document.querySelectorAll("button.fb")) {{
  button.addEventListener("click", async () => {{
    const response = await fetch(`/api/studies/${{key}}/feedback`, {{
      method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{finding: button.dataset.finding,
                             verdict: button.dataset.verdict, user: "viewer"}})}});
    document.getElementById("status").textContent =
      response.ok ? `feedback stored: ${{button.dataset.verdict}}` : "feedback failed";
  }});
}}
draw();
</script></body></html>"""
