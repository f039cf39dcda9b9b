"""Sign-in throttling: an account is locked after repeated wrong passwords, and an address
that tries many accounts is slowed, both for a while; an admin can clear a lockout.

The check runs before the password hash is computed, so a flood of wrong passwords costs the
server a database query each, not an Argon2 hash each, and other users keep being served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from medsight.service import schema

__all__ = ["LoginThrottle", "Refusal"]


@dataclass(frozen=True)
class Refusal:
    reason: str
    retry_after: int  # seconds


class LoginThrottle:
    def __init__(
        self,
        engine: Any,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window_seconds: float = 900.0,
    ) -> None:
        schema.ensure_schema(engine)
        self.engine = engine
        self.table = schema.login_failures
        self.per_account = per_account
        self.per_address = per_address
        self.window = window_seconds

    def refusal(self, account: str, address: str, now: float | None = None) -> Refusal | None:
        """Why a sign-in must not even be tried now, or None."""
        from sqlalchemy import func, select

        now = time.time() if now is None else now
        table = self.table
        since = now - self.window
        with self.engine.connect() as connection:
            for column, value, limit, what in (
                (table.c.account, account, self.per_account, f"account {account!r} is locked"),
                (
                    table.c.address,
                    address,
                    self.per_address,
                    f"too many failed sign-ins from {address}",
                ),
            ):
                count, last = connection.execute(
                    select(func.count(), func.max(table.c.at)).where(
                        column == value, table.c.at >= since
                    )
                ).one()
                if count >= limit:
                    wait = int(last + self.window - now) + 1
                    return Refusal(f"{what} after {count} failed sign-ins; try again later", wait)
        return None

    def failed(self, account: str, address: str, now: float | None = None) -> None:
        from sqlalchemy import delete, insert

        now = time.time() if now is None else now
        with self.engine.begin() as connection:
            connection.execute(delete(self.table).where(self.table.c.at < now - self.window))
            connection.execute(insert(self.table).values(account=account, address=address, at=now))

    def succeeded(self, account: str) -> None:
        """A right password before the lockout clears the account's count."""
        from sqlalchemy import delete

        with self.engine.begin() as connection:
            connection.execute(delete(self.table).where(self.table.c.account == account))

    def clear(self, name: str) -> int:
        """Lift the lockout of an account or of an address (an admin's action); returns the
        failures removed."""
        from sqlalchemy import delete, or_

        table = self.table
        with self.engine.begin() as connection:
            removed = connection.execute(
                delete(table).where(or_(table.c.account == name, table.c.address == name))
            )
            return int(removed.rowcount)
