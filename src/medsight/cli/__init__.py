"""The ``medsight`` command line: one module per subcommand, thin over the library."""

from __future__ import annotations

import sys
from functools import partial
from typing import Annotated

import typer

from medsight.cli import (
    analyze,
    archive,
    calibrate,
    convert,
    deidentify,
    evaluate,
    gate,
    info,
    monitor,
    report,
    select,
    serve,
    tasks,
    train,
    users,
)
from medsight.cli._errors import DEBUG_OPTION, run
from medsight.io.limits import LIMIT_NAMES, apply_limit_setting, current_limits

app = typer.Typer(
    name="medsight",
    help="medsight: AI decision support for medical images. "
    "Research use only, not for diagnostic use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and errors: one line, wrapped, never cut off
)


def _version(value: bool) -> None:
    if value:
        import medsight

        typer.echo(f"medsight {medsight.__version__} - research use only, not for diagnostic use")
        raise typer.Exit()


_LIMIT_HELP = (
    "Change a resource limit for this run (repeatable): "
    + ", ".join(LIMIT_NAMES)
    + " (see docs/hostile-input.md). Also MEDSIGHT_LIMIT_<NAME>."
)


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    limit: Annotated[
        list[str] | None, typer.Option("--limit", metavar="NAME=VALUE", help=_LIMIT_HELP)
    ] = None,
) -> None:
    """medsight: AI decision support for medical images. Research use only, not for
    diagnostic use."""
    for setting in limit or []:
        run(partial(apply_limit_setting, setting))
    run(current_limits)  # a bad MEDSIGHT_LIMIT_* setting is reported once, before any work


app.command("info")(info.info)
app.command("convert")(convert.convert)
app.command("deidentify")(deidentify.deidentify)
app.command("analyze")(analyze.analyze)
app.command("analyze-archive")(archive.analyze_archive)
app.command("tasks")(tasks.list_tasks)
app.command("export")(tasks.export)
app.command("import-model")(tasks.import_model)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("calibrate")(calibrate.calibrate)
app.command("select-for-labelling")(select.select_for_labelling)
app.command("report")(report.report)
app.command("serve")(serve.serve)
app.command("monitor")(monitor.monitor)
app.add_typer(gate.gate_app, name="gate")
app.add_typer(users.users_app, name="users")
app.add_typer(users.audit_app, name="audit")

__all__ = ["DEBUG_OPTION", "app", "main", "run"]


def main() -> None:
    """Entry point: run the app; usage errors exit 2 as click does."""
    try:
        app(standalone_mode=True)
    except SystemExit as exc:  # pragma: no cover - exit codes pass through
        sys.exit(exc.code)
