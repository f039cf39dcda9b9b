"""Fuzzing what arrives from outside: DICOMDIR files (mutated, and with file IDs that try to
leave their folder), STOW-RS bodies, and the DICOM listener over the network (mutated
datasets in C-STORE, and mutated association bytes on a raw socket). Every input ends in a
result or a recorded refusal, and the listener keeps answering. CI runs a small budget;
MEDSIGHT_FUZZ_EXAMPLES sets a long run's."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from medsight.errors import MedsightError
from medsight.io.dicom import scan_dicom
from medsight.io.dicom.discovery import _dicomdir_files as dicomdir_files
from medsight.service import InstanceStore
from medsight.service.intake import DicomListener
from medsight.service.intake.stow import receive_stow
from tests._net import free_port
from tests.fuzz._mutations import examples, mutated, time_limit

DICOMDIR_SET = Path(get_testdata_file("DICOMDIR")).parent
CT = Path(get_testdata_file("CT_small.dcm")).read_bytes()
MR = Path(get_testdata_file("MR_small.dcm")).read_bytes()


def _settings(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


# --- DICOMDIR ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicomdir_copy() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "set"
        shutil.copytree(DICOMDIR_SET, copy)
        yield copy


_DICOMDIR_SEED = (DICOMDIR_SET / "DICOMDIR").read_bytes()


@pytest.mark.timeout(time_limit(240))
@_settings(200)
@given(data=mutated([_DICOMDIR_SEED]))
def test_a_mutated_dicomdir_lists_only_files_inside_its_folder(
    dicomdir_copy: Path, data: bytes
) -> None:
    """The directory records are what is fuzzed: whatever they say, every file listed is
    inside the DICOMDIR's folder (reading those files is the DICOM reader's target)."""
    path = dicomdir_copy / "DICOMDIR"
    path.write_bytes(data)
    try:
        files, _refused = dicomdir_files(path)
    except MedsightError:
        return
    root = dicomdir_copy.resolve()
    assert all(file.is_relative_to(root) for file in files)


def test_file_ids_that_leave_the_folder_are_skipped_and_the_rest_read(tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(DICOMDIR_SET, copy)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(CT)
    directory = pydicom.dcmread(copy / "DICOMDIR")
    records = [r for r in directory.DirectoryRecordSequence if "ReferencedFileID" in r]
    records[0].ReferencedFileID = ["..", "outside", "secret"]
    records[1].ReferencedFileID = str(tmp_path / "outside" / "secret")  # absolute
    directory.save_as(copy / "DICOMDIR")
    scan = scan_dicom(copy / "DICOMDIR", workers=1)
    outside = [s for s in scan.skipped if "outside the DICOMDIR's folder" in s.reason]
    assert len(outside) == 2
    read = {f.path for series in scan.series for stack in series.stacks for f in stack.frames}
    assert read and all(p.resolve().is_relative_to(copy.resolve()) for p in read)
    assert len(read) == len(records) - 2


# --- STOW-RS -------------------------------------------------------------------------------


_BOUNDARY = "fuzz-boundary"


def _body(parts: list[bytes]) -> bytes:
    chunks = [
        f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    ]
    return b"".join(chunks) + f"--{_BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module")
def stow_store() -> Iterator[InstanceStore]:
    with tempfile.TemporaryDirectory() as folder:
        yield InstanceStore(Path(folder) / "data")


@pytest.mark.timeout(time_limit(240))
@_settings(80)
@given(body=mutated([_body([CT]), _body([CT, MR])]))
def test_a_mutated_stow_body_gets_a_dicom_response(stow_store: InstanceStore, body: bytes) -> None:
    content_type = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'
    try:
        status, response = receive_stow(stow_store, content_type, body, "fuzz")
    except ValueError:
        return  # documented: a body that is not multipart/related
    assert status in (200, 202, 400, 409)
    assert isinstance(response, dict)


# --- the DICOM listener ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def listener() -> Iterator[tuple[InstanceStore, int]]:
    with tempfile.TemporaryDirectory() as folder:
        store = InstanceStore(Path(folder) / "data")
        server = DicomListener(store, allowed_calling_aets=["FUZZ"], acse_timeout=1.0)
        port = free_port()
        server.start("127.0.0.1", port)
        yield store, port
        server.stop()


def _answers(port: int, within: float = 5.0) -> bool:
    """The listener answers a C-ECHO within ``within`` seconds (a broken association holds
    its slot until the ACSE timeout, here 1 s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _echo(port):
            return True
        time.sleep(0.2)
    return False


def _echo(port: int) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="FUZZ")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="MEDSIGHT")
    if not association.is_established:
        return False
    status = association.send_c_echo()
    association.release()
    return bool(status) and status.Status == 0


def _store_bytes(port: int, data: bytes) -> None:
    """C-STORE of a mutated file: the SCU sends the dataset bytes as they are."""
    from pynetdicom import AE, StoragePresentationContexts

    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        ae = AE(ae_title="FUZZ")
        ae.requested_contexts = StoragePresentationContexts[:120]
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        association = ae.associate("127.0.0.1", port, ae_title="MEDSIGHT")
        if not association.is_established:
            return
        try:
            association.send_c_store(handle.name)
        except Exception:  # the SCU itself cannot make sense of the file: not our concern
            pass
        finally:
            association.release()


@pytest.mark.timeout(time_limit(300))
@_settings(40)
@given(data=mutated([CT, MR]))
def test_the_listener_survives_mutated_c_stores(
    listener: tuple[InstanceStore, int], data: bytes
) -> None:
    _, port = listener
    _store_bytes(port, data)
    assert _answers(port)


def _associate_rq() -> bytes:
    """A real A-ASSOCIATE-RQ as pynetdicom encodes it (for raw-socket mutations)."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
    from pynetdicom.transport import AddressInformation

    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "FUZZ"
    primitive.called_ae_title = "MEDSIGHT"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    context = build_context(CTImageStorage)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    primitive.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


@pytest.mark.timeout(time_limit(300))
@_settings(60)
@given(data=mutated([_associate_rq()]), tail=st.binary(max_size=64))
def test_the_listener_survives_mutated_association_bytes(
    listener: tuple[InstanceStore, int], data: bytes, tail: bytes
) -> None:
    _, port = listener
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            connection.sendall(data + tail)
            connection.settimeout(0.1)
            connection.recv(4096)
        except OSError:
            pass  # closed or timed out on our side: either is fine
    assert _answers(port)
