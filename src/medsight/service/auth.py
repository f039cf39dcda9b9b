"""Users, roles, passwords and tokens.

Roles: ``clinician`` (worklist, studies, viewer, feedback, models), ``admin`` (all of that,
the audit log and metrics) and ``service`` (an integration account: it may submit studies
and read metrics, never read them). Passwords are hashed with Argon2id (argon2-cffi);
API and session tokens are random and only their SHA-256 is stored, so a copy of the
database gives no usable credential.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from medsight.errors import InvalidInputError

__all__ = ["DEFAULT_PASSWORDS", "ROLES", "User", "Users"]

Role = Literal["clinician", "admin", "service"]
ROLES: tuple[str, ...] = ("clinician", "admin", "service")
# Passwords refused outside development mode: the ones people try first.
DEFAULT_PASSWORDS = ("admin", "medsight", "password", "changeme", "secret", "123456")
MIN_PASSWORD_LENGTH = 12
SESSION_HOURS = 12


@dataclass(frozen=True)
class User:
    name: str
    role: str


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Users:
    def __init__(self, engine: Any) -> None:
        from argon2 import PasswordHasher

        from medsight.service import schema

        self.engine = engine
        self.hasher = PasswordHasher()
        schema.ensure_schema(engine)
        self.users = schema.users
        self.tokens = schema.tokens

    @staticmethod
    def roles() -> tuple[str, ...]:
        return ROLES

    def add(self, name: str, role: str, password: str, *, dev: bool = False) -> None:
        """Create or replace a user. Outside development mode a short or default password
        is refused."""
        from sqlalchemy import delete, insert

        if role not in ROLES:
            raise InvalidInputError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidInputError(f"user name {name!r}: letters, digits, - and _ only")
        if not dev:
            if password.lower() in DEFAULT_PASSWORDS:
                raise InvalidInputError(f"user {name}: that password is a well-known default")
            if len(password) < MIN_PASSWORD_LENGTH:
                raise InvalidInputError(
                    f"user {name}: a password needs at least {MIN_PASSWORD_LENGTH} characters"
                )
        with self.engine.begin() as connection:
            connection.execute(delete(self.users).where(self.users.c.name == name))
            connection.execute(
                insert(self.users).values(
                    name=name,
                    role=role,
                    password_hash=self.hasher.hash(password),
                    created=_now().isoformat(timespec="seconds"),
                )
            )

    def names(self) -> list[User]:
        from sqlalchemy import select

        with self.engine.connect() as connection:
            rows = connection.execute(select(self.users.c.name, self.users.c.role)).all()
        return [User(name, role) for name, role in rows]

    def login(self, name: str, password: str) -> User | None:
        from argon2.exceptions import InvalidHashError, VerifyMismatchError
        from sqlalchemy import select

        with self.engine.connect() as connection:
            row = (
                connection.execute(select(self.users).where(self.users.c.name == name))
                .mappings()
                .first()
            )
        if row is None:
            self.hasher.hash(password)  # same cost whether or not the user exists
            return None
        try:
            self.hasher.verify(row["password_hash"], password)
        except (VerifyMismatchError, InvalidHashError):
            return None
        return User(row["name"], row["role"])

    def users_with_default_passwords(self) -> list[str]:
        """Users whose password is one of DEFAULT_PASSWORDS (refused outside dev mode)."""
        return [
            user.name
            for user in self.names()
            if any(self.login(user.name, p) for p in DEFAULT_PASSWORDS)
        ]

    def issue_token(
        self, name: str, kind: str = "api", *, label: str | None = None, days: int | None = None
    ) -> str:
        """A new token (shown once; only its hash is kept). Sessions last SESSION_HOURS; an
        API token lasts ``days`` when given, else until revoked."""
        from sqlalchemy import insert

        if name not in {u.name for u in self.names()}:
            raise InvalidInputError(f"no user {name!r}")
        token = secrets.token_urlsafe(32)
        if kind == "session":
            expires: str | None = (_now() + _dt.timedelta(hours=SESSION_HOURS)).isoformat()
        else:
            expires = (_now() + _dt.timedelta(days=days)).isoformat() if days else None
        with self.engine.begin() as connection:
            connection.execute(
                insert(self.tokens).values(
                    token_sha256=_token_hash(token),
                    user_name=name,
                    kind=kind,
                    expires=expires,
                    label=label,
                    created=_now().isoformat(timespec="seconds"),
                )
            )
        return token

    def api_tokens(self, name: str) -> list[dict[str, Any]]:
        """A user's personal API tokens: label, created, expires (never the secret)."""
        from sqlalchemy import select

        tokens = self.tokens
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(tokens.c.label, tokens.c.created, tokens.c.expires)
                .where(tokens.c.user_name == name, tokens.c.kind == "api")
                .order_by(tokens.c.created)
            ).mappings()
            return [dict(row) for row in rows]

    def revoke_api_token(self, name: str, label: str) -> bool:
        from sqlalchemy import delete

        tokens = self.tokens
        with self.engine.begin() as connection:
            removed = connection.execute(
                delete(tokens).where(
                    tokens.c.user_name == name, tokens.c.kind == "api", tokens.c.label == label
                )
            ).rowcount
        return bool(removed)

    def revoke(self, token: str) -> None:
        from sqlalchemy import delete

        with self.engine.begin() as connection:
            connection.execute(
                delete(self.tokens).where(self.tokens.c.token_sha256 == _token_hash(token))
            )

    def user_for_token(self, token: str) -> User | None:
        from sqlalchemy import select

        tokens, users = self.tokens, self.users
        with self.engine.connect() as connection:
            row = connection.execute(
                select(users.c.name, users.c.role, tokens.c.expires)
                .join(tokens, tokens.c.user_name == users.c.name)
                .where(tokens.c.token_sha256 == _token_hash(token))
            ).first()
        if row is None:
            return None
        name, role, expires = row
        if expires is not None and _dt.datetime.fromisoformat(expires) < _now():
            return None
        return User(name, role)
