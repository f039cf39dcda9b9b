"""``medsight users`` and ``medsight audit``: accounts, API tokens and the audit chain of a
service data directory (or database)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run

console = Console(highlight=False, soft_wrap=True)
users_app = typer.Typer(
    help="Service accounts: clinician, admin, service.", no_args_is_help=True, rich_markup_mode=None
)
audit_app = typer.Typer(
    help="The service's audit log.", no_args_is_help=True, rich_markup_mode=None
)

DATA_OPTION = Annotated[Path, typer.Option(help="The service's data directory.")]
DATABASE_OPTION = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in DATA).")
]


def _store(data_dir: Path, database_url: str | None) -> Any:
    from medsight.service import InstanceStore

    return InstanceStore(data_dir, database_url)


def _password_from_terminal_or_pipe() -> str:
    """Prompt twice on a terminal; read one line from a pipe (``echo ... | medsight users
    add``), where there is nobody to answer a prompt."""
    import sys

    from medsight.errors import InvalidInputError

    if sys.stdin is not None and not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidInputError("no password on standard input")
        return password
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="clinician, admin or service.")] = "clinician",
    password_env: Annotated[
        str | None,
        typer.Option(help="Read the password from this environment variable (else prompt)."),
    ] = None,
    data_dir: DATA_OPTION = Path("medsight-data"),
    database_url: DATABASE_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Create a user, or set a new password and role for an existing one."""

    def action() -> None:
        from medsight.errors import InvalidInputError
        from medsight.service.auth import Users

        if password_env:
            password = os.environ.get(password_env, "")
            if not password:
                raise InvalidInputError(f"environment variable {password_env} is empty or unset")
        else:
            password = _password_from_terminal_or_pipe()
        Users(_store(data_dir, database_url).engine).add(name, role, password)
        console.print(f"user {name} ({role}) saved")

    run(action, debug=debug)


@users_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DATA_OPTION = Path("medsight-data"),
    database_url: DATABASE_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Print a new API token for NAME (shown once; only its hash is stored)."""

    def action() -> None:
        from medsight.service.auth import Users

        print(Users(_store(data_dir, database_url).engine).issue_token(name))

    run(action, debug=debug)


@users_app.command("list")
def list_users(
    data_dir: DATA_OPTION = Path("medsight-data"),
    database_url: DATABASE_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """List users and their roles."""

    def action() -> None:
        from medsight.service.auth import Users

        for user in Users(_store(data_dir, database_url).engine).names():
            console.print(f"{user.name}\t{user.role}")

    run(action, debug=debug)


@audit_app.command("verify")
def verify(
    data_dir: DATA_OPTION = Path("medsight-data"),
    database_url: DATABASE_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Check the audit log's hash chain; exit 1 if any entry was changed or removed."""

    def action() -> None:
        from medsight.service.audit import AuditLog

        result = AuditLog(_store(data_dir, database_url).engine).verify()
        if result.ok:
            console.print(f"audit chain verified: {result.rows} entries")
            return
        console.print(f"audit chain BROKEN at entry {result.first_bad_id}: {result.problem}")
        raise typer.Exit(1)

    run(action, debug=debug)
