"""monitor.json and monitor.html: the monitoring report, with plots that work offline
(matplotlib PNGs embedded in the page, no scripts, no network)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from medsight.monitoring.monitor import MIN_WINDOW

__all__ = ["monitor_body", "monitor_html", "write_monitor"]

_PLOTTED = (
    ("gate_rejection", "rate", "gate rejection rate"),
    ("flag_rate", "rate", "flag rate"),
    ("ood_score", "psi", "OOD score PSI"),
    ("input_brightness", "psi", "brightness PSI"),
    ("input_contrast", "psi", "contrast PSI"),
    ("input_size", "psi", "size PSI"),
    ("probability", "psi", "probability PSI"),
)


def _plot(series: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(_PLOTTED), 1, figsize=(7, 1.4 * len(_PLOTTED)), sharex=True)
    positions = list(range(1, len(series) + 1))
    for axis, (check, key, label) in zip(axes, _PLOTTED, strict=True):
        # a window too small to judge is not drawn (a PSI of 3 values means nothing)
        values = [
            w["checks"].get(check, {}).get(key) if w["n"] >= MIN_WINDOW else None for w in series
        ]
        alerts = [n for n, w in zip(positions, series, strict=True) if check in w["alerts"]]
        axis.plot(positions, [v if v is not None else float("nan") for v in values], lw=1)
        if alerts:
            axis.scatter(
                alerts,
                [values[n - 1] for n in alerts],
                color="#c00",
                s=10,
                zorder=3,
                label="alert",
            )
            axis.legend(loc="upper left", fontsize=7)
        axis.set_ylabel(label, fontsize=7)
        axis.tick_params(labelsize=7)
    axes[-1].set_xlabel("analysis number (each point: the window ending there)", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def monitor_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>medsight monitoring</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}.alert{color:#a00}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
        "</head><body><p><strong>Research use only, not for diagnostic use.</strong></p>"
        + monitor_body(report)
        + "</body></html>"
    )


def monitor_body(report: dict[str, Any]) -> str:
    """The report's content (the service's admin page puts it in its own frame)."""
    parts = [
        f"<h1>Drift and performance monitoring</h1><p>Created {html.escape(report['created'])};"
        f" rolling window of {report['window']} analyses.</p>",
    ]
    alerts = report["open_alerts"]
    if alerts:
        rows = "".join(
            f"<tr><td>{html.escape(a['task'])} {html.escape(a['version'])}</td>"
            f"<td>{html.escape(a['group'])}</td><td>{html.escape(a['check'])}</td>"
            f"<td>{html.escape(a['since'])}</td>"
            f"<td>{html.escape(json.dumps(a['detail']))}</td></tr>"
            for a in alerts
        )
        parts.append(
            f'<h2 class="alert">{len(alerts)} open alert(s)</h2><table><tr><th>task</th>'
            f"<th>group</th><th>check</th><th>since</th><th>detail</th></tr>{rows}</table>"
        )
    else:
        parts.append("<h2>No open alert</h2>")
    for task in report["tasks"]:
        agreement = task["agreement"]
        ppv = agreement["ppv_of_flags"]
        parts.append(
            f"<h2>{html.escape(task['task'])} {html.escape(task['version'])}</h2>"
            f"<p>{task['analyses']} analyses. Clinician feedback: PPV of flags "
            f"{'n/a' if ppv is None else f'{ppv:.2f}'} "
            f"({agreement['flagged_agree']} agreed, {agreement['flagged_disagree']} "
            f"disagreed); possible misses (disagreement on unflagged findings): "
            f"{agreement['possible_misses']}."
            + ("" if task["reference"] else " No reference distribution for this version.")
            + "</p>"
        )
        for group in task["groups"]:
            parts.append(
                f"<h3>{html.escape(group['group'])} ({group['analyses']} analyses)</h3>"
                f'<img alt="monitoring plots" src="data:image/png;base64,'
                f'{_plot(group["series"])}">'
            )
    return "\n".join(parts)


def write_monitor(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/monitor.json`` (the whole report) and ``out/monitor.html``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "monitor.json", out / "monitor.html"
    json_path.write_text(json.dumps(report, indent=1))
    html_path.write_text(monitor_html(report))
    return json_path, html_path
