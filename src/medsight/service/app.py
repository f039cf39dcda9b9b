"""The HTTP side of the service (FastAPI): the worklist, study results, clinician feedback,
the audit log, the task list with model cards, metrics, STOW-RS and photo upload, and the
server-rendered pages (`pages.py`). Every route but a liveness check needs an authenticated
user of a role allowed there; every response a person reads says research use only."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request  # module level: FastAPI resolves route annotations here
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from medsight.service.audit import AuditLog
from medsight.service.auth import User, Users
from medsight.service.store import InstanceStore
from medsight.service.throttle import LoginThrottle
from medsight.service.worklist import SORT_KEYS, Worklist, WorklistQuery

__all__ = ["DISCLAIMER", "SESSION_COOKIE", "ServiceSettings", "create_app"]

DISCLAIMER = "research use only, not for diagnostic use"
SESSION_COOKIE = "medsight_session"
READERS = ("clinician", "admin")
_BEARER = HTTPBearer(auto_error=False)
_COOKIE = APIKeyCookie(name=SESSION_COOKIE, auto_error=False)
SUBMITTERS = ("service", "admin")


class ServiceSettings(BaseModel):
    max_upload_bytes: int = 256 * 1024 * 1024
    tasks_dirs: list[Path] = Field(default_factory=list)
    secure_cookies: bool = False  # set when served over HTTPS (behind a TLS proxy)
    cors_origins: list[str] = Field(default_factory=list)  # e.g. an OHIF viewer's origin


class Feedback(BaseModel):
    """A clinician's verdict on one finding (stored for performance monitoring)."""

    finding: str = Field(max_length=128)
    verdict: Literal["agree", "disagree"]
    comment: str = Field(default="", max_length=4000)


class NewToken(BaseModel):
    """A personal API token (for a DICOMweb viewer that sends a bearer token)."""

    label: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._ -]+$")
    days: int | None = Field(default=90, ge=1, le=366)


class Withdrawal(BaseModel):
    reason: str = Field(min_length=3, max_length=1000)


class Login(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413) by their declared length, and by
    counting what arrives when no length is declared, before the app buffers them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLargeError:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLargeError(Exception):
    pass


def _is_dicom_date(value: str) -> bool:
    try:
        _dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return len(value) == 8


def create_app(store: InstanceStore, settings: ServiceSettings | None = None) -> Any:
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
    from sqlalchemy import insert, select

    import medsight
    from medsight.service import pages
    from medsight.service.feedback import feedback_table as make_feedback_table
    from medsight.service.metrics import prometheus_text

    settings = settings or ServiceSettings()
    results_dir = store.data_dir / "results"
    users = Users(store.engine)
    audit = AuditLog(store.engine)
    throttle = LoginThrottle(store.engine)
    worklist_rows = Worklist(store.engine)
    shown: dict[str, tuple[float, frozenset[str]]] = {}  # user -> last audited worklist view
    feedback_table = make_feedback_table(store.engine)

    def now() -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)

    def allow(*roles: str) -> Callable[..., User]:
        """A dependency: the authenticated user, who must hold one of ``roles``."""

        def dependency(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
            session: Annotated[str | None, Depends(_COOKIE)],
        ) -> User:
            token = credentials.credentials if credentials is not None else session
            user = users.user_for_token(token) if token else None
            if user is None:
                raise HTTPException(
                    401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
                )
            if user.role not in roles:
                raise HTTPException(403, f"the {user.role} role may not do this")
            return user

        return dependency

    reader = Depends(allow(*READERS))
    submitter = Depends(allow(*SUBMITTERS))
    admin = Depends(allow("admin"))
    metrics_reader = Depends(allow("service", "admin"))
    anyone = Depends(allow("clinician", "admin", "service"))

    app = FastAPI(
        title="medsight",
        version=medsight.__version__,
        description=f"AI decision support worklist. {DISCLAIMER.capitalize()}.",
        openapi_url=None,  # served below, to signed-in users only (docs/openapi.json is public)
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Any:
        """A browser asking for a page without a session is sent to the login page."""
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        api = request.url.path.startswith(("/api/", "/dicom-web/", "/metrics"))
        if exc.status_code == 401 and wants_page and not api:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return JSONResponse(
            {"detail": exc.detail, "disclaimer": DISCLAIMER},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.get("/healthz")
    def health() -> dict[str, str]:
        """Liveness: reveals nothing but that the process and its database answer."""
        with store.engine.connect() as connection:
            connection.execute(select(1))
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(user: User = anyone) -> Any:
        return JSONResponse(app.openapi())

    @app.post("/api/login")
    def login(body: Login, request: Request) -> Any:
        address = request.client.host if request.client else "-"
        refusal = throttle.refusal(body.username, address)
        if refusal is not None:  # checked before any password hash is computed
            audit.append(body.username, "login-throttled", "-", {"address": address})
            raise HTTPException(
                429, refusal.reason, headers={"Retry-After": str(refusal.retry_after)}
            )
        user = users.login(body.username, body.password)
        if user is None:
            throttle.failed(body.username, address)
            audit.append(body.username, "login-failed", "-", {"address": address})
            raise HTTPException(401, "unknown user or wrong password")
        throttle.succeeded(user.name)
        token = users.issue_token(user.name, "session")
        audit.append(user.name, "login", "-", {"role": user.role})
        # the session token lives only in the HttpOnly cookie: a script cannot read it
        response = JSONResponse({"user": user.name, "role": user.role})
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookies,
            max_age=12 * 3600,
        )
        return response

    @app.post("/api/logout")
    def logout(request: Request, user: User = anyone) -> Any:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            users.revoke(token)
        response = JSONResponse({"logged_out": user.name})
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.delete("/api/lockouts/{account}")
    def clear_lockout(account: str, user: User = admin) -> dict[str, Any]:
        removed = throttle.clear(account)
        audit.append(user.name, "lockout-cleared", account, {"failures_removed": removed})
        return {"account": account, "failures_removed": removed}

    @app.post("/api/tokens", status_code=201)
    def new_token(body: NewToken, user: User = reader) -> dict[str, Any]:
        if any(t["label"] == body.label for t in users.api_tokens(user.name)):
            raise HTTPException(409, f"you already have a token named {body.label!r}")
        token = users.issue_token(user.name, "api", label=body.label, days=body.days)
        audit.append(user.name, "token-created", "-", {"label": body.label, "days": body.days})
        return {"label": body.label, "token": token, "shown": "once: store it now"}

    @app.get("/api/tokens")
    def list_tokens(user: User = reader) -> list[dict[str, Any]]:
        return users.api_tokens(user.name)

    @app.delete("/api/tokens/{label}")
    def revoke_token(label: str, user: User = reader) -> dict[str, Any]:
        if not users.revoke_api_token(user.name, label):
            raise HTTPException(404, f"you have no token named {label!r}")
        audit.append(user.name, "token-revoked", "-", {"label": label})
        return {"revoked": label}

    @app.get("/api/me")
    def me(user: User = anyone) -> dict[str, str]:
        return {"user": user.name, "role": user.role}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(user: User = metrics_reader) -> str:
        return prometheus_text(store)

    def worklist_query(
        priority: str | None,
        q: str,
        modality: str,
        date_from: str,
        date_to: str,
        sort: str,
        order: str,
        limit: int,
        offset: int,
    ) -> WorklistQuery:
        from medsight.findings.triage import LEVELS

        levels = tuple(p for p in (priority or "").split(",") if p)
        unknown = [p for p in levels if p not in LEVELS]
        if unknown:
            raise HTTPException(400, f"unknown priority {unknown[0]!r}; one of {', '.join(LEVELS)}")
        for name, value in (("date_from", date_from), ("date_to", date_to)):
            if value and not _is_dicom_date(value):
                raise HTTPException(400, f"{name} {value!r} is not a date YYYYMMDD")
        if sort not in SORT_KEYS:
            raise HTTPException(400, f"cannot sort by {sort!r}; one of {', '.join(SORT_KEYS)}")
        return WorklistQuery(
            levels, q, modality, date_from, date_to, sort, order == "desc", limit, offset
        )

    def audit_identifiers(user: User, keys: list[str]) -> None:
        """Every view that shows identifiers is audited; the page's 5-second refresh of the
        same rows within 5 minutes is the same view."""
        import time

        seen = frozenset(keys)
        last = shown.get(user.name)
        if keys and (last is None or last[1] != seen or time.time() - last[0] > 300):
            audit.append(user.name, "view-identifiers", "worklist", {"study_keys": keys})
            shown[user.name] = (time.time(), seen)

    @app.get("/api/worklist")
    def worklist(
        priority: str | None = None,
        q: Annotated[str, Query(max_length=64)] = "",
        modality: Annotated[str, Query(max_length=16, pattern=r"^[A-Za-z]*$")] = "",
        date_from: str = "",
        date_to: str = "",
        sort: str = "priority",
        order: Literal["asc", "desc"] = "asc",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
        user: User = reader,
    ) -> dict[str, Any]:
        """The worklist page by page: most urgent first, then longest waiting (or sorted and
        filtered on the study's identifiers)."""
        current = now()
        query = worklist_query(
            priority, q, modality, date_from, date_to, sort, order, limit, offset
        )
        found = worklist_rows.page(query, current)
        items = [
            {
                "study_key": e.study_key,
                "priority": e.effective_level,
                "score": e.effective_score,
                "reasons": e.reasons,
                "models": list(e.models),
                "waiting_seconds": round((current - e.received).total_seconds(), 1),
                **ids,
            }
            for e, ids in zip(found.entries, found.identifiers, strict=True)
        ]
        audit_identifiers(user, [item["study_key"] for item in items])
        return {"disclaimer": DISCLAIMER, "total": found.total, "items": items}

    @app.post("/api/studies/{study_key}/withdraw")
    def withdraw(study_key: str, body: Withdrawal, user: User = admin) -> dict[str, Any]:
        from medsight.analysis.runner import write_result
        from medsight.reporting.html_report import write_html_report

        document = _study(study_key)
        document["status"] = "withdrawn"
        document["withdrawn_reason"] = body.reason
        path = results_dir / study_key / "result.json"
        write_result(document, path)
        write_html_report(document, path.parent)
        worklist_rows.index(path, results_dir)
        audit.append(user.name, "withdraw", study_key, {"reason": body.reason})
        return {"withdrawn": study_key}

    def _study(study_key: str) -> dict[str, Any]:
        path = results_dir / study_key / "result.json"
        if not study_key.isalnum() or not path.is_file():
            raise HTTPException(404, f"no result for study {study_key}")
        return json.loads(path.read_text())

    @app.get("/api/studies/{study_key}")
    def study(study_key: str, user: User = reader) -> dict[str, Any]:
        document = _study(study_key)
        audit.append(user.name, "view", study_key, {"result_id": document.get("result_id")})
        return document

    @app.post("/api/studies/{study_key}/feedback", status_code=201)
    def feedback(study_key: str, body: Feedback, user: User = reader) -> dict[str, Any]:
        document = _study(study_key)
        names = {f["name"] for a in document["analyses"] for f in a.get("findings", [])}
        if body.finding not in names:
            raise HTTPException(422, f"study {study_key} has no finding {body.finding!r}")

        def store_feedback(connection: Any) -> None:
            connection.execute(
                insert(feedback_table).values(
                    study_key=study_key,
                    finding=body.finding,
                    verdict=body.verdict,
                    comment=body.comment,
                    user=user.name,
                    at=now().isoformat(timespec="milliseconds"),
                )
            )

        detail = {**body.model_dump(), "result_id": document.get("result_id")}
        audit.append(user.name, "feedback", study_key, detail, also=store_feedback)
        return {"stored": True}

    @app.get("/api/studies/{study_key}/feedback")
    def feedback_of(study_key: str, user: User = reader) -> list[dict[str, Any]]:
        with store.engine.connect() as connection:
            rows = connection.execute(
                select(feedback_table).where(feedback_table.c.study_key == study_key)
            ).mappings()
            return [dict(row) for row in rows]

    @app.get("/api/audit")
    def audit_log(
        subject: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
        user: User = admin,
    ) -> list[dict[str, Any]]:
        return audit.query(subject=subject, actor=actor, action=action, limit=limit, offset=offset)

    @app.get("/api/monitoring")
    def monitoring(user: User = admin) -> dict[str, Any]:
        """The latest drift and performance report (device groups by keyed hash only)."""
        from medsight.service.drift_watch import latest_report

        return latest_report(store.data_dir) or {"open_alerts": [], "tasks": []}

    @app.get("/api/audit/verify")
    def audit_verify(user: User = admin) -> dict[str, Any]:
        result = audit.verify()
        return {
            "ok": result.ok,
            "rows": result.rows,
            "first_bad_id": result.first_bad_id,
            "problem": result.problem,
        }

    @app.get("/api/tasks")
    def tasks(user: User = reader) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "version": t.version,
                "title": t.spec.title,
                "intended_use": t.spec.intended_use,
                "trained": t.weights_available,
                "model_card": card,
            }
            for t, card in pages.task_cards(settings.tasks_dirs)
        ]

    @app.post("/dicom-web/studies", response_class=JSONResponse)
    async def stow(request: Request, user: User = submitter) -> Any:
        from medsight.service.intake.stow import receive_stow

        body = await request.body()
        try:
            status, response = receive_stow(
                store, request.headers.get("content-type", ""), body, f"STOW-RS:{user.name}"
            )
        except ValueError as exc:
            raise HTTPException(415, str(exc)) from exc
        return JSONResponse(response, status_code=status, media_type="application/dicom+json")

    @app.post("/api/upload", status_code=201)
    async def upload(
        request: Request,
        task: str,
        patient_id: str,
        patient_name: str = "",
        accession_number: str = "",
        study_instance_uid: str = "",
        laterality: str = "",
        user: User = submitter,
    ) -> dict[str, Any]:
        """A fundus or skin photograph (PNG, JPEG or TIFF as the raw request body) with its
        identifiers and the task to run on it."""
        from medsight.errors import MedsightError
        from medsight.service.intake.photo_upload import PhotoIdentifiers, photo_to_dicom

        chosen = pages.photo_task(task, settings.tasks_dirs)
        if chosen is None:
            raise HTTPException(422, f"{task!r} is not an installed task for photographs")
        body = await request.body()
        try:
            encoded, identifiers = photo_to_dicom(
                body,
                PhotoIdentifiers(
                    patient_id, patient_name, accession_number, study_instance_uid, laterality
                ),
                modality=chosen.spec.acceptance.modalities[0],
                task_id=chosen.id,
            )
            store.route(identifiers["StudyInstanceUID"], chosen.id)
            new = store.store(encoded, identifiers, f"upload:{user.name}")
        except MedsightError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {
            "stored": new,
            "task": chosen.id,
            "study_instance_uid": identifiers["StudyInstanceUID"],
            "sop_instance_uid": identifiers["SOPInstanceUID"],
        }

    from fastapi.staticfiles import StaticFiles

    from medsight.service.dicomweb import add_dicomweb
    from medsight.service.viewer.page import add_viewer
    from medsight.service.worklist.page import add_worklist_page

    here = Path(__file__).parent
    for feature in ("worklist", "viewer"):  # each feature folder serves its own scripts
        app.mount(
            f"/static/{feature}", StaticFiles(directory=here / feature / "static"), name=feature
        )
    add_dicomweb(app, store, reader=reader, audit=audit)
    add_worklist_page(app, reader=reader)
    add_viewer(app, store, reader=reader, study=_study, audit=audit)
    pages.add_pages(app, store, settings, reader=reader, admin=admin, study=_study, audit=audit)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    if settings.cors_origins:  # a DICOMweb viewer on another origin, with a bearer token
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            allow_credentials=False,  # bearer tokens only: the session cookie stays same-site
        )
    return app
