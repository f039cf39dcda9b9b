"""A small HTTP client for the service tests (urllib: the real HTTP stack, no test client),
and accounts made directly in the service's database."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from medsight.service import InstanceStore
from medsight.service.auth import Users

PASSWORD = "a-long-test-password"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer the tests look at, not follow


_OPENER = urllib.request.build_opener(_NoRedirect)


class Api:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=body, method=method)
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with _OPENER.open(request, timeout=60) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def json(self, path: str) -> Any:
        status, body, _ = self.call("GET", path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def up(self) -> bool:
        try:
            return self.call("GET", "/healthz")[0] == 200
        except OSError:
            return False


def account(data: Path, name: str, role: str) -> str:
    """Create (or reset) a user in the service's database; return an API token."""
    users = Users(InstanceStore(data).engine)
    users.add(name, role, PASSWORD)
    return users.issue_token(name)
