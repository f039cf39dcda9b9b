"""Clinicians' verdicts on findings: the table the API writes and monitoring reads."""

from __future__ import annotations

from typing import Any

__all__ = ["feedback_rows", "feedback_table"]


def feedback_table(engine: Any) -> Any:
    """The ``feedback`` table (created if missing)."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, Text

    metadata = MetaData()
    table = Table(
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
    metadata.create_all(engine)
    return table


def feedback_rows(engine: Any) -> list[dict[str, Any]]:
    """Every verdict: study key, finding, verdict (agree / disagree)."""
    from sqlalchemy import select

    table = feedback_table(engine)
    with engine.connect() as connection:
        rows = connection.execute(select(table.c.study_key, table.c.finding, table.c.verdict))
        return [dict(row._mapping) for row in rows]
