"""Prometheus text exposition of the service's state, read from the database (so every
process, and a restarted one, reports the same numbers): queue depth, jobs by state,
failures, deliveries, and latencies (last instance received to result; analysis time).

Written by hand rather than with prometheus_client: these are a few gauges and summaries
computed from the database on each scrape, not in-process counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medsight.service.store import InstanceStore

__all__ = ["latencies", "prometheus_text"]

QUANTILES = (0.5, 0.95, 0.99)


def latencies(store: InstanceStore) -> dict[str, list[float]]:
    """Seconds, per finished job: ``result`` (study's last instance received to result
    written) and ``analysis`` (lease to result)."""
    from sqlalchemy import select

    jobs = store.queue.jobs
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(jobs.c.last_received, jobs.c.started_at, jobs.c.finished_at).where(
                jobs.c.state == "done"
            )
        ).all()
    return {
        "result": [f - r for r, _s, f in rows if r is not None and f is not None],
        "analysis": [f - s for _r, s, f in rows if s is not None and f is not None],
    }


def _summary(name: str, help_text: str, values: list[float]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} summary"]
    if values:
        for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True):
            lines.append(f'{name}{{quantile="{q}"}} {v:.6f}')
    lines += [f"{name}_sum {sum(values):.6f}", f"{name}_count {len(values)}"]
    return lines


def _monitoring_lines(store: InstanceStore) -> list[str]:
    from medsight.service.drift_watch import latest_report

    report = latest_report(store.data_dir) or {"open_alerts": []}
    alerts = report["open_alerts"]
    lines = [
        "# HELP medsight_monitoring_open_alerts Drift and performance alerts open now.",
        "# TYPE medsight_monitoring_open_alerts gauge",
        f"medsight_monitoring_open_alerts {len(alerts)}",
        "# HELP medsight_monitoring_alert One open alert (task, version, group, check).",
        "# TYPE medsight_monitoring_alert gauge",
    ]
    for alert in alerts:
        labels = ",".join(
            f'{k}="{str(alert[k]).replace(chr(34), "")}"'
            for k in ("task", "version", "group", "check")
        )
        lines.append(f"medsight_monitoring_alert{{{labels}}} 1")
    return lines


def prometheus_text(store: InstanceStore) -> str:
    from sqlalchemy import func, inspect, select, text

    queue = store.queue
    states = queue.states()
    with store.engine.connect() as connection:
        failures = connection.execute(select(func.sum(queue.jobs.c.failures))).scalar() or 0
        receiving = connection.execute(
            select(func.count()).where(queue.studies.c.state == "receiving")
        ).scalar()
        deliveries: Sequence[Any] = []
        if inspect(connection).has_table("deliveries"):  # made by the outbound side
            deliveries = connection.execute(
                text("SELECT kind, state, count(*) FROM deliveries GROUP BY kind, state")
            ).all()
    lines = ["# HELP medsight_jobs Analysis jobs by state.", "# TYPE medsight_jobs gauge"]
    for state in ("queued", "leased", "done", "dead"):
        lines.append(f'medsight_jobs{{state="{state}"}} {states.get(state, 0)}')
    lines += [
        "# HELP medsight_queue_depth Jobs waiting or running.",
        "# TYPE medsight_queue_depth gauge",
        f"medsight_queue_depth {states.get('queued', 0) + states.get('leased', 0)}",
        "# HELP medsight_studies_receiving Studies inside their quiet period.",
        "# TYPE medsight_studies_receiving gauge",
        f"medsight_studies_receiving {receiving}",
        "# HELP medsight_job_failures_total Failed analysis attempts (retried or dead).",
        "# TYPE medsight_job_failures_total counter",
        f"medsight_job_failures_total {failures}",
        "# HELP medsight_instances_stored Instances in the store.",
        "# TYPE medsight_instances_stored gauge",
        f"medsight_instances_stored {store.count()}",
        "# HELP medsight_deliveries Outbound deliveries by kind and state.",
        "# TYPE medsight_deliveries gauge",
    ]
    lines += [f'medsight_deliveries{{kind="{k}",state="{s}"}} {n}' for k, s, n in deliveries]
    lines += _monitoring_lines(store)
    measured = latencies(store)
    lines += _summary(
        "medsight_result_latency_seconds",
        "From a study's last instance received to its result written.",
        measured["result"],
    )
    lines += _summary(
        "medsight_analysis_seconds", "From a job's lease to its result.", measured["analysis"]
    )
    return "\n".join(lines) + "\n"
