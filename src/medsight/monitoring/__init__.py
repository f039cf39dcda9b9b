"""Drift and performance monitoring over results: a library that the CLI (`medsight
monitor`) and the service call. Flow position: beside `analysis`, reading what it wrote."""

from medsight.monitoring.drift import KS_ALERT, PSI_ALERT, Shift, compare
from medsight.monitoring.monitor import (
    DEFAULT_WINDOW,
    MONITORED_STATISTICS,
    AnalysisRecord,
    collect,
    monitor,
)
from medsight.monitoring.report import monitor_body, monitor_html, write_monitor

__all__ = [
    "DEFAULT_WINDOW",
    "KS_ALERT",
    "MONITORED_STATISTICS",
    "PSI_ALERT",
    "AnalysisRecord",
    "Shift",
    "collect",
    "compare",
    "monitor",
    "monitor_body",
    "monitor_html",
    "write_monitor",
]
