"""The reading room's database, on SQLite and on a real PostgreSQL: the Alembic migration from
the schema before migrations, the worklist as indexed rows (ordering, escalation, filters,
withdrawal), sign-in throttling, and reclaiming the leases of workers that are gone."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, insert, inspect, select, text

from medsight.findings.triage import counted_once
from medsight.service import InstanceStore, schema
from medsight.service.queue import worker_name
from medsight.service.throttle import LoginThrottle
from medsight.service.worklist import Worklist, WorklistQuery


def _engine(database_url, tmp_path):
    return create_engine(database_url or f"sqlite:///{tmp_path / 'medsight.db'}")


def test_a_database_from_before_migrations_upgrades_in_place(database_url, tmp_path):
    from alembic import command
    from alembic.config import Config

    engine = _engine(database_url, tmp_path)
    config = Config()
    config.set_main_option("script_location", str(schema._MIGRATIONS))
    with engine.begin() as connection:  # the old schema, as create_all made it
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(
            text("INSERT INTO tokens (token_sha256, user_name, kind) VALUES ('abc', 'dr', 'api')")
        )
    assert "worklist" not in inspect(engine).get_table_names()
    schema.ensure_schema(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"worklist", "login_failures", "alembic_version"} <= tables
    assert {"label", "created"} <= {c["name"] for c in inspect(engine).get_columns("tokens")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            schema.HEAD
        )
        assert connection.execute(text("SELECT user_name FROM tokens")).scalar() == "dr"
    indexes = {i["name"] for i in inspect(engine).get_indexes("worklist")}
    assert "ix_worklist_level_received" in indexes and "ix_worklist_patient_id" in indexes


def _result(folder, key, level, created, reasons=("a reason",), status="final"):
    (folder / key).mkdir(parents=True, exist_ok=True)
    document = {
        "study_key": key,
        "status": status,
        "created": created.isoformat(),
        "priority": {"level": level, "score": 50.0, "reasons": list(reasons), "rules_version": "2"},
        "analyses": [{"task": {"id": "cxr-pneumonia", "version": "0.3.0"}, "input": {}}],
    }
    path = folder / key / "result.json"
    path.write_text(json.dumps(document))
    return path


def test_worklist_rows_order_escalate_filter_and_withdraw(database_url, tmp_path):
    engine = _engine(database_url, tmp_path)
    rows = Worklist(engine)
    results = tmp_path / "results"
    now = _dt.datetime(2026, 12, 1, 12, tzinfo=_dt.UTC)
    old_routine = _result(results, "k1", "ROUTINE", now - _dt.timedelta(hours=30))
    urgent = _result(results, "k2", "URGENT", now - _dt.timedelta(minutes=5))
    review = _result(results, "k3", "NEEDS_REVIEW", now - _dt.timedelta(minutes=1))
    quiet = _result(results, "k4", "NO_AI_FINDING", now - _dt.timedelta(minutes=2))
    for path, name, accession in (
        (old_routine, "DOE^JANE", "A1"),
        (urgent, "ROE^RICHARD", "A2"),
        (review, "POE^EDGAR", "A3"),
        (quiet, "DOE^JOHN", "A4"),
    ):
        rows.index(path, results, {"patient_name": name, "accession_number": accession})
    page = rows.page(WorklistQuery(), now)
    # the routine study waited 30 h (> 24 h): it moved up to NEEDS_REVIEW, with the reason,
    # and as the longer-waiting one it comes before the new NEEDS_REVIEW study
    assert [e.study_key for e in page.entries] == ["k2", "k1", "k3", "k4"]
    assert page.entries[1].effective_level == "NEEDS_REVIEW"
    assert "escalated ROUTINE -> NEEDS_REVIEW" in page.entries[1].reasons[-1]
    assert page.total == 4 and page.identifiers[0]["patient_name"] == "ROE^RICHARD"
    assert rows.page(WorklistQuery(levels=("NEEDS_REVIEW",)), now).total == 2
    assert [e.study_key for e in rows.page(WorklistQuery(text="doe"), now).entries] == ["k1", "k4"]
    by_name = rows.page(WorklistQuery(sort="patient_name", descending=True), now)
    names = [i["patient_name"] for i in by_name.identifiers]
    assert names == ["ROE^RICHARD", "POE^EDGAR", "DOE^JOHN", "DOE^JANE"]
    assert rows.page(WorklistQuery(limit=1, offset=3), now).entries[0].study_key == "k4"

    # withdrawing rewrites result.json; re-indexing keeps the identifiers read before
    document = json.loads(urgent.read_text())
    document["status"] = "withdrawn"
    urgent.write_text(json.dumps(document))
    rows.index(urgent, results)
    assert "k2" not in [e.study_key for e in rows.page(WorklistQuery(), now).entries]
    with engine.connect() as connection:
        kept = connection.execute(
            select(schema.worklist.c.patient_name).where(schema.worklist.c.study_key == "k2")
        ).scalar()
    assert kept == "ROE^RICHARD"

    # start-up reconciliation: a result written while no server ran gets its row
    _result(results, "k5", "STAT", now)
    assert rows.reconcile(results) == 1
    assert rows.reconcile(results) == 0  # nothing changed since
    assert rows.page(WorklistQuery(), now).entries[0].study_key == "k5"


def test_identical_reasons_are_counted_not_repeated():
    reason = "AI answer withheld: " + "x" * 400
    grouped = counted_once([reason] * 54 + ["analysis failed: other"])
    assert grouped == [f"54 images: {reason}", "analysis failed: other"]


def test_sign_in_throttling_per_account_and_address_and_an_admin_clears_it(tmp_path):
    engine = _engine(None, tmp_path)
    throttle = LoginThrottle(engine, per_account=3, per_address=5, window_seconds=60)
    now = 1000.0
    for _ in range(3):
        assert throttle.refusal("dr", "10.0.0.1", now) is None
        throttle.failed("dr", "10.0.0.1", now)
    refusal = throttle.refusal("dr", "10.0.0.2", now + 1)  # the account, from any address
    assert refusal is not None and "locked" in refusal.reason and 0 < refusal.retry_after <= 60
    assert throttle.refusal("other", "10.0.0.2", now + 1) is None  # other users unaffected
    assert throttle.refusal("dr", "10.0.0.1", now + 61) is None  # the window passed
    assert throttle.clear("dr") == 3
    for name in "abcde":  # one address trying many accounts
        throttle.failed(name, "10.0.0.9", now)
    assert "from 10.0.0.9" in throttle.refusal("f", "10.0.0.9", now).reason


def test_a_restart_reclaims_the_leases_of_workers_that_are_gone(tmp_path):
    store = InstanceStore(tmp_path / "data", lease_seconds=600)
    queue = store.queue
    with store.engine.begin() as connection:
        for uid in ("1.2.3", "1.2.4", "1.2.5"):
            queue.received(uid, connection, now=0)
    queue.enqueue_quiet_studies(1, now=10)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_name = worker_name(dead.pid)  # its start time, while it runs
    dead.wait()
    leases = {
        "1.2.3": dead_name,  # a killed worker of this host
        "1.2.4": worker_name(os.getpid()),  # a live one: keeps its lease
        "1.2.5": "worker:another-host:1:1",  # another host's: its lease must expire
    }
    for _ in leases:
        job = queue.lease("any", now=time.time())
        with store.engine.begin() as connection:  # each job held by the worker named above
            connection.execute(
                schema.jobs.update()
                .where(schema.jobs.c.id == job.id)
                .values(worker=leases[job.study_instance_uid])
            )
    assert queue.states() == {"leased": 3}
    assert queue.reclaim_leases_of_gone_workers() == ["1.2.3"]
    assert queue.reclaim_leases_of_gone_workers() == []
    job = queue.lease("worker:new:1:1")
    assert job is not None and job.study_instance_uid == "1.2.3"


def test_tokens_table_keeps_labels(tmp_path):
    engine = _engine(None, tmp_path)
    schema.ensure_schema(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(schema.users).values(
                name="dr", role="clinician", password_hash="x", created="now"
            )
        )
    from medsight.service.auth import Users

    users = Users(engine)
    token = users.issue_token("dr", "api", label="ohif", days=30)
    assert users.user_for_token(token).name == "dr"
    (listed,) = users.api_tokens("dr")
    assert listed["label"] == "ohif" and listed["expires"] and token not in json.dumps(listed)
    assert users.revoke_api_token("dr", "ohif") and users.user_for_token(token) is None
    assert not users.revoke_api_token("dr", "ohif")


def test_a_zombie_worker_counts_as_gone(tmp_path):
    """A worker killed with its server is a zombie until someone reaps it; in a container
    whose init does not, it must still count as gone."""
    from medsight.service.queue import _gone

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    name = worker_name(child.pid)
    deadline = time.time() + 10
    while time.time() < deadline:  # exited but not reaped: a zombie
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    assert state == "Z"
    assert _gone(name, name.split(":")[1])
    child.wait()
    assert _gone(name, name.split(":")[1])
