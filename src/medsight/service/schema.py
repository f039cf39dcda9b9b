"""The service database: every table at the schema's head, in one place, and the upgrade
that brings any database there (Alembic migrations under ``migrations/``).

Each component used to create its own tables with ``create_all``; a column added later then
never reached a database made before it. Now every entry point (server, workers, the
``users`` command) calls :func:`ensure_schema`, which runs the migrations in order. The first
migration creates only the tables a database lacks, so databases made by ``create_all``
before migrations existed upgrade in place.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["HEAD", "ensure_schema", "metadata"]

HEAD = "0002"
metadata = MetaData()

instances = Table(
    "instances",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("study_instance_uid", String(64), nullable=False, index=True),
    Column("series_instance_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("calling_ae", String(64), nullable=False),  # or the HTTP intake and user
    Column("received_at", String(32), nullable=False),
)
routes = Table(  # a task chosen for a study at intake (photo uploads)
    "routes",
    metadata,
    Column("study_instance_uid", String(64), primary_key=True),
    Column("task", String(128), nullable=False),
)
studies = Table(
    "studies",
    metadata,
    Column("study_instance_uid", String(64), primary_key=True),
    Column("last_received", Float, nullable=False),
    Column("state", String(16), nullable=False),  # receiving | queued | done
    Column("revision", Integer, nullable=False),
)
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_instance_uid", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # queued | leased | done | dead
    Column("attempts", Integer, nullable=False),
    Column("available_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("worker", String(64)),  # worker:<host>:<pid>:<process start time>
    Column("error", Text),
    Column("failures", Integer, nullable=False, default=0),
    Column("result", Text),
    # for the latency metrics: the study's last arrival, the lease, the outcome
    Column("last_received", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    UniqueConstraint("study_instance_uid", "revision"),
)
users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("created", String(32), nullable=False),
)
tokens = Table(
    "tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_name", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # api | session
    Column("expires", String(32)),
    Column("label", String(64)),  # a personal API token's name, shown to its owner
    Column("created", String(32)),
)
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(128), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
)
feedback = Table(
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
monitoring_alerts = Table(
    "monitoring_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(256), nullable=False, unique=True),
    Column("opened", String(40), nullable=False),
    Column("detail", Text, nullable=False),
)
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # pacs | stow | webhook
    Column("target", String(256), nullable=False),
    Column("payload", Text, nullable=False),  # file list (pacs) or JSON body
    Column("state", String(16), nullable=False),  # pending | done | dead
    Column("attempts", Integer, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("last_error", Text),
    Column("delivered_at", Float),
)
# One row per analysed study, written when its result is stored: the worklist is a query,
# not a walk over result files. Identifiers sit here only for the reading roles.
worklist = Table(
    "worklist",
    metadata,
    Column("study_key", String(64), primary_key=True),
    Column("study_instance_uid", String(64)),
    Column("result_path", String(512), nullable=False),
    Column("result_mtime_ns", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # final | withdrawn
    Column("level", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list, identical reasons counted once
    Column("rules_version", String(16), nullable=False),
    Column("models", Text, nullable=False),  # JSON list of "task version"
    Column("received", Float, nullable=False),  # the result's creation, epoch seconds
    Column("patient_name", String(256)),
    Column("patient_id", String(64)),
    Column("patient_age", String(8)),
    Column("patient_sex", String(8)),
    Column("accession_number", String(64)),
    Column("study_date", String(8)),
    Column("study_time", String(16)),
    Column("modality", String(64)),
    Column("body_part", String(64)),
    Column("study_description", String(256)),
    Column("series_count", Integer),
    Column("instance_count", Integer),
    Index("ix_worklist_level_received", "level", "received"),
    Index("ix_worklist_patient_id", "patient_id"),
    Index("ix_worklist_accession_number", "accession_number"),
    Index("ix_worklist_study_date", "study_date"),
    Index("ix_worklist_modality", "modality"),
)
# Failed sign-ins, for throttling per account and per address.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(64), nullable=False, index=True),
    Column("address", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),
)

_MIGRATIONS = Path(__file__).with_name("migrations")
_upgraded: set[str] = set()
_lock = threading.Lock()


def ensure_schema(engine: Any) -> None:
    """Bring the database to ``HEAD`` (once per process and database)."""
    from alembic import command
    from alembic.config import Config

    key = engine.url.render_as_string(hide_password=False)
    with _lock:
        if key in _upgraded:
            return
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        _upgraded.add(key)
