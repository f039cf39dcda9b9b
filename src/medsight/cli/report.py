"""``medsight report RESULT_DIR``: render report.html again from stored results, or
withdraw a result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run

console = Console(highlight=False, stderr=True, soft_wrap=True)


def report(
    result_dir: Annotated[
        Path, typer.Argument(help="A study folder with result.json, or an output folder.")
    ],
    withdraw: Annotated[
        str | None, typer.Option(help="Withdraw the result(s), giving the reason.")
    ] = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Re-render report.html from result.json (and mark results withdrawn when asked)."""

    def action() -> None:
        import json

        from medsight.analysis.runner import write_result
        from medsight.errors import InvalidInputError
        from medsight.reporting import validate_result
        from medsight.reporting.html_report import write_html_report

        if (result_dir / "result.json").is_file():
            results = [result_dir / "result.json"]
        else:
            results = sorted(result_dir.glob("*/result.json"))
        if not results:
            raise InvalidInputError("no result.json here or one folder below", path=result_dir)
        for path in results:
            try:
                document = json.loads(path.read_text())
                validate_result(document)
            except ValueError as exc:  # JSON and schema errors
                raise InvalidInputError(f"not a medsight result.json ({exc})", path=path) from exc
            if withdraw is not None:
                document["status"] = "withdrawn"
                document["withdrawn_reason"] = withdraw
                write_result(document, path)
            html = write_html_report(document, path.parent)
            console.print(f"wrote {html}" + (" (withdrawn)" if withdraw is not None else ""))
        console.print("research use only, not for diagnostic use")

    run(action, debug=debug)
