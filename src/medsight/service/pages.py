"""Server-rendered pages outside the feature folders: sign-in, result files, the model page
with each task's card, monitoring and the audit log. The worklist and the viewer live in
``worklist/`` and ``viewer/``; the frame every page shares in ``frame.py``."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medsight.service.audit import AuditLog
from medsight.service.auth import User
from medsight.service.frame import BANNER, COLOURS, page
from medsight.service.store import InstanceStore
from medsight.tasks import Task

__all__ = ["BANNER", "COLOURS", "add_pages", "page", "photo_task", "task_cards"]


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
    from fastapi.responses import FileResponse, HTMLResponse

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

    @app.get("/studies/{study_key}/{path:path}")
    def study_file(study_key: str, path: str, user: User = reader) -> Any:
        base = (results_dir / study_key).resolve()
        target = (base / path).resolve()
        if not study_key.isalnum() or base not in target.parents or not target.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(target)
