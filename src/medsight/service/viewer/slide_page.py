"""The slide viewer: a whole slide analysed for nuclei zooms and pans in OpenSeadragon
(vendored from its npm package, ``static/vendor``), with the nucleus density map and the
nucleus outlines as layers to toggle, and the slide's measurements and density hotspots
beside it (a hotspot's button pans to it).

Routes (each needs the reading role, as the study viewer's do):

- ``/api/studies/{key}/slides/{analysis}.dzi`` and ``..._files/{level}/{column}_{row}.jpeg``:
  the slide as Deep Zoom tiles (``slide_tiles.DeepZoom``);
- ``/api/studies/{key}/slides/{analysis}-outlines.dzi`` and its ``_files`` PNG tiles: the
  nucleus outlines on the same grid;
- ``/api/studies/{key}/slides/{analysis}/density.png``: the density map, coloured;
- ``/api/studies/{key}/slides/{analysis}/info``: sizes, microns per pixel, where the density
  map lies, the hotspots.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

# module level: FastAPI resolves the routes' annotations here
from fastapi.responses import Response

from medsight.io.slide import open_slide
from medsight.reporting.html_report import gate_html
from medsight.service.auth import User
from medsight.service.viewer.slide_tiles import DeepZoom, OutlineIndex, density_png

__all__ = ["OSD", "add_slide_routes", "is_slide_analysis", "slide_body"]

#: the vendored OpenSeadragon (scripts/vendor_ui.py)
OSD = "/static/viewer/vendor/openseadragon-6.1.1"


def is_slide_analysis(analysis: dict[str, Any]) -> bool:
    return analysis.get("input", {}).get("kind") == "wsi" and "slide" in analysis


@functools.lru_cache(maxsize=4)
def _zoom(source: Path) -> DeepZoom:
    """An open slide kept for the tiles that follow (opening a DICOM series reads every
    header)."""
    return DeepZoom(open_slide(source))


@functools.lru_cache(maxsize=4)
def _outlines(path: Path, modified: float) -> OutlineIndex:
    return OutlineIndex.build(path)


def add_slide_routes(
    app: Any,
    *,
    reader: Any,
    slide_of: Callable[[str, int], tuple[Path, dict[str, Any], Path]],
) -> None:
    """``slide_of(study_key, analysis)`` gives the slide's source, its analysis record and
    the study's results folder (HTTP 404 when the analysis is not a slide's)."""
    from fastapi import HTTPException

    def zoom_of(study_key: str, analysis: int) -> tuple[DeepZoom, dict[str, Any], Path]:
        source, record, folder = slide_of(study_key, analysis)
        return _zoom(source), record, folder

    def outlines_of(record: dict[str, Any], folder: Path) -> OutlineIndex:
        path = folder / record["slide"]["geojson"]
        if not path.is_file():
            raise HTTPException(404, "this slide's outlines were not written")
        return _outlines(path, path.stat().st_mtime)

    def tile_response(make: Callable[[], bytes], media_type: str) -> Response:
        try:
            payload = make()
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(payload, media_type=media_type, headers={"Cache-Control": "private"})

    xml = "application/xml"

    @app.get("/api/studies/{study_key}/slides/{analysis:int}.dzi", response_class=Response)
    def slide_dzi(study_key: str, analysis: int, user: User = reader) -> Response:
        zoom, _, _ = zoom_of(study_key, analysis)
        return Response(zoom.dzi("jpeg"), media_type=xml)

    @app.get(
        "/api/studies/{study_key}/slides/{analysis:int}_files/{level:int}/{column:int}_{row:int}.jpeg",
        response_class=Response,
    )
    def slide_tile(
        study_key: str, analysis: int, level: int, column: int, row: int, user: User = reader
    ) -> Response:
        zoom, _, _ = zoom_of(study_key, analysis)
        return tile_response(lambda: zoom.tile(level, column, row), "image/jpeg")

    @app.get("/api/studies/{study_key}/slides/{analysis:int}-outlines.dzi", response_class=Response)
    def outline_dzi(study_key: str, analysis: int, user: User = reader) -> Response:
        zoom, record, folder = zoom_of(study_key, analysis)
        outlines_of(record, folder)
        return Response(zoom.dzi("png"), media_type=xml)

    @app.get(
        "/api/studies/{study_key}/slides/{analysis:int}-outlines_files/"
        "{level:int}/{column:int}_{row:int}.png",
        response_class=Response,
    )
    def outline_tile(
        study_key: str, analysis: int, level: int, column: int, row: int, user: User = reader
    ) -> Response:
        zoom, record, folder = zoom_of(study_key, analysis)
        index = outlines_of(record, folder)
        return tile_response(lambda: index.tile(zoom, level, column, row), "image/png")

    @app.get("/api/studies/{study_key}/slides/{analysis:int}/density.png", response_class=Response)
    def density(study_key: str, analysis: int, user: User = reader) -> Response:
        _, record, folder = slide_of(study_key, analysis)
        name = record["slide"].get("density_map")
        if not name or not (folder / name).is_file():
            raise HTTPException(404, "this slide has no density map")
        return Response(density_png(folder / name), media_type="image/png")

    @app.get("/api/studies/{study_key}/slides/{analysis:int}/info")
    def info(study_key: str, analysis: int, user: User = reader) -> dict[str, Any]:
        zoom, record, folder = zoom_of(study_key, analysis)
        return slide_info(zoom, record, folder)


def slide_info(zoom: DeepZoom, record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What the page's script needs: sizes, mpp, the layers and where they lie (in
    OpenSeadragon's viewport units, where the slide is 1 wide), the hotspots."""
    from PIL import Image as PILImage

    slide = record["slide"]
    withheld = bool(record.get("withheld"))  # a withheld answer is not drawn over the slide
    density = None
    name, cell = slide.get("density_map"), slide.get("density_cell_px")
    if name and cell and (folder / name).is_file() and not withheld:
        with PILImage.open(folder / name) as picture:
            columns = picture.width
        density = {"width": columns * cell / zoom.width, "max": slide.get("density_max")}
    hotspots = [
        {
            "x": f["location"]["voxel"][0] / zoom.width,
            "y": f["location"]["voxel"][1] / zoom.width,
            "mm": f["location"]["lps_mm"][:2],
            "density": f["measurements"][0]["value"] if f.get("measurements") else None,
            "unit": f["measurements"][0]["unit"] if f.get("measurements") else None,
        }
        for f in record.get("findings", [])
        if f.get("name") == "nucleus_density_hotspot" and f.get("location")
    ]
    return {
        "width": zoom.width,
        "height": zoom.height,
        "mpp": slide.get("mpp"),
        "nuclei": slide.get("nuclei"),
        "density": density,
        "outlines": not withheld
        and bool(slide.get("geojson"))
        and (folder / slide["geojson"]).is_file(),
        "hotspots": [] if withheld else hotspots,
        "withheld": withheld,
    }


def _measurement_rows(record: dict[str, Any]) -> str:
    rows = []
    for finding in record.get("findings", []):
        if finding.get("name") == "nucleus_density_hotspot":
            continue
        for m in finding.get("measurements", []):
            value = m.get("value")
            shown = f"{value:.4g}" if isinstance(value, int | float) else html.escape(str(value))
            rows.append(
                f"<tr><td>{html.escape(m.get('name', ''))}</td>"
                f"<td>{shown} {html.escape(str(m.get('unit') or ''))}</td></tr>"
            )
    return "".join(rows)


def slide_body(document: dict[str, Any], index: int, links: str) -> str:
    """The slide viewer's HTML body: the zoomable slide with its layer controls, the
    measurements, the hotspots (a button pans to each), the tiles visited, the gate."""
    analysis = document["analyses"][index]
    slide = analysis["slide"]
    priority = document["priority"]
    header = (
        f"<p>Priority <b>{html.escape(priority['level'])}</b>: "
        + "; ".join(html.escape(r) for r in priority["reasons"])
        + "</p>"
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in analysis.get("review_reasons", []))
    withheld = (
        "<p><b>The answer is withheld</b>: the slide is not one this task may judge.</p>"
        if analysis.get("withheld")
        else ""
    )
    task = f"{analysis['task']['id']} {analysis['task']['version']}"
    return f"""{header}
<div class="viewer" id="slide-viewer" data-study="{html.escape(document["study_key"])}"
 data-analysis="{index}" data-osd="{OSD}">
<div class="stage">
<div class="tools" role="toolbar">
<label id="density-control" hidden><input id="density" type="checkbox" checked> nucleus density
<input id="density-opacity" type="range" min="0" max="100" value="40"
 aria-label="density opacity"></label>
<label id="outline-control" hidden><input id="outlines" type="checkbox" checked> nucleus outlines
<input id="outline-opacity" type="range" min="0" max="100" value="90"
 aria-label="outline opacity"></label>
</div>
<div id="slide" style="width:900px;height:700px;background:#fff;border:1px solid #999"
 aria-label="the slide: drag to pan, wheel to zoom"></div>
<p id="status" class="muted">pointer at -</p>
<p class="muted">Outlines are drawn when zoomed in to a quarter of full resolution or more;
the density map shows nuclei per mm<sup>2</sup> of tissue in cells of
{slide.get("density_cell_um") or "?"} um.</p>
</div>
<div class="side">{links}<h2>{html.escape(task)}</h2>{withheld}
<table id="measurements"><thead><tr><th>measurement</th><th>value</th></tr></thead>
<tbody>{_measurement_rows(analysis)}</tbody></table>
<p>{slide["tiles_analysed"]} tissue tiles analysed of {slide["tiles_total"]} over the slide
(level {slide["level"]}, {slide.get("mpp") or "unknown"} um per pixel).</p>
<h2>Highest nucleus density</h2><ol id="hotspots"></ol>
{f"<h2>For review</h2><ul>{reasons}</ul>" if reasons else ""}
{gate_html(analysis)}
<p><a href="report.html">full report</a> - <a href="/">worklist</a></p></div></div>"""
