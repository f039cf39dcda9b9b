"""``medsight monitor RESULTS_DIR``: drift and performance of the tasks behind the results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run

console = Console(highlight=False, stderr=True, soft_wrap=True)


def monitor(
    results: Annotated[Path, typer.Argument(help="A folder of results (medsight analyze --out).")],
    out: Annotated[
        Path | None, typer.Option(help="Where monitor.json and monitor.html go (default: RESULTS).")
    ] = None,
    window: Annotated[int, typer.Option(min=5, max=10_000, help="Rolling window (analyses).")] = 20,
    tasks_dir: Annotated[
        list[Path] | None,
        typer.Option(metavar="<dir>", help="Folders of user tasks (their references)."),
    ] = None,
    fail_on_alert: Annotated[bool, typer.Option(help="Exit 1 when an alert is open.")] = False,
    debug: DEBUG_OPTION = False,
) -> None:
    """Compare recent results with each task version's reference distributions."""

    def action() -> None:
        from medsight.errors import InvalidInputError
        from medsight.monitoring import collect, write_monitor
        from medsight.monitoring import monitor as build

        if not results.is_dir():
            raise InvalidInputError("not a folder of results", path=results)
        records = collect(results)
        if not records:
            raise InvalidInputError(
                "no result.json of schema 3.0 or later found (run medsight analyze first)",
                path=results,
            )
        report = build(records, tasks_dirs=tasks_dir or [], window=window)
        json_path, html_path = write_monitor(report, out or results)
        for alert in report["open_alerts"]:
            console.print(
                f"ALERT {alert['task']} {alert['version']} {alert['group']}: {alert['check']} "
                f"since {alert['since']}"
            )
        console.print(
            f"{len(records)} analyses, {len(report['open_alerts'])} open alert(s); "
            f"wrote {json_path} and {html_path}"
        )
        console.print("research use only, not for diagnostic use")
        if fail_on_alert and report["open_alerts"]:
            raise typer.Exit(1)

    run(action, debug=debug)
