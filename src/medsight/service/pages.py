"""Server-rendered pages: login, the worklist (refreshed live from the API), the study
viewer and its rendered slices, result files, the model page with each task's card, and the
audit log. A research-use banner on every page; a little JavaScript, no front-end build."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Query  # module level: FastAPI resolves route annotations here

from medsight.service.audit import AuditLog
from medsight.service.auth import User
from medsight.service.store import InstanceStore
from medsight.tasks import Task

__all__ = ["BANNER", "COLOURS", "add_pages", "page", "photo_task", "task_cards"]

BANNER = (
    "Research use only, not for diagnostic use. No AI finding is not a negative read: "
    "every study still needs a full read by a clinician."
)
COLOURS = {
    "STAT": "#b00020",
    "URGENT": "#e65100",
    "NEEDS_REVIEW": "#6a1b9a",
    "ROUTINE": "#1565c0",
    "NO_AI_FINDING": "#455a64",
}
_STYLE = """body{font-family:system-ui,sans-serif;margin:0}
.banner{background:#b00020;color:#fff;padding:.6em 1em;font-weight:700}
nav{padding:.4em 1em;background:#eee} nav a{margin-right:1em}
main{padding:1em} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}
.level{color:#fff;padding:.15em .5em;border-radius:3px;font-weight:700}
.card{border:1px solid #ccc;padding:0 1em;margin:1em 0;max-width:60em}
.filters{margin:.5em 0}
.viewer{display:flex;gap:1.5em;flex-wrap:wrap} .tools button.active{background:#1565c0;color:#fff}
#canvas{background:#000;border:1px solid #999;cursor:grab;max-width:100%} .muted{color:#555}
#legend{display:flex;gap:1em;align-items:center;margin:.3em 0} tr.selected{background:#fff3c4}
.filters input,.filters select{margin-right:.5em}"""


def page(
    title: str,
    body: str,
    *,
    user: User | None = None,
    script: str = "",
    scripts: tuple[str, ...] | list[str] = (),
) -> str:
    nav = ""
    if user is not None:
        admin = (
            ' <a href="/audit">audit log</a> <a href="/monitoring">monitoring</a>'
            if user.role == "admin"
            else ""
        )
        nav = (
            f'<nav><a href="/">worklist</a> <a href="/models">models</a>{admin}'
            f" <span>signed in as {html.escape(user.name)} ({user.role})</span>"
            ' <a href="#" id="logout">log out</a></nav>'
        )
        script += (
            'document.getElementById("logout").addEventListener("click", async (e) => {'
            'e.preventDefault(); await fetch("/api/logout", {method: "POST"});'
            'location.href = "/login";});'
        )
    external = "".join(f'<script src="{html.escape(src)}"></script>' for src in scripts)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} - medsight</title><style>{_STYLE}</style></head><body>
<div class="banner" role="alert">medsight - {BANNER}</div>{nav}<main>{body}</main>
<script>{script}</script>{external}</body></html>"""


def task_cards(tasks_dirs: list[Path]) -> list[tuple[Task, str]]:
    from medsight.tasks import discover_tasks

    return [
        (
            task,
            (task.folder / "MODEL_CARD.md").read_text()
            if (task.folder / "MODEL_CARD.md").is_file()
            else "",
        )
        for task in discover_tasks(tasks_dirs).tasks
    ]


def photo_task(name: str, tasks_dirs: list[Path]) -> Task | None:
    """The installed, trained task ``name`` when it runs on 2D colour photographs."""
    from medsight.tasks import discover_tasks

    for task in discover_tasks(tasks_dirs).tasks:  # no model cards read: this is per upload
        accepts = task.spec.acceptance
        if (
            task.id == name
            and task.weights_available
            and accepts.spatial_dims == 2
            and "RGB" in accepts.photometric
            and accepts.modalities
        ):
            return task
    return None


_WORKLIST_COLUMNS = (  # (sort key or "", heading)
    ("priority", "priority"),
    ("patient_name", "patient"),
    ("patient_id", "patient ID"),
    ("", "age / sex"),
    ("accession_number", "accession"),
    ("study_date", "study date"),
    ("modality", "modality"),
    ("body_part", "body part"),
    ("study_description", "description"),
    ("", "series / images"),
    ("waiting", "waiting"),
    ("", "reasons"),
    ("", "model"),
)


def _worklist_body() -> str:
    headings = "".join(
        f'<th><a href="#" data-sort="{key}">{name}</a></th>' if key else f"<th>{name}</th>"
        for key, name in _WORKLIST_COLUMNS
    )
    levels = "".join(f'<option value="{level}">{level}</option>' for level in COLOURS)
    return f"""<h1>Worklist</h1><p>Most urgent first, then longest waiting; click a heading to
sort. <span id="updated"></span></p>
<form id="filters" class="filters">
<input name="q" placeholder="patient, ID, accession, description" maxlength="64" size="32">
<input name="modality" placeholder="modality" maxlength="16" size="8">
<select name="priority"><option value="">any priority</option>{levels}</select>
<label>from <input name="date_from" placeholder="YYYYMMDD" size="9"></label>
<label>to <input name="date_to" placeholder="YYYYMMDD" size="9"></label>
<button>filter</button> <span id="error" role="alert"></span></form>
<table id="worklist" data-colours='{json.dumps(COLOURS)}'><thead><tr>{headings}</tr></thead>
<tbody id="rows"><tr><td colspan="{len(_WORKLIST_COLUMNS)}">loading...</td></tr></tbody>
</table><p id="total"></p>"""


def add_pages(
    app: Any,
    store: InstanceStore,
    settings: Any,
    *,
    reader: Any,
    admin: Any,
    study: Callable[[str], dict[str, Any]],
    audit: AuditLog,
) -> None:
    from fastapi import HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, Response

    results_dir = store.data_dir / "results"

    @app.get("/login", response_class=HTMLResponse)
    def login_page(next: str = "/") -> str:
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        body = """<h1>Sign in</h1><form id="login">
<p><label>user <input id="username" autocomplete="username" required></label></p>
<p><label>password <input id="password" type="password" autocomplete="current-password"
required></label></p><p><button type="submit">sign in</button></p><p id="error"></p></form>"""
        script = f"""
document.getElementById("login").addEventListener("submit", async (e) => {{
  e.preventDefault();
  const response = await fetch("/api/login", {{method: "POST",
    headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{username: document.getElementById("username").value,
                           password: document.getElementById("password").value}})}});
  if (response.ok) location.href = {json.dumps(target)};
  else document.getElementById("error").textContent = "unknown user or wrong password";
}});"""
        return page("sign in", body, script=script)

    @app.get("/", response_class=HTMLResponse)
    def worklist_page(user: User = reader) -> str:
        return page("worklist", _worklist_body(), user=user, scripts=["/static/worklist.js"])

    @app.get("/models", response_class=HTMLResponse)
    def models_page(user: User = reader) -> str:
        from markdown_it import MarkdownIt

        markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
        cards = []
        for task, card in task_cards(settings.tasks_dirs):
            state = "trained" if task.weights_available else "weights not installed"
            cards.append(
                f'<section class="card" id="{html.escape(task.id)}"><h2>'
                f"{html.escape(task.id)} {html.escape(task.version)} ({state})</h2>"
                f"<p>{html.escape(task.spec.intended_use)}</p>"
                f"{markdown.render(card) if card else '<p>No model card.</p>'}</section>"
            )
        return page("models", "<h1>Models</h1>" + "".join(cards), user=user)

    @app.get("/monitoring", response_class=HTMLResponse)
    def monitoring_page(user: User = admin) -> str:
        from medsight.monitoring import monitor_body
        from medsight.service.drift_watch import latest_report

        report = latest_report(store.data_dir)
        body = (
            monitor_body(report)
            if report is not None
            else "<h1>Drift and performance monitoring</h1><p>No report yet: the monitor "
            "runs every --monitor-seconds once results exist.</p>"
        )
        return page("monitoring", body, user=user)

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(subject: str | None = None, user: User = admin) -> str:
        verified = audit.verify()
        rows = "".join(
            f"<tr><td>{r['id']}</td><td>{html.escape(r['at'])}</td>"
            f"<td>{html.escape(r['actor'])}</td><td>{html.escape(r['action'])}</td>"
            f"<td>{html.escape(r['subject'])}</td>"
            f"<td><code>{html.escape(json.dumps(r['detail'])[:300])}</code></td></tr>"
            for r in audit.query(subject=subject, limit=200)
        )
        chain = (
            f"hash chain verified over {verified.rows} entries"
            if verified.ok
            else f"HASH CHAIN BROKEN at entry {verified.first_bad_id}: {verified.problem}"
        )
        return page(
            "audit log",
            f'<h1>Audit log</h1><p id="chain">{chain}</p><table><tr><th>#</th><th>when</th>'
            f"<th>who</th><th>what</th><th>study</th><th>detail</th></tr>{rows}</table>",
            user=user,
        )

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
        from medsight.service.viewer import viewer_body

        document = study(study_key)
        try:
            source_of(document, analysis)
            viewable = True
        except HTTPException:
            if document["analyses"]:
                raise  # 404 before a page that cannot show images
            viewable = False  # nothing analysed and nothing to show: the reasons only
        audit.append(user.name, "view", study_key, {"result_id": document.get("result_id")})
        body = viewer_body(study_key, document, analysis, viewable=viewable)
        scripts = ["/static/viewer.js"] if viewable else []
        return page(f"viewer {study_key}", body, user=user, scripts=scripts)

    def layers_of(study_key: str, analysis: int) -> tuple[Any, dict[str, Any]]:
        from medsight.service.viewer import load_layers

        document = study(study_key)
        source, labels_path, heatmap_path = source_of(document, analysis)
        record = document["analyses"][analysis] if document["analyses"] else {}
        return load_layers(source, labels_path, heatmap_path), record

    @app.get("/api/studies/{study_key}/volume")
    def volume(
        study_key: str, analysis: Annotated[int, Query(ge=0, le=1000)] = 0, user: User = reader
    ) -> dict[str, Any]:
        """What the viewer draws: size, spacing, orientation, presets, layers, findings."""
        from medsight.service.viewer import volume_info

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
        from medsight.service.viewer import slice_bytes

        layers, _ = layers_of(study_key, analysis)
        try:
            payload = slice_bytes(layers, k, layer)
        except (IndexError, LookupError) as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(payload, media_type="application/octet-stream")

    @app.get("/studies/{study_key}/{path:path}")
    def study_file(study_key: str, path: str, user: User = reader) -> Any:
        base = (results_dir / study_key).resolve()
        target = (base / path).resolve()
        if not study_key.isalnum() or base not in target.parents or not target.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(target)
