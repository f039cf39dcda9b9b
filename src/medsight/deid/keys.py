"""The de-identification key, and the pseudonyms and date shifts derived from it.

Every pseudonym is an HMAC-SHA256 of the original under the key: the same key gives the same
pseudonyms (a follow-up study links to the first), another key gives unrelated ones, and
without the key the originals cannot be recovered or confirmed by guessing. The key file
holds 32 random bytes in hex and must be readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from medsight.errors import InvalidInputError

__all__ = ["Pseudonyms", "load_key", "new_key"]

_KEY_BYTES = 32
#: dates move back by 1 to 10 years (whole days), per patient
_SHIFT_DAYS = (365, 3652)


def new_key(path: Path) -> bytes:
    """Write a new random key readable by its owner only; an existing file is not replaced."""
    key = secrets.token_bytes(_KEY_BYTES)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInputError(
            "key file exists already; give it with --key, or choose a new path", path=path
        ) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot create the key file ({exc.strerror})", path=path) from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def load_key(path: Path) -> bytes:
    """The key in ``path``; refused when others can read it or it is not a key."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InvalidInputError(
            "key file not found (create one with --new-key)", path=path
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInputError(
            f"key file is open to other users (mode {stat.S_IMODE(mode):o}); "
            f"make it readable by its owner only: chmod 600 {path}",
            path=path,
        )
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise InvalidInputError(
            f"not a medsight key file ({_KEY_BYTES} bytes in hex expected)", path=path
        )
    return key


class Pseudonyms:
    """Consistent replacements under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A UID under the 2.25 arc (PS3.5 B.2), at most 44 characters."""
        return "2.25." + str(int.from_bytes(self._digest("uid", original)[:16], "big"))

    def patient_id(self, original: str) -> str:
        digest = self._digest("patient", original)
        return "MS" + str(int.from_bytes(digest[:8], "big") % 10**12).zfill(12)

    def date_shift_days(self, patient: str) -> int:
        """Days to move this patient's dates back: the same for all of a patient's objects,
        so intervals between studies are kept."""
        low, high = _SHIFT_DAYS
        return low + int.from_bytes(self._digest("dates", patient)[:4], "big") % (high - low)
