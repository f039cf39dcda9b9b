"""Outbound deliveries with retries and a record of each: DICOM results pushed to a PACS
(C-STORE SCU) and critical-finding notifications (a webhook with an HMAC-signed payload that
carries study UIDs and the finding, never patient identifiers, and an idempotency key).

A delivery is recorded (pending) in the same database as the job before it is tried, so a
crash between the analysis and the delivery only delays it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.errors import InvalidInputError
from medsight.service.events import log_event

logger = logging.getLogger(__name__)

__all__ = ["Outbound", "PacsTarget", "sign"]

DISCLAIMER = "research use only, not for diagnostic use"


@dataclass(frozen=True)
class PacsTarget:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PacsTarget:
        """``AET@host:port``."""
        try:
            ae_title, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            return cls(ae_title, host, int(port))
        except ValueError as exc:
            raise InvalidInputError(f"PACS target {text!r} is not AET@host:port") from exc


def _files_key(files: list[str]) -> str:
    return hashlib.sha256("|".join(sorted(files)).encode()).hexdigest()[:16]


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Outbound:
    def __init__(
        self,
        engine: Any,
        data_dir: Path,
        *,
        pacs: PacsTarget | None = None,
        stow_url: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: bytes | None = None,
        calling_ae: str = "MEDSIGHT",
        max_attempts: int = 5,
        backoff_seconds: float = 2.0,
    ) -> None:
        from medsight.service import schema

        self.engine = engine
        self.data_dir = data_dir
        self.pacs = pacs
        self.stow_url = stow_url
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret or b""
        self.calling_ae = calling_ae
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        schema.ensure_schema(engine)
        self.table = schema.deliveries

    # --- what to deliver ---------------------------------------------------------------------
    def plan(self, result_dir: Path, document: dict[str, Any], study_instance_uid: str) -> None:
        """Record the deliveries one result needs (idempotent: a retried job plans the same
        keys, which are stored once)."""
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError

        rows = []
        files = [
            str((result_dir / p).relative_to(self.data_dir))
            for a in document["analyses"]
            for p in a.get("dicom_outputs", [])
        ]
        targets = []
        if self.pacs is not None:
            targets.append(("pacs", f"{self.pacs.ae_title}@{self.pacs.host}:{self.pacs.port}"))
        if self.stow_url:
            targets.append(("stow", self.stow_url))
        for kind, target in targets if files else []:
            rows.append(
                {
                    # the files' UIDs derive from the result: one delivery per result version
                    "idempotency_key": f"{kind}:{document['result_id']}:{_files_key(files)}",
                    "kind": kind,
                    "target": target,
                    "payload": json.dumps(files),
                }
            )
        if self.webhook_url:
            for analysis in document["analyses"]:
                for finding in analysis.get("findings", []):
                    if not (finding.get("critical") and finding.get("flag")):
                        continue
                    key = f"webhook:{document['result_id']}:{finding['name']}"
                    body = {
                        "event": "critical_finding",
                        "idempotency_key": key,
                        "study_instance_uid": study_instance_uid,
                        "series_instance_uid": analysis["input"].get("series_instance_uid"),
                        "result_id": document["result_id"],
                        "priority": document["priority"]["level"],
                        "finding": {
                            k: finding[k]
                            for k in ("name", "code", "probability", "operating_point", "model")
                        },
                        "disclaimer": DISCLAIMER,
                    }
                    rows.append(
                        {
                            "idempotency_key": key,
                            "kind": "webhook",
                            "target": self.webhook_url,
                            "payload": json.dumps(body, sort_keys=True),
                        }
                    )
        for row in rows:
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        insert(self.table).values(
                            **row, state="pending", attempts=0, next_at=time.time()
                        )
                    )
            except IntegrityError:  # planned already (a retried job): one delivery per key
                continue

    def plan_event(self, key: str, body: dict[str, Any]) -> bool:
        """Plan one signed webhook event (e.g. a drift alert); False when none is configured
        or the key was planned before (an event is sent once)."""
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError

        if not self.webhook_url:
            return False
        row = {
            "idempotency_key": key[:128],
            "kind": "webhook",
            "target": self.webhook_url,
            "payload": json.dumps({**body, "idempotency_key": key}, sort_keys=True),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(self.table).values(
                        **row, state="pending", attempts=0, next_at=time.time()
                    )
                )
        except IntegrityError:
            return False
        return True

    # --- delivering ----------------------------------------------------------------------------
    def deliver_due(self, now: float | None = None) -> int:
        """Try every due delivery once; returns how many succeeded."""
        from sqlalchemy import and_, select, update

        now = time.time() if now is None else now
        with self.engine.connect() as connection:
            due = list(
                connection.execute(
                    select(self.table).where(
                        and_(self.table.c.state == "pending", self.table.c.next_at <= now)
                    )
                ).mappings()
            )
        delivered = 0
        for row in due:
            attempts = row["attempts"] + 1
            try:
                if row["kind"] == "pacs":
                    self._push(json.loads(row["payload"]))
                elif row["kind"] == "stow":
                    self._stow(json.loads(row["payload"]))
                else:
                    self._post(row["payload"].encode(), row["idempotency_key"])
            except Exception as exc:  # every failure is recorded and retried
                dead = attempts >= self.max_attempts
                values = {
                    "attempts": attempts,
                    "last_error": str(exc)[:2000],
                    "state": "dead" if dead else "pending",
                    "next_at": now + self.backoff_seconds * 2 ** (attempts - 1),
                }
                log_event(
                    "failed",
                    logging.WARNING,
                    stage="delivery",
                    kind=row["kind"],
                    delivery=row["idempotency_key"],
                    attempt=attempts,
                    state=values["state"],
                    reason=str(exc)[:300],
                )
            else:
                values = {"attempts": attempts, "state": "done", "delivered_at": time.time()}
                delivered += 1
                log_event(
                    "delivered", kind=row["kind"], delivery=row["idempotency_key"], attempt=attempts
                )
            with self.engine.begin() as connection:
                connection.execute(
                    update(self.table).where(self.table.c.id == row["id"]).values(**values)
                )
        return delivered

    def _push(self, files: list[str]) -> None:
        import pydicom
        from pynetdicom import AE

        assert self.pacs is not None
        datasets = [pydicom.dcmread(self.data_dir / f) for f in files]
        ae = AE(ae_title=self.calling_ae)
        for dataset in datasets:
            ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        association = ae.associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title)
        if not association.is_established:
            raise ConnectionError(f"association with {self.pacs.ae_title} was not established")
        try:
            for dataset in datasets:
                status = association.send_c_store(dataset)
                if not status or int(status.Status) != 0:
                    code = getattr(status, "Status", None)
                    raise ConnectionError(f"C-STORE of {dataset.SOPInstanceUID}: status {code}")
        finally:
            association.release()

    def _stow(self, files: list[str]) -> None:
        """STOW-RS to the configured DICOMweb endpoint (dicomweb-client); the PACS keys
        instances by SOP Instance UID, so a retry replaces rather than duplicates."""
        import pydicom
        from dicomweb_client.api import DICOMwebClient

        assert self.stow_url is not None
        client = DICOMwebClient(url=self.stow_url)
        datasets = [pydicom.dcmread(self.data_dir / f) for f in files]
        response = client.store_instances(datasets)
        failed = response.get("00081198", {}).get("Value", [])
        if failed:
            raise ConnectionError(f"STOW-RS refused {len(failed)} of {len(datasets)} instances")

    def _post(self, body: bytes, key: str) -> None:
        assert self.webhook_url is not None
        request = urllib.request.Request(
            self.webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                "X-Medsight-Signature": sign(self.webhook_secret, body),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            if not 200 <= response.status < 300:
                raise urllib.error.HTTPError(
                    self.webhook_url, response.status, "not delivered", response.headers, None
                )

    def records(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        with self.engine.connect() as connection:
            return [dict(r) for r in connection.execute(select(self.table)).mappings()]
