"""``medsight deidentify SRC DEST --key KEYFILE``: DICOM PS3.15 de-identification."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.errors import InvalidInputError

console = Console(highlight=False, stderr=True, soft_wrap=True)

REPORT_NAME = "deidentification-report.csv"


def deidentify(
    source: Annotated[Path, typer.Argument(metavar="SRC", help="DICOM file or folder tree.")],
    destination: Annotated[
        Path, typer.Argument(metavar="DEST", help="Folder for the de-identified files.")
    ],
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            metavar="<file>",
            help="Key file: the same key gives the same pseudonyms, UIDs and date shifts.",
        ),
    ],
    new_key: Annotated[
        bool,
        typer.Option("--new-key", help="Create the key file (readable by its owner only)."),
    ] = False,
    keep_private: Annotated[
        bool,
        typer.Option(
            "--keep-private",
            help="Keep private attributes (they may hold identifiers; removed by default).",
        ),
    ] = False,
    debug: DEBUG_OPTION = False,
) -> None:
    """De-identify DICOM (PS3.15 Basic Profile, with modified dates and patient
    characteristics retained) into DEST, with a CSV report of what was changed."""

    def body() -> int:
        from medsight.deid import Pseudonyms, deidentify_tree, load_key, write_report
        from medsight.deid import new_key as make_key

        if destination.exists() and any(destination.iterdir()):
            raise InvalidInputError("the destination folder is not empty", path=destination)
        secret = make_key(key) if new_key else load_key(key)
        written, skipped = deidentify_tree(
            source, destination, Pseudonyms(secret), keep_private=keep_private
        )
        report = write_report(destination / REPORT_NAME, destination, written)
        review = sum(1 for item in written if item.review)
        console.print(
            f"de-identified {len(written)} file(s) into {destination}; report {report}"
            + (f"; {review} to review for text burned into the pixels" if review else "")
        )
        for name, reason in skipped:
            console.print(f"not written: {name}: {reason}")
        if not written:
            raise InvalidInputError("no DICOM file found to de-identify", path=source)
        console.print("medsight: research use only, not for diagnostic use.")
        return 1 if skipped else 0

    code = run(body, debug=debug)
    if code:
        raise typer.Exit(code)
