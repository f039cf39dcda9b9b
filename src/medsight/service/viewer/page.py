"""The viewer's routes: the page, the volume's description and raw slices of each layer.
A study nothing analysed still shows its first stored image series."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Query  # module level: FastAPI resolves route annotations here

from medsight.service.audit import AuditLog
from medsight.service.auth import User
from medsight.service.frame import page
from medsight.service.store import InstanceStore
from medsight.service.viewer.layers import (
    analysis_links,
    load_layers,
    slice_bytes,
    viewer_body,
    volume_info,
)
from medsight.service.viewer.slide_page import (
    OSD,
    add_slide_routes,
    is_slide_analysis,
    slide_body,
)

__all__ = ["add_viewer"]


def add_viewer(
    app: Any,
    store: InstanceStore,
    *,
    reader: Any,
    study: Callable[[str], dict[str, Any]],
    audit: AuditLog,
) -> None:
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, Response

    results_dir = store.data_dir / "results"

    def unanalysed_source(document: dict[str, Any]) -> Path:
        """A study no task analysed still shows its first image series (it needs a read)."""
        from sqlalchemy import select

        from medsight.service import schema

        with store.engine.connect() as connection:
            uid = connection.execute(
                select(schema.worklist.c.study_instance_uid).where(
                    schema.worklist.c.study_key == document["study_key"]
                )
            ).scalar()
        for instance in store.instances_of(uid or ""):
            if instance.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.") and not (
                instance.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.88")  # SR
            ):
                return instance.path.parent
        raise HTTPException(404, "this study has no stored image to show")

    def source_of(document: dict[str, Any], index: int) -> tuple[Path, Path | None, Path | None]:
        if not document["analyses"] and index == 0:
            return unanalysed_source(document), None, None
        if not 0 <= index < len(document["analyses"]):
            raise HTTPException(404, f"no analysis {index}")
        analysis = document["analyses"][index]
        source = analysis["input"]
        series = [
            i
            for i in store.instances_of(source.get("study_instance_uid") or "")
            if i.series_instance_uid == source.get("series_instance_uid")
        ]
        if not series:
            raise HTTPException(404, "the source images are not in this service's store")
        folder = results_dir / document["study_key"]
        label_map = analysis.get("segmentation", {}).get("label_map")
        heatmap = analysis.get("classification", {}).get("heatmap")
        return (
            series[0].path.parent,
            folder / label_map if label_map else None,
            folder / heatmap if heatmap else None,
        )

    @app.get("/studies/{study_key}/viewer", response_class=HTMLResponse)
    def viewer(
        study_key: str, analysis: Annotated[int, Query(ge=0, le=1000)] = 0, user: User = reader
    ) -> str:
        document = study(study_key)
        try:
            source_of(document, analysis)
            viewable = True
        except HTTPException:
            if document["analyses"]:
                raise  # 404 before a page that cannot show images
            viewable = False  # nothing analysed and nothing to show: the reasons only
        audit.append(user.name, "view", study_key, {"result_id": document.get("result_id")})
        if viewable and document["analyses"] and is_slide_analysis(document["analyses"][analysis]):
            links = analysis_links(document, analysis)
            body = patient_line(study_key) + slide_body(document, analysis, links)
            scripts = [f"{OSD}/openseadragon.min.js", "/static/viewer/slide.js"]
            return page(f"slide {study_key}", body, user=user, scripts=scripts)
        body = patient_line(study_key) + viewer_body(
            study_key, document, analysis, viewable=viewable
        )
        scripts = ["/static/viewer/viewer.js"] if viewable else []
        return page(f"viewer {study_key}", body, user=user, scripts=scripts)

    def slide_of(study_key: str, index: int) -> tuple[Path, dict[str, Any], Path]:
        document = study(study_key)
        if not 0 <= index < len(document["analyses"]) or not is_slide_analysis(
            document["analyses"][index]
        ):
            raise HTTPException(404, f"analysis {index} is not a whole slide's")
        source, _, _ = source_of(document, index)
        return source, document["analyses"][index], results_dir / document["study_key"]

    add_slide_routes(app, reader=reader, slide_of=slide_of)

    def patient_line(study_key: str) -> str:
        """Who and what this study is, for the reading roles (the page view is audited)."""
        from sqlalchemy import select

        from medsight.service import schema

        table = schema.worklist
        with store.engine.connect() as connection:
            row = connection.execute(select(table).where(table.c.study_key == study_key)).first()
        if row is None:
            return ""
        name = (row.patient_name or "(no name)").replace("^", " ")
        date = row.study_date or ""
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date
        parts = [
            f"<b>{html.escape(name)}</b>",
            f"ID {html.escape(row.patient_id or '-')}",
            html.escape(" ".join(v for v in (row.patient_age, row.patient_sex) if v)),
            f"accession {html.escape(row.accession_number or '-')}",
            html.escape(date),
            html.escape(row.modality or ""),
            html.escape(row.body_part or ""),
            html.escape(row.study_description or ""),
        ]
        return f'<p id="patient">{" | ".join(p for p in parts if p)}</p>'

    def layers_of(study_key: str, analysis: int) -> tuple[Any, dict[str, Any]]:
        document = study(study_key)
        source, labels_path, heatmap_path = source_of(document, analysis)
        record = document["analyses"][analysis] if document["analyses"] else {}
        instances = tuple(record.get("input", {}).get("sop_instance_uids") or ())
        return load_layers(source, labels_path, heatmap_path, instances), record

    @app.get("/api/studies/{study_key}/volume")
    def volume(
        study_key: str, analysis: Annotated[int, Query(ge=0, le=1000)] = 0, user: User = reader
    ) -> dict[str, Any]:
        """What the viewer draws: size, spacing, orientation, presets, layers, findings."""
        layers, record = layers_of(study_key, analysis)
        return volume_info(layers, record)

    @app.get("/api/studies/{study_key}/slice", response_class=Response)
    def slice_of(
        study_key: str,
        k: Annotated[int, Query(ge=0, le=100_000)] = 0,
        layer: Literal["image", "mask", "heatmap"] = "image",
        analysis: Annotated[int, Query(ge=0, le=1000)] = 0,
        user: User = reader,
    ) -> Any:
        """One slice of one layer as raw bytes (see ``viewer.slice_bytes``)."""
        layers, _ = layers_of(study_key, analysis)
        try:
            payload = slice_bytes(layers, k, layer)
        except (IndexError, LookupError) as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(payload, media_type="application/octet-stream")
