"""DICOM listener (pynetdicom): C-ECHO, and C-STORE of every storage SOP class in every
transfer syntax, from an allow-list of calling AE titles. An instance is acknowledged
(status 0x0000) only after the store has made it durable; a failure to store answers
0xA700 (out of resources) so the sender keeps it and retries."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from medsight.errors import ConfigurationError, MedsightError
from medsight.io.dicom._header import check_declared_size
from medsight.io.limits import ResourceLimitError
from medsight.service.events import log_event
from medsight.service.store import InstanceStore

__all__ = ["DicomListener", "refuse_over_limit"]

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


_LAST_NEEDED = 0x00280100  # BitsAllocated: past the UIDs and the declared image size


def _header(event: Any) -> Any:
    """The dataset's elements up to the image size (UIDs, rows, columns, frames), read
    straight from the bytes received: decoding the whole instance (pixel data included)
    only to find these costs a copy of it on every C-STORE."""
    from pydicom.filereader import read_dataset

    syntax = event.context.transfer_syntax
    if syntax.is_deflated:  # compressed as a whole: only a full decode can read it
        return event.dataset
    raw = event.request.DataSet
    raw.seek(0)
    try:
        return read_dataset(
            raw,
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            stop_when=lambda tag, _vr, _length: tag > _LAST_NEEDED,
        )
    finally:
        raw.seek(0)


def refuse_over_limit(dataset: Any) -> None:
    """Over a resource limit: refused now, while the sender still holds it. Anything else odd
    in the pixel module (or none: an SR, a presentation state) is stored, and its study gets
    NEEDS_REVIEW with the reason: nothing received is lost."""
    try:
        check_declared_size(None, dataset)
    except ResourceLimitError:
        raise
    except MedsightError:
        pass


def _failure(status: int, comment: str) -> Any:
    """A C-STORE failure status with the reason for the sender's log (ErrorComment, LO)."""
    from pydicom.dataset import Dataset

    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer


class DicomListener:
    def __init__(
        self,
        store: InstanceStore,
        *,
        ae_title: str = "MEDSIGHT",
        allowed_calling_aets: list[str] | None = None,
        maximum_associations: int = 10,
        acse_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.maximum_associations = maximum_associations
        # a peer that connects and sends nothing, or a broken PDU, holds one of the
        # association slots until this runs out (pynetdicom waits on its ACSE timer): short
        # enough that garbage cannot keep the listener full for long
        self.acse_timeout = acse_timeout
        self.ae_title = ae_title
        self.allowed_calling_aets = allowed_calling_aets or []
        self._server: Any = None

    def _on_store(self, event: Any) -> Any:
        calling = event.assoc.requestor.ae_title.strip()
        try:
            dataset = _header(event)
            identifiers = {
                "SOPInstanceUID": str(dataset.get("SOPInstanceUID", "")),
                "StudyInstanceUID": str(dataset.get("StudyInstanceUID", "")),
                "SeriesInstanceUID": str(dataset.get("SeriesInstanceUID", "")),
                "SOPClassUID": str(dataset.get("SOPClassUID", "")),
            }
            refuse_over_limit(dataset)
        except ResourceLimitError as exc:
            log_event("refused", logging.WARNING, stage="intake", source=calling, reason=str(exc))
            return _failure(CANNOT_UNDERSTAND, exc.message)
        except RecursionError:
            reason = "sequences nested deeper than the parser can follow"
            log_event("refused", logging.WARNING, stage="intake", source=calling, reason=reason)
            return _failure(CANNOT_UNDERSTAND, reason)
        except Exception as exc:  # a dataset pydicom cannot parse
            log_event("failed", logging.WARNING, stage="intake", source=calling, reason=str(exc))
            return CANNOT_UNDERSTAND
        try:
            # the bytes as received (with a file meta header), never re-encoded
            self.store.store(event.encoded_dataset(include_meta=True), identifiers, calling)
        except MedsightError as exc:
            log_event("failed", logging.WARNING, stage="intake", source=calling, reason=str(exc))
            return CANNOT_UNDERSTAND
        except Exception as exc:  # disk or database trouble: the sender keeps it and retries
            log_event("failed", logging.ERROR, stage="store", source=calling, reason=str(exc))
            return OUT_OF_RESOURCES
        return SUCCESS  # the store logged the event

    def start(
        self,
        host: str,
        port: int,
        *,
        tls_certificate: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
    ) -> None:
        """Serve on (host, port); with a certificate and key, over TLS only (and with
        ``tls_client_ca``, only to callers presenting a certificate it signed)."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.maximum_associations  # more are rejected, not queued
        # senders may use PDUs of any size: pynetdicom handles each PDU in Python, and
        # its 16 kB default splits a CT slice into 32 of them
        ae.maximum_pdu_size = 0
        ae.acse_timeout = self.acse_timeout
        ae.network_timeout = 60
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.allowed_calling_aets:
            ae.require_calling_aet = self.allowed_calling_aets
        tls: ssl.SSLContext | None = None
        if tls_certificate is not None and tls_key is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(tls_certificate, tls_key)
            if tls_client_ca is not None:
                tls.verify_mode = ssl.CERT_REQUIRED
                tls.load_verify_locations(tls_client_ca)
        try:
            self._server = ae.start_server(
                (host, port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
                ssl_context=tls,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen for DICOM on {host}:{port}: {exc.strerror or exc}"
            ) from None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
