"""Devices in results without their names: a keyed hash of the header's device tags, so
monitoring can group analyses by scanner while the names stay in the DICOM header."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from medsight.image import Image

__all__ = ["device_hash", "device_key"]


def device_key(out: Path) -> bytes:
    """The secret that keys device hashes in results under ``out`` (created once, 0600):
    monitoring can group by device without the names ever leaving the DICOM header."""
    path = out / ".device_key"
    if path.is_file():
        return path.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    # written whole under a private name, then linked into place: a concurrent worker
    # either wins the link or reads the winner's complete key, never a half-written one
    private = out / f".device_key.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    try:
        os.link(private, path)
    except FileExistsError:
        pass
    finally:
        private.unlink()
    return path.read_bytes()


def device_hash(image: Image, key: bytes) -> str | None:
    """A keyed hash of Manufacturer, ManufacturerModelName and StationName; None when the
    header names none of them (a JPEG, a NIfTI)."""
    names = [str(image.metadata.get(k) or "").strip() for k in _DEVICE_KEYWORDS]
    if not any(names):
        return None
    return hmac.new(key, "|".join(names).encode(), hashlib.sha256).hexdigest()[:16]


_DEVICE_KEYWORDS = ("Manufacturer", "ManufacturerModelName", "StationName")
