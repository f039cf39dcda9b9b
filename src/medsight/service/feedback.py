"""Clinicians' verdicts on findings: the table the API writes and monitoring reads."""

from __future__ import annotations

from typing import Any

__all__ = ["feedback_rows", "feedback_table"]


def feedback_table(engine: Any) -> Any:
    """The ``feedback`` table (the schema brought to head first)."""
    from medsight.service import schema

    schema.ensure_schema(engine)
    return schema.feedback


def feedback_rows(engine: Any) -> list[dict[str, Any]]:
    """Every verdict: study key, finding, verdict (agree / disagree)."""
    from sqlalchemy import select

    table = feedback_table(engine)
    with engine.connect() as connection:
        rows = connection.execute(select(table.c.study_key, table.c.finding, table.c.verdict))
        return [dict(row._mapping) for row in rows]
