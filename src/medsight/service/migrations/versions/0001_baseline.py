"""Baseline: the tables medsight made with ``create_all`` before migrations existed.

Frozen on purpose (a migration must not follow later edits of ``schema.py``). Each table is
created only when missing, so a database from before migrations upgrades in place.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> dict[str, list]:
    s, f, i, t = sa.String, sa.Float, sa.Integer, sa.Text
    return {
        "instances": [
            sa.Column("sop_instance_uid", s(64), primary_key=True),
            sa.Column("study_instance_uid", s(64), nullable=False, index=True),
            sa.Column("series_instance_uid", s(64), nullable=False),
            sa.Column("sop_class_uid", s(64), nullable=False),
            sa.Column("path", s(1024), nullable=False),
            sa.Column("sha256", s(64), nullable=False),
            sa.Column("size", i, nullable=False),
            sa.Column("calling_ae", s(64), nullable=False),
            sa.Column("received_at", s(32), nullable=False),
        ],
        "routes": [
            sa.Column("study_instance_uid", s(64), primary_key=True),
            sa.Column("task", s(128), nullable=False),
        ],
        "studies": [
            sa.Column("study_instance_uid", s(64), primary_key=True),
            sa.Column("last_received", f, nullable=False),
            sa.Column("state", s(16), nullable=False),
            sa.Column("revision", i, nullable=False),
        ],
        "jobs": [
            sa.Column("id", i, primary_key=True, autoincrement=True),
            sa.Column("study_instance_uid", s(64), nullable=False, index=True),
            sa.Column("revision", i, nullable=False),
            sa.Column("state", s(16), nullable=False),
            sa.Column("attempts", i, nullable=False),
            sa.Column("available_at", f, nullable=False),
            sa.Column("lease_until", f),
            sa.Column("worker", s(64)),
            sa.Column("error", t),
            sa.Column("failures", i, nullable=False),
            sa.Column("result", t),
            sa.Column("last_received", f),
            sa.Column("started_at", f),
            sa.Column("finished_at", f),
            sa.UniqueConstraint("study_instance_uid", "revision"),
        ],
        "users": [
            sa.Column("name", s(64), primary_key=True),
            sa.Column("role", s(16), nullable=False),
            sa.Column("password_hash", s(256), nullable=False),
            sa.Column("created", s(32), nullable=False),
        ],
        "tokens": [
            sa.Column("token_sha256", s(64), primary_key=True),
            sa.Column("user_name", s(64), nullable=False, index=True),
            sa.Column("kind", s(16), nullable=False),
            sa.Column("expires", s(32)),
        ],
        "audit_log": [
            sa.Column("id", i, primary_key=True, autoincrement=True),
            sa.Column("at", s(32), nullable=False),
            sa.Column("actor", s(128), nullable=False),
            sa.Column("action", s(64), nullable=False),
            sa.Column("subject", s(128), nullable=False, index=True),
            sa.Column("detail", t, nullable=False),
            sa.Column("prev_hash", s(64), nullable=False, unique=True),
            sa.Column("hash", s(64), nullable=False),
        ],
        "feedback": [
            sa.Column("id", i, primary_key=True, autoincrement=True),
            sa.Column("study_key", s(64), nullable=False, index=True),
            sa.Column("finding", s(128), nullable=False),
            sa.Column("verdict", s(16), nullable=False),
            sa.Column("comment", t),
            sa.Column("user", s(128), nullable=False),
            sa.Column("at", s(32), nullable=False),
        ],
        "monitoring_alerts": [
            sa.Column("id", i, primary_key=True, autoincrement=True),
            sa.Column("key", s(256), nullable=False, unique=True),
            sa.Column("opened", s(40), nullable=False),
            sa.Column("detail", t, nullable=False),
        ],
        "deliveries": [
            sa.Column("id", i, primary_key=True, autoincrement=True),
            sa.Column("idempotency_key", s(128), nullable=False, unique=True),
            sa.Column("kind", s(16), nullable=False),
            sa.Column("target", s(256), nullable=False),
            sa.Column("payload", t, nullable=False),
            sa.Column("state", s(16), nullable=False),
            sa.Column("attempts", i, nullable=False),
            sa.Column("next_at", f, nullable=False),
            sa.Column("last_error", t),
            sa.Column("delivered_at", f),
        ],
    }


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns in _tables().items():
        if name not in existing:
            op.create_table(name, *columns)


def downgrade() -> None:
    for name in reversed(list(_tables())):
        op.drop_table(name)
