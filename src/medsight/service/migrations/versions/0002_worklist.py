"""The worklist as indexed rows (patient, accession, modality... for the reading roles),
failed sign-ins for throttling, and names for personal API tokens.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = sa.String
    op.create_table(
        "worklist",
        sa.Column("study_key", s(64), primary_key=True),
        sa.Column("study_instance_uid", s(64)),
        sa.Column("result_path", s(512), nullable=False),
        sa.Column("result_mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("status", s(16), nullable=False),
        sa.Column("level", s(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("rules_version", s(16), nullable=False),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
        sa.Column("patient_name", s(256)),
        sa.Column("patient_id", s(64)),
        sa.Column("patient_age", s(8)),
        sa.Column("patient_sex", s(8)),
        sa.Column("accession_number", s(64)),
        sa.Column("study_date", s(8)),
        sa.Column("study_time", s(16)),
        sa.Column("modality", s(64)),
        sa.Column("body_part", s(64)),
        sa.Column("study_description", s(256)),
        sa.Column("series_count", sa.Integer),
        sa.Column("instance_count", sa.Integer),
    )
    op.create_index("ix_worklist_level_received", "worklist", ["level", "received"])
    for column in ("patient_id", "accession_number", "study_date", "modality"):
        op.create_index(f"ix_worklist_{column}", "worklist", [column])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account", s(64), nullable=False, index=True),
        sa.Column("address", s(64), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("label", s(64)))
        batch.add_column(sa.Column("created", s(32)))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("created")
        batch.drop_column("label")
    op.drop_table("login_failures")
    op.drop_table("worklist")
