"""The HTTP side of the service (FastAPI): the worklist, study results, clinician feedback,
the audit log, the task list with model cards, health and Prometheus metrics, and a small
server-rendered worklist page. Every page and response says research use only."""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any, Literal

from fastapi import Request  # at module level: FastAPI resolves the route annotations here
from pydantic import BaseModel

from medsight.findings import Priority, WorklistEntry, order_worklist
from medsight.service.store import InstanceStore

__all__ = ["create_app"]

DISCLAIMER = "research use only, not for diagnostic use"
_COLOURS = {
    "STAT": "#b00020",
    "URGENT": "#e65100",
    "NEEDS_REVIEW": "#6a1b9a",
    "ROUTINE": "#1565c0",
    "NO_AI_FINDING": "#455a64",
}


def _results(results_dir: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(results_dir.glob("*/result.json")):
        try:
            documents.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a result being replaced right now; the next request sees it
    return documents


def _worklist(results_dir: Path, now: _dt.datetime) -> list[WorklistEntry]:
    entries = []
    for document in _results(results_dir):
        if document.get("status") == "withdrawn":
            continue
        priority = document["priority"]
        entries.append(
            WorklistEntry(
                study_key=document["study_key"],
                priority=Priority(
                    priority["level"],
                    float(priority["score"]),
                    tuple(priority["reasons"]),
                    priority["rules_version"],
                ),
                received=_dt.datetime.fromisoformat(document["created"]),
            )
        )
    return order_worklist(entries, now=now)


class Feedback(BaseModel):
    """A clinician's verdict on one finding (stored for performance monitoring)."""

    finding: str
    verdict: Literal["agree", "disagree"]
    comment: str = ""
    user: str


def create_app(store: InstanceStore) -> Any:
    import email.parser
    import email.policy
    import io

    import pydicom
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, select

    import medsight

    results_dir = store.data_dir / "results"
    metadata = MetaData()
    feedback_table = Table(
        "feedback",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("study_key", String(64), nullable=False, index=True),
        Column("finding", String(128), nullable=False),
        Column("verdict", String(16), nullable=False),
        Column("comment", Text),
        Column("user", String(128), nullable=False),
        Column("at", String(32), nullable=False),
    )
    audit_table = Table(
        "audit",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", String(32), nullable=False),
        Column("actor", String(128), nullable=False),
        Column("action", String(64), nullable=False),
        Column("subject", String(128), nullable=False),
        Column("detail", Text),
    )
    metadata.create_all(store.engine)

    def now() -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)

    def audit(connection: Any, actor: str, action: str, subject: str, detail: Any) -> None:
        connection.execute(
            insert(audit_table).values(
                at=now().isoformat(timespec="milliseconds"),
                actor=actor,
                action=action,
                subject=subject,
                detail=json.dumps(detail),
            )
        )

    app = FastAPI(
        title="medsight",
        version=medsight.__version__,
        description=f"AI decision support worklist. {DISCLAIMER.capitalize()}.",
    )

    @app.get("/healthz")
    def health() -> dict[str, str]:
        with store.engine.connect() as connection:
            connection.execute(select(1))
        return {"status": "ok", "disclaimer": DISCLAIMER}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        states = store.queue.states()
        lines = [
            "# HELP medsight_jobs Jobs by state.",
            "# TYPE medsight_jobs gauge",
        ]
        for state in ("queued", "leased", "done", "dead"):
            lines.append(f'medsight_jobs{{state="{state}"}} {states.get(state, 0)}')
        lines += [
            "# HELP medsight_instances_stored Instances in the store.",
            "# TYPE medsight_instances_stored gauge",
            f"medsight_instances_stored {store.count()}",
        ]
        return "\n".join(lines) + "\n"

    @app.get("/api/worklist")
    def worklist(priority: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        current = now()
        entries = _worklist(results_dir, current)
        if priority:
            wanted = set(priority.split(","))
            entries = [e for e in entries if e.effective_level in wanted]
        page = entries[offset : offset + max(0, min(limit, 500))]
        return {
            "disclaimer": DISCLAIMER,
            "total": len(entries),
            "items": [
                {
                    "study_key": e.study_key,
                    "priority": e.effective_level,
                    "score": e.effective_score,
                    "reasons": e.reasons,
                    "waiting_seconds": round((current - e.received).total_seconds(), 1),
                }
                for e in page
            ],
        }

    def _study(study_key: str) -> dict[str, Any]:
        path = results_dir / study_key / "result.json"
        if not study_key.isalnum() or not path.is_file():
            raise HTTPException(404, f"no result for study {study_key}")
        return json.loads(path.read_text())

    @app.get("/api/studies/{study_key}")
    def study(study_key: str) -> dict[str, Any]:
        return _study(study_key)

    @app.post("/api/studies/{study_key}/feedback", status_code=201)
    def feedback(study_key: str, body: Feedback) -> dict[str, Any]:
        document = _study(study_key)
        names = {f["name"] for a in document["analyses"] for f in a.get("findings", [])}
        if body.finding not in names:
            raise HTTPException(422, f"study {study_key} has no finding {body.finding!r}")
        with store.engine.begin() as connection:
            connection.execute(
                insert(feedback_table).values(
                    study_key=study_key,
                    finding=body.finding,
                    verdict=body.verdict,
                    comment=body.comment,
                    user=body.user,
                    at=now().isoformat(timespec="milliseconds"),
                )
            )
            audit(connection, body.user, "feedback", study_key, body.model_dump())
        return {"stored": True}

    @app.get("/api/studies/{study_key}/feedback")
    def feedback_of(study_key: str) -> list[dict[str, Any]]:
        with store.engine.connect() as connection:
            rows = connection.execute(
                select(feedback_table).where(feedback_table.c.study_key == study_key)
            ).mappings()
            return [dict(row) for row in rows]

    @app.get("/api/audit")
    def audit_log(subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = select(audit_table).order_by(audit_table.c.id.desc()).limit(min(limit, 1000))
        if subject:
            query = query.where(audit_table.c.subject == subject)
        with store.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    @app.get("/api/tasks")
    def tasks() -> list[dict[str, Any]]:
        from medsight.tasks import discover_tasks

        catalog = discover_tasks()
        return [
            {
                "id": t.id,
                "version": t.version,
                "title": t.spec.title,
                "intended_use": t.spec.intended_use,
                "trained": t.weights_available,
                "model_card": (t.folder / "MODEL_CARD.md").read_text()
                if (t.folder / "MODEL_CARD.md").is_file()
                else "",
            }
            for t in catalog.tasks
        ]

    @app.post("/dicom-web/studies", response_class=JSONResponse)
    async def stow(request: Request) -> Any:
        """STOW-RS: each application/dicom part is stored durably before the response;
        the response lists what was stored and what failed (DICOM JSON, PS3.18)."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/related"):
            raise HTTPException(415, "STOW-RS expects multipart/related; type=application/dicom")
        body = await request.body()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        stored, failed = [], []
        for part in message.iter_parts():
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                failed.append("a part without a DICOM payload")
                continue
            try:
                dataset = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True)
                identifiers = {
                    k: str(dataset.get(k, ""))
                    for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
                }
                identifiers["SOPClassUID"] = str(
                    dataset.get("SOPClassUID", "") or dataset.file_meta.MediaStorageSOPClassUID
                )
                store.store(payload, identifiers, "STOW-RS")
                stored.append(identifiers)
            except Exception as exc:  # one bad part never loses the others
                failed.append(str(exc)[:200])
        response = {
            "00081199": {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": {"vr": "UI", "Value": [i["SOPClassUID"]]},
                        "00081155": {"vr": "UI", "Value": [i["SOPInstanceUID"]]},
                    }
                    for i in stored
                ],
            }
        }
        if failed:
            response["00081198"] = {
                "vr": "SQ",
                "Value": [{"00081197": {"vr": "US", "Value": [0xC000]}} for _ in failed],
            }
        status = 200 if not failed else (202 if stored else 409)
        return JSONResponse(response, status_code=status, media_type="application/dicom+json")

    @app.get("/", response_class=HTMLResponse)
    def worklist_page() -> str:
        current = now()
        rows = []
        for entry in _worklist(results_dir, current):
            waited = (current - entry.received).total_seconds() / 60
            reasons = "<br>".join(html.escape(r) for r in entry.reasons)
            rows.append(
                f'<tr><td><span class="level" style="background:'
                f'{_COLOURS.get(entry.effective_level, "#333")}">'
                f"{html.escape(entry.effective_level)}</span></td>"
                f'<td><a href="/studies/{html.escape(entry.study_key)}/viewer">'
                f'{html.escape(entry.study_key)}</a> (<a href="/studies/'
                f'{html.escape(entry.study_key)}/report.html">report</a>)</td>'
                f"<td>{waited:.0f} min</td>"
                f"<td>{reasons}</td></tr>"
            )
        body = "".join(rows) or '<tr><td colspan="4">No analysed studies yet.</td></tr>'
        return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="15"><title>medsight worklist</title>
<style>body{{font-family:system-ui,sans-serif;margin:0}}
.banner{{background:#b00020;color:#fff;padding:.6em 1em;font-weight:700}}
main{{padding:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}}
.level{{color:#fff;padding:.15em .5em;border-radius:3px;font-weight:700}}</style></head>
<body><div class="banner" role="alert">medsight worklist - Research use only, not for
diagnostic use. No AI finding is not a negative read.</div><main>
<h1>Worklist</h1><table><tr><th>priority</th><th>study</th><th>waiting</th><th>reasons</th></tr>
{body}</table></main></body></html>"""

    def _source(document: dict[str, Any], index: int) -> tuple[Path, Path | None]:
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
        label_map = analysis.get("segmentation", {}).get("label_map")
        mask = results_dir / document["study_key"] / label_map if label_map else None
        return series[0].path.parent, mask

    @app.get("/studies/{study_key}/viewer", response_class=HTMLResponse)
    def viewer(study_key: str, analysis: int = 0) -> str:
        from medsight.service.viewer import viewer_page

        document = _study(study_key)
        _source(document, analysis)  # 404 before rendering a page that cannot show images
        return viewer_page(study_key, document, analysis)

    @app.get("/api/studies/{study_key}/render", response_class=Response)
    def render(
        study_key: str, analysis: int = 0, slice: int = 0, window: str = "default", mask: int = 1
    ) -> Any:
        from medsight.service.viewer import load_pair, render_slice

        source, labels_path = _source(_study(study_key), analysis)
        image, labels = load_pair(source, labels_path)
        png = render_slice(image, labels, slice, window, bool(mask))
        return Response(png, media_type="image/png")

    @app.get("/studies/{study_key}/{path:path}")
    def study_file(study_key: str, path: str) -> Any:
        from fastapi.responses import FileResponse

        base = (results_dir / study_key).resolve()
        target = (base / path).resolve()
        if not study_key.isalnum() or base not in target.parents or not target.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(target)

    return app
