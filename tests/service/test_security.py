"""Security of `medsight serve`, started for real: every route refuses a caller without
credentials, roles are enforced, oversized bodies and malformed DICOM are refused without
harming the process, a property-based run (schemathesis) over the OpenAPI spec finds no
server error, default secrets are refused outside development mode, and an edited audit
log is detected."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from medsight.cli import app as cli
from medsight.service import InstanceStore
from medsight.service.audit import AuditLog
from medsight.service.auth import Users
from tests._net import free_port
from tests.service._client import Api, account
from tests.service.test_dicom_intake import assert_echo
from tests.service.test_serve_recovery import send, start, wait_for

OPEN = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/api/login")}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One service with one analysed CXR study and a token per role."""
    tmp = tmp_path_factory.mktemp("security")
    data, port, http_port = tmp / "data", free_port(), free_port()
    log = tmp / "serve.log"
    process = start(
        data,
        port,
        log,
        extra=["--http-port", str(http_port), "--max-upload-mb", "1", "--max-associations", "2"],
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_for(Api(base).up, 60, "the API", process, log)
        tokens = {role: account(data, f"{role}-user", role) for role in Users.roles()}
        send(port)
        store = InstanceStore(data)
        wait_for(lambda: store.queue.states().get("done", 0) == 1, 180, "analysis", process, log)
        key = Api(base, tokens["clinician"]).json("/api/worklist")["items"][0]["study_key"]
        yield {
            "base": base,
            "tokens": tokens,
            "key": key,
            "port": port,
            "process": process,
            "data": data,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def routes(base: str, token: str, key: str) -> list[tuple[str, str]]:
    spec = Api(base, token).json("/openapi.json")
    found = [("GET", "/openapi.json")]
    for path, operations in spec["paths"].items():
        concrete = path.replace("{study_key}", key).replace("{path}", "report.html")
        concrete = re.sub(r"\{[a-z_]+\}", "0", concrete)  # numbers: slide, level, tile
        found += [(method.upper(), concrete) for method in operations]
    return found


@pytest.mark.timeout(120)
def test_every_route_refuses_a_caller_without_credentials(service):
    anonymous = Api(service["base"])
    checked = 0
    for method, path in routes(service["base"], service["tokens"]["admin"], service["key"]):
        if (method, path) in OPEN:
            continue
        for api in (anonymous, Api(service["base"], "not-a-token")):
            status, body, _ = api.call(method, path, b"{}", {"Content-Type": "application/json"})
            assert status == 401, (method, path, status, body[:200])
        checked += 1
    assert checked >= 15
    # a browser without a session is sent to the login page, not shown the worklist
    status, _, headers = anonymous.call("GET", "/", headers={"Accept": "text/html"})
    assert status == 303 and headers["location"].startswith("/login")
    assert json.loads(anonymous.call("GET", "/healthz")[1]) == {"status": "ok"}


@pytest.mark.timeout(120)
def test_roles_are_enforced(service):
    base, tokens, key = service["base"], service["tokens"], service["key"]
    clinician, admin, robot = (Api(base, tokens[r]) for r in ("clinician", "admin", "service"))
    admin_only = ["/api/audit", "/api/audit/verify", "/audit", "/metrics", "/monitoring"]
    for path in [*admin_only, "/api/monitoring"]:
        assert clinician.call("GET", path)[0] == 403, path
        assert admin.call("GET", path)[0] == 200, path
    for path in (
        "/api/worklist",
        f"/api/studies/{key}",
        f"/studies/{key}/viewer",
        f"/studies/{key}/report.html",
        f"/api/studies/{key}/volume",
        f"/api/studies/{key}/slice",
        "/dicom-web/studies",
        "/",
    ):
        assert robot.call("GET", path)[0] == 403, path  # an integration account reads nothing
        assert clinician.call("GET", path)[0] == 200, path
    feedback = {"finding": "pneumonia", "verdict": "agree"}
    assert robot.call("POST", f"/api/studies/{key}/feedback", feedback)[0] == 403
    assert robot.call("GET", "/metrics")[0] == 200
    assert clinician.call("POST", "/dicom-web/studies", b"")[0] == 403


@pytest.mark.timeout(120)
def test_oversized_bodies_are_refused_and_the_service_lives_on(service):
    base = service["base"]
    query = "/api/upload?task=derm-melanoma&patient_id=P1"
    host, port = base.removeprefix("http://").split(":")
    authorization = f"Bearer {service['tokens']['service']}"
    # a declared length over the limit: refused from the headers, before any body is read
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", query)
    connection.putheader("Authorization", authorization)
    connection.putheader("Content-Length", str(2 * 1024 * 1024))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
    # no declared length (chunked): counted as it arrives
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(
        "POST",
        query,
        body=iter([b"\0" * 65536] * 17),  # just over 1 MiB: all sent before the refusal
        headers={"Authorization": authorization},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 413
    connection.close()
    assert Api(base).up() and service["process"].poll() is None


@pytest.mark.timeout(120)
def test_malformed_dicom_and_too_many_associations_do_not_harm_the_listener(service):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    port = service["port"]
    for garbage in (
        b"\x00" * 10,
        b"\x01\x00\xff\xff\xff\xff" + b"junk" * 100,
        b"GET / HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(garbage)
            raw.settimeout(10)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                raw.recv(1024)  # an A-ABORT, or the connection closed
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    held = []
    deadline = time.time() + 60  # the listener drops the broken connections on its own clock
    while len(held) < 2 and time.time() < deadline:
        association = ae.associate("127.0.0.1", port, ae_title="MEDSIGHT")
        if association.is_established:
            held.append(association)
        else:
            time.sleep(1)
    assert len(held) == 2
    extra = ae.associate("127.0.0.1", port, ae_title="MEDSIGHT")
    assert not extra.is_established  # over --max-associations: rejected, not queued
    for association in held:
        association.release()
    assert_echo(port)
    assert service["process"].poll() is None


@pytest.mark.timeout(300)
def test_property_based_requests_find_no_server_error(service):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    base, token = service["base"], service["tokens"]["admin"]
    schema = schemathesis.openapi.from_dict(Api(base, token).json("/openapi.json"))
    errors: list[str] = []
    operations = 0
    headers = {"Authorization": f"Bearer {token}"}

    def probe_for(operation):  # one hypothesis test per operation
        @settings(
            max_examples=int(os.environ.get("MEDSIGHT_FUZZ_EXAMPLES", "25")),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def probe(case) -> None:
            response = case.call(base_url=base, headers=headers)
            if response.status_code >= 500:
                errors.append(
                    f"{operation.method.upper()} {operation.path}: {response.status_code}"
                )

        return probe

    for result in schema.get_all_operations():
        probe_for(result.ok())()
        operations += 1
    assert operations >= 15
    assert not errors, sorted(set(errors))
    assert Api(base).up()


def test_default_and_missing_secrets_are_refused_outside_development_mode(tmp_path, monkeypatch):
    runner = CliRunner()
    data = str(tmp_path / "data")
    serve = ["serve", "--data-dir", data, "--dicom-port", str(free_port())]
    no_users = runner.invoke(cli, serve)
    assert no_users.exit_code == 3 and "no users yet" in no_users.output

    monkeypatch.setenv("WEAK", "changeme")
    weak = runner.invoke(
        cli,
        ["users", "add", "boss", "--role", "admin", "--password-env", "WEAK", "--data-dir", data],
    )
    assert weak.exit_code == 2 and "well-known default" in weak.output
    monkeypatch.setenv("SHORT", "abc123")
    short = runner.invoke(
        cli, ["users", "add", "boss", "--password-env", "SHORT", "--data-dir", data]
    )
    assert short.exit_code == 2 and "at least 12" in short.output

    Users(InstanceStore(tmp_path / "data").engine).add("admin", "admin", "medsight", dev=True)
    default_admin = runner.invoke(cli, serve)
    assert default_admin.exit_code == 3 and "default password" in default_admin.output

    monkeypatch.setenv("GOOD", "correct-horse-battery")
    added = runner.invoke(
        cli,
        ["users", "add", "admin", "--role", "admin", "--password-env", "GOOD", "--data-dir", data],
    )
    assert added.exit_code == 0, added.output
    monkeypatch.setenv("MEDSIGHT_WEBHOOK_SECRET", "secret")
    webhook = runner.invoke(cli, [*serve, "--webhook-url", "http://127.0.0.1:9/hook"])
    assert webhook.exit_code == 3 and "webhook signing secret" in webhook.output
    token = runner.invoke(cli, ["users", "token", "admin", "--data-dir", data])
    assert token.exit_code == 0 and re.fullmatch(r"[\w-]{40,}\n", token.output)


def test_an_edited_or_removed_audit_entry_breaks_the_chain(tmp_path):
    from sqlalchemy import delete, update

    store = InstanceStore(tmp_path / "data")
    audit = AuditLog(store.engine)
    for n in range(4):
        audit.append("dr-a", "feedback", f"study{n}", {"verdict": "agree"})
    assert audit.verify().ok and audit.verify().rows == 4
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["audit", "verify", "--data-dir", str(tmp_path / "data")]).exit_code == 0
    )
    with store.engine.begin() as connection:
        connection.execute(
            update(audit.table)
            .where(audit.table.c.id == 2)
            .values(detail='{"verdict": "disagree"}')
        )
    broken = audit.verify()
    assert not broken.ok and broken.first_bad_id == 2 and broken.problem == "content changed"
    result = runner.invoke(cli, ["audit", "verify", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1 and "BROKEN at entry 2" in result.output

    other = InstanceStore(tmp_path / "other")
    chain = AuditLog(other.engine)
    for n in range(3):
        chain.append("dr-a", "view", f"study{n}", {})
    with other.engine.begin() as connection:
        connection.execute(delete(chain.table).where(chain.table.c.id == 2))
    removed = chain.verify()
    assert not removed.ok and removed.first_bad_id == 3 and removed.problem == "broken link"


def test_concurrent_writers_keep_one_chain(tmp_path):
    """Processes appending at once: every entry lands, the chain stays linear."""
    store = InstanceStore(tmp_path / "data")
    AuditLog(store.engine)
    script = (
        "import sys; from medsight.service import InstanceStore; "
        "from medsight.service.audit import AuditLog; "
        "log = AuditLog(InstanceStore(sys.argv[1]).engine); "
        "[log.append(sys.argv[2], 'view', f's{i}', {}) for i in range(30)]"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data"), f"w{n}"])
        for n in range(3)
    ]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    verified = AuditLog(store.engine).verify()
    assert verified.ok and verified.rows == 90


def test_accounts_tokens_and_the_audit_chain_on_either_database(tmp_path, database_url):
    from sqlalchemy import update

    store = InstanceStore(tmp_path / "data", database_url)
    users = Users(store.engine)
    users.add("dr-pg", "clinician", "a-long-enough-password")
    assert users.login("dr-pg", "a-long-enough-password").role == "clinician"
    assert users.login("dr-pg", "wrong-password-123") is None
    token = users.issue_token("dr-pg")
    assert users.user_for_token(token).name == "dr-pg"
    users.revoke(token)
    assert users.user_for_token(token) is None
    audit = AuditLog(store.engine)
    for n in range(3):
        audit.append("dr-pg", "view", f"study{n}", {"n": n})
    assert audit.verify().ok and audit.verify().rows == 3
    with store.engine.begin() as connection:
        connection.execute(update(audit.table).where(audit.table.c.id == 1).values(actor="x"))
    assert audit.verify().first_bad_id == 1


@pytest.mark.timeout(120)
def test_sign_in_is_throttled_the_session_token_stays_in_the_cookie_and_admins_clear_lockouts(
    service,
):
    from tests.service._client import PASSWORD

    base = service["base"]
    anonymous = Api(base)
    account_name = "throttled-user"
    Users(InstanceStore(service["data"]).engine).add(account_name, "clinician", PASSWORD)
    admin = Api(base, service["tokens"]["admin"])
    admin.call("DELETE", "/api/lockouts/127.0.0.1")  # the property-based test's failures
    wrong = {"username": account_name, "password": "not-the-password"}
    statuses = [anonymous.call("POST", "/api/login", wrong)[0] for _ in range(12)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}  # a flood, throttled
    status, body, headers = anonymous.call(
        "POST", "/api/login", {"username": account_name, "password": PASSWORD}
    )
    assert status == 429 and int(headers["retry-after"]) > 0 and b"locked" in body
    # everyone else is still served while the account is locked
    other = anonymous.call(
        "POST", "/api/login", {"username": "clinician-user", "password": PASSWORD}
    )
    assert other[0] == 200
    assert (
        Api(base, service["tokens"]["clinician"]).call("DELETE", f"/api/lockouts/{account_name}")[0]
        == 403
    )
    cleared = admin.call("DELETE", f"/api/lockouts/{account_name}")
    assert cleared[0] == 200 and json.loads(cleared[1])["failures_removed"] == 5
    status, body, headers = anonymous.call(
        "POST", "/api/login", {"username": account_name, "password": PASSWORD}
    )
    assert status == 200 and set(json.loads(body)) == {"user", "role"}  # no token in the body
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert token.encode() not in body
    actions = {row["action"] for row in admin.json(f"/api/audit?actor={account_name}")}
    assert {"login-failed", "login-throttled", "login"} <= actions
    assert admin.json(f"/api/audit?subject={account_name}")[0]["action"] == "lockout-cleared"


@pytest.mark.timeout(120)
def test_personal_api_tokens_for_viewers(service):
    clinician = Api(service["base"], service["tokens"]["clinician"])
    created = clinician.call("POST", "/api/tokens", {"label": "weasis", "days": 30})
    assert created[0] == 201
    token = json.loads(created[1])["token"]
    assert Api(service["base"], token).json("/api/me")["user"] == "clinician-user"
    assert clinician.call("POST", "/api/tokens", {"label": "weasis"})[0] == 409
    assert clinician.call("POST", "/api/tokens", {"label": "x", "days": 9999})[0] == 422
    assert clinician.call("POST", "/api/tokens", {"label": "<script>"})[0] == 422
    listed = clinician.call("GET", "/api/tokens")[1]
    assert b"weasis" in listed and token.encode() not in listed
    service_role = Api(service["base"], service["tokens"]["service"])
    assert service_role.call("POST", "/api/tokens", {"label": "mine"})[0] == 403
    assert clinician.call("DELETE", "/api/tokens/weasis")[0] == 200
    assert Api(service["base"], token).call("GET", "/api/me")[0] == 401
    assert clinician.call("DELETE", "/api/tokens/weasis")[0] == 404


@pytest.mark.timeout(120)
def test_bad_ports_are_refused_before_anything_is_bound(tmp_path):
    command = [sys.executable, "-m", "medsight", "serve", "--dev", "--data-dir", str(tmp_path)]
    dicom = free_port()
    out_of_range = subprocess.run(
        [*command, "--http-port", "99999", "--dicom-port", str(dicom)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out_of_range.returncode == 2, out_of_range.stderr
    assert (
        "Invalid value for '--http-port'" in out_of_range.stderr and "65535" in out_of_range.stderr
    )
    assert "Traceback" not in out_of_range.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        in_use = subprocess.run(
            [*command, "--http-port", str(busy), "--dicom-port", str(dicom)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert in_use.returncode == 3, in_use.stderr
    assert f"cannot listen on HTTP 127.0.0.1:{busy}" in in_use.stderr
    assert "Traceback" not in in_use.stderr
    with socket.socket() as again:  # the DICOM port was never left bound
        again.bind(("127.0.0.1", dicom))
