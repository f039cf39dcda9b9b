"""The worklist as indexed database rows, one per analysed study, written when its result is
stored. A request is one query (ordering, filtering and paging in the database), never a walk
over result files: at 50,000 studies the page still answers in milliseconds.

Rows carry the study's identifiers (patient name and ID, age, sex, accession number, study
date and time, modality, body part, description, series and instance counts) read from the
stored DICOM headers. Only the reading roles see them (``with_identifiers``); the caller
audits every view that shows them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.findings import Priority, WorklistEntry
from medsight.findings.triage import ESCALATE_AFTER, LEVELS, escalate
from medsight.service import schema

__all__ = [
    "IDENTIFIER_COLUMNS",
    "SORT_KEYS",
    "Worklist",
    "WorklistPage",
    "WorklistQuery",
    "identifiers_from_store",
    "study_identifiers",
]

logger = logging.getLogger(__name__)

IDENTIFIER_COLUMNS = (
    "patient_name",
    "patient_id",
    "patient_age",
    "patient_sex",
    "accession_number",
    "study_date",
    "study_time",
    "modality",
    "body_part",
    "study_description",
    "series_count",
    "instance_count",
)
# what a reader may sort on: priority (the default: most urgent, then longest waiting) or
# one of the identifier columns
SORT_KEYS = ("priority", "waiting", *IDENTIFIER_COLUMNS[:-2])
_TEXT_SEARCH = ("patient_name", "patient_id", "accession_number", "study_description")
_DICOM_KEYWORDS = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "patient_sex": "PatientSex",
    "accession_number": "AccessionNumber",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "body_part": "BodyPartExamined",
    "study_description": "StudyDescription",
}


_LENGTHS = {
    column: getattr(schema.worklist.c[column].type, "length", 64) for column in _DICOM_KEYWORDS
}


def _age(header: Any) -> str | None:
    """PatientAge as written, else whole years from PatientBirthDate to StudyDate."""
    stated = str(header.get("PatientAge") or "").strip()
    if stated:
        return stated[:8]
    try:
        born = _dt.datetime.strptime(str(header.get("PatientBirthDate") or ""), "%Y%m%d").date()
        seen = _dt.datetime.strptime(str(header.get("StudyDate") or ""), "%Y%m%d").date()
    except ValueError:
        return None
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return f"{years:03d}Y" if years >= 0 else None


def study_identifiers(instance_paths: Sequence[Path], series_uids: Sequence[str]) -> dict[str, Any]:
    """The study's identifiers from its first readable header, with the modalities of all
    series it was given (one header per series is read) and the series and instance counts."""
    from medsight.io.dicom._header import read_header

    found: dict[str, Any] = {
        "series_count": len(set(series_uids)),
        "instance_count": len(instance_paths),
    }
    modalities: list[str] = []
    first_of_series: dict[str, Path] = {}
    for path, series in zip(instance_paths, series_uids, strict=True):
        first_of_series.setdefault(series, path)
    for path in first_of_series.values():
        try:
            header = read_header(path)
        except Exception as exc:
            logger.debug("no identifiers from %s: %s", path.name, exc)
            continue
        modality = str(header.get("Modality") or "").strip()
        if modality and modality not in modalities:
            modalities.append(modality)
        if "patient_id" in found:
            continue
        for column, keyword in _DICOM_KEYWORDS.items():
            value = str(header.get(keyword) or "").strip()
            found[column] = value[: _LENGTHS[column]] or None
        found["patient_age"] = _age(header)
    found["modality"] = "\\".join(modalities)[:64] or None
    return found


def identifiers_from_store(store: Any) -> Callable[[Path], tuple[str | None, dict[str, Any]]]:
    """For indexing a result already written: its study UID (from result.json) and the
    identifiers of that study's stored instances."""

    def identifiers(result_path: Path) -> tuple[str | None, dict[str, Any]]:
        document = json.loads(result_path.read_text())
        uids = [a["input"].get("study_instance_uid") for a in document.get("analyses", [])]
        uid = next((u for u in uids if u), None)
        instances = store.instances_of(uid) if uid else []
        if not instances:
            return uid, {}
        paths = [i.path for i in instances]
        return uid, study_identifiers(paths, [i.series_instance_uid for i in instances])

    return identifiers


@dataclass(frozen=True)
class WorklistQuery:
    """What a reader asked for; every value checked by the API before it gets here."""

    levels: tuple[str, ...] = ()  # effective levels, after escalation
    text: str = ""  # in patient name or ID, accession number or description
    modality: str = ""
    date_from: str = ""  # YYYYMMDD, inclusive
    date_to: str = ""
    sort: str = "priority"
    descending: bool = False
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class WorklistPage:
    total: int
    entries: list[WorklistEntry]
    identifiers: list[dict[str, Any]]  # per entry, the identifier columns and study UID


class Worklist:
    def __init__(self, engine: Any) -> None:
        schema.ensure_schema(engine)
        self.engine = engine
        self.table = schema.worklist

    # --- writing -----------------------------------------------------------------------------
    def index(
        self,
        result_path: Path,
        results_dir: Path,
        identifiers: dict[str, Any] | None = None,
        study_instance_uid: str | None = None,
    ) -> None:
        """Write (or replace) the row of the result at ``result_path``. Without a study UID,
        the identifiers an earlier indexing read from the headers are kept."""
        row = _row(result_path, results_dir, identifiers, study_instance_uid)
        with self.engine.begin() as connection:
            self._write(connection, [row])

    def _write(self, connection: Any, rows: list[dict[str, Any]]) -> None:
        from sqlalchemy import delete, insert, select

        table = self.table
        keys = [row["study_key"] for row in rows]
        bare = [row["study_key"] for row in rows if row["study_instance_uid"] is None]
        kept = {
            found.study_key: found
            for found in connection.execute(select(table).where(table.c.study_key.in_(bare)))
        }
        for row in rows:
            earlier = kept.get(row["study_key"])
            if earlier is not None:
                row["study_instance_uid"] = earlier.study_instance_uid
                row.update({column: getattr(earlier, column) for column in IDENTIFIER_COLUMNS})
        connection.execute(delete(table).where(table.c.study_key.in_(keys)))
        connection.execute(insert(table), rows)

    def reconcile(
        self,
        results_dir: Path,
        identifiers_of: Callable[[Path], tuple[str | None, dict[str, Any]]] | None = None,
        batch: int = 500,
    ) -> int:
        """Index every result that has no row or whose file changed since (a withdrawal from
        the command line, a result from before this table existed), in batches of one
        transaction each. Run at start-up; returns how many rows were written."""
        from sqlalchemy import select

        with self.engine.connect() as connection:
            known = {
                row.study_key: row.result_mtime_ns
                for row in connection.execute(
                    select(self.table.c.study_key, self.table.c.result_mtime_ns)
                )
            }
        pending: list[dict[str, Any]] = []
        written = 0
        for path in sorted(results_dir.glob("*/result.json")):
            if known.get(path.parent.name) == path.stat().st_mtime_ns:
                continue
            try:
                uid, found = identifiers_of(path) if identifiers_of else (None, {})
                pending.append(_row(path, results_dir, found or None, uid))
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("worklist: result %s not indexed: %s", path.parent.name, exc)
            if len(pending) >= batch:
                written += self._flush(pending)
        return written + self._flush(pending)

    def _flush(self, pending: list[dict[str, Any]]) -> int:
        count = len(pending)
        if pending:
            with self.engine.begin() as connection:
                self._write(connection, pending)
            pending.clear()
        return count

    # --- reading -----------------------------------------------------------------------------
    def page(self, query: WorklistQuery, now: _dt.datetime) -> WorklistPage:
        from sqlalchemy import and_, case, func, or_, select

        table = self.table
        stamp = now.timestamp()
        rank = case(
            *[
                (
                    and_(table.c.level == level, table.c.received < stamp - limit.total_seconds()),
                    LEVELS.index(level) - 1,
                )
                for level, limit in ESCALATE_AFTER.items()
            ],
            *[(table.c.level == level, LEVELS.index(level)) for level in LEVELS],
            else_=len(LEVELS),
        )
        where = [table.c.status != "withdrawn"]
        if query.levels:
            where.append(rank.in_([LEVELS.index(level) for level in query.levels]))
        if query.text:
            pattern = f"%{query.text.lower()}%"
            where.append(or_(*[func.lower(table.c[c]).like(pattern) for c in _TEXT_SEARCH]))
        if query.modality:
            where.append(table.c.modality.like(f"%{query.modality}%"))
        if query.date_from:
            where.append(table.c.study_date >= query.date_from)
        if query.date_to:
            where.append(table.c.study_date <= query.date_to)
        if query.sort == "priority":
            order = [rank.desc() if query.descending else rank, table.c.received]
        elif query.sort == "waiting":
            order = [table.c.received.desc() if query.descending else table.c.received]
        else:
            column = table.c[query.sort]
            order = [column.desc() if query.descending else column, table.c.received]
        with self.engine.connect() as connection:
            count = int(
                connection.execute(
                    select(func.count()).select_from(table).where(*where)
                ).scalar_one()
            )
            # the ordering sorts narrow rows (key and sort columns), then the page's full rows
            # are fetched: a deep page no longer drags every row's text through the sorter
            page_keys = (
                select(table.c.study_key)
                .where(*where)
                .order_by(*order)
                .limit(query.limit)
                .offset(query.offset)
            )
            keys = connection.execute(page_keys).scalars().all()
            found = {
                row.study_key: row
                for row in connection.execute(select(table).where(table.c.study_key.in_(keys)))
            }
            rows = [found[key] for key in keys if key in found]
        entries = []
        identifiers = []
        for row in rows:
            entry = WorklistEntry(
                study_key=row.study_key,
                priority=Priority(
                    row.level, float(row.score), tuple(json.loads(row.reasons)), row.rules_version
                ),
                received=_dt.datetime.fromtimestamp(row.received, _dt.UTC),
                models=tuple(json.loads(row.models)),
            )
            escalate(entry, now)
            entries.append(entry)
            identifiers.append(
                {"study_instance_uid": row.study_instance_uid}
                | {column: getattr(row, column) for column in IDENTIFIER_COLUMNS}
            )
        return WorklistPage(count, entries, identifiers)


def _row(
    result_path: Path,
    results_dir: Path,
    identifiers: dict[str, Any] | None,
    study_instance_uid: str | None,
) -> dict[str, Any]:
    document = json.loads(result_path.read_text())
    priority = document["priority"]
    return {
        "study_key": document["study_key"],
        "study_instance_uid": study_instance_uid,
        "result_path": str(result_path.relative_to(results_dir)),
        "result_mtime_ns": result_path.stat().st_mtime_ns,
        "status": document.get("status", "final"),
        "level": priority["level"],
        "score": float(priority["score"]),
        "reasons": json.dumps(list(priority["reasons"])),
        "rules_version": str(priority["rules_version"]),
        "models": json.dumps(list(_models(document))),
        "received": _dt.datetime.fromisoformat(document["created"]).timestamp(),
        **{column: None for column in IDENTIFIER_COLUMNS},
        **(identifiers or {}),
    }


def _models(document: dict[str, Any]) -> tuple[str, ...]:
    """Each task version that answered, once, in order: the worklist names what was used."""
    names = []
    for analysis in document.get("analyses", []):
        task = analysis.get("task") or {}
        name = f"{task.get('id', '?')} {task.get('version', '?')}"
        if name not in names:
            names.append(name)
    return tuple(names)
