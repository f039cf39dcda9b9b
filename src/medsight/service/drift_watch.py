"""The service's drift and performance monitor: `medsight.monitoring` over the service's
results and clinicians' feedback, refreshed on a timer by `medsight serve`.

Each newly opened alert is recorded once (table ``monitoring_alerts``, keyed by task, version,
group, check and the time the alert opened), in the audit log (action ``monitoring_alert``)
and as a signed webhook event ``drift_alert`` (no patient identifiers: task, device hash,
check and its statistics). The latest report is kept as ``DATA/monitoring/monitor.json`` for
the admin page and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medsight.monitoring import DEFAULT_WINDOW, collect, monitor
from medsight.service.audit import AuditLog
from medsight.service.feedback import feedback_rows
from medsight.service.outbound import DISCLAIMER, Outbound
from medsight.service.store import InstanceStore

logger = logging.getLogger(__name__)

__all__ = ["DriftWatch", "latest_report"]


def _report_path(data_dir: Path) -> Path:
    return data_dir / "monitoring" / "monitor.json"


def latest_report(data_dir: Path) -> dict[str, Any] | None:
    """The last report the monitor wrote (None before its first run)."""
    try:
        return dict(json.loads(_report_path(data_dir).read_text()))
    except (OSError, ValueError):
        return None


class DriftWatch:
    def __init__(
        self,
        store: InstanceStore,
        outbound: Outbound,
        *,
        tasks_dirs: list[Path] | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        from medsight.service import schema

        self.store = store
        self.outbound = outbound
        self.audit = AuditLog(store.engine)
        self.tasks_dirs = tasks_dirs or []
        self.window = window
        self.alerts = schema.monitoring_alerts  # the store brought the schema to head

    def refresh(self) -> dict[str, Any]:
        """Recompute the report, write it, and announce every newly opened alert."""
        records = collect(self.store.data_dir / "results")
        report = monitor(
            records,
            tasks_dirs=self.tasks_dirs,
            window=self.window,
            feedback=feedback_rows(self.store.engine),
        )
        path = _report_path(self.store.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(report))
        partial.replace(path)
        for alert in report["open_alerts"]:
            self._announce(alert)
        return report

    def _announce(self, alert: dict[str, Any]) -> None:
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError

        key = "|".join(str(alert[k]) for k in ("task", "version", "group", "check", "since"))
        try:
            with self.store.engine.begin() as connection:
                connection.execute(
                    insert(self.alerts).values(
                        key=key, opened=alert["since"], detail=json.dumps(alert, sort_keys=True)
                    )
                )
        except IntegrityError:
            return  # announced before
        subject = f"{alert['task']} {alert['version']}"
        self.audit.append("medsight", "monitoring_alert", subject, alert)
        self.outbound.plan_event(
            f"drift:{key}", {"event": "drift_alert", "alert": alert, "disclaimer": DISCLAIMER}
        )
        logger.warning("monitoring alert: %s %s", subject, alert["check"])
