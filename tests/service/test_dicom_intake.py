"""The DICOM listener with the instance store: real dcmtk echoscu/storescu against it."""

from __future__ import annotations

import shutil
import subprocess

import pydicom
import pytest

from medsight.errors import InvalidInputError
from medsight.service import InstanceStore
from medsight.service.intake import DicomListener
from tests._net import free_port
from tests.reporting._sources import totalseg_ct_with_uids


@pytest.fixture
def listener(tmp_path):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk is needed; scripts/test installs it")
    store = InstanceStore(tmp_path / "data")
    server = DicomListener(store, allowed_calling_aets=["MODALITY"])
    port = free_port()
    server.start("127.0.0.1", port)
    yield store, port
    server.stop()


def send(port: int, files, calling: str = "MODALITY") -> subprocess.CompletedProcess:
    command = ["storescu", "-xv", "-aet", calling, "-aec", "MEDSIGHT", "127.0.0.1", str(port)]
    return subprocess.run(
        command + [str(f) for f in files], capture_output=True, text=True, timeout=120
    )


def assert_echo(port: int) -> None:
    """A C-ECHO from dcmtk echoscu is answered."""
    echo = subprocess.run(
        ["echoscu", "-aet", "MODALITY", "-aec", "MEDSIGHT", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert echo.returncode == 0, echo.stderr


@pytest.mark.timeout(300)
def test_instances_are_stored_once_and_durably(listener, tmp_path):
    store, port = listener
    assert_echo(port)
    files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))
    first = send(port, files)
    assert first.returncode == 0, first.stdout + first.stderr
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    stored = store.instances_of(study)
    assert len(stored) == len(files) == store.count()
    originals = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}
    for instance in stored:
        assert store.verify(instance)
        original = pydicom.dcmread(originals[instance.sop_instance_uid])
        assert pydicom.dcmread(instance.path).PixelData == original.PixelData
        assert instance.calling_ae == "MODALITY"
    again = send(port, files[:5])  # a resend is acknowledged, not stored twice
    assert again.returncode == 0, again.stderr
    assert store.count() == len(files)


@pytest.mark.timeout(120)
def test_a_calling_ae_outside_the_allow_list_is_rejected(listener, tmp_path):
    store, port = listener
    files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:2]
    refused = send(port, files, calling="INTRUDER")
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    assert store.count() == 0


def test_an_instance_without_uids_is_refused(tmp_path):
    store = InstanceStore(tmp_path / "data")
    with pytest.raises(InvalidInputError, match="SOPInstanceUID"):
        store.store(b"x", {"SOPInstanceUID": "", "StudyInstanceUID": "1.2"}, "MODALITY")
    assert store.count() == 0


@pytest.mark.timeout(120)
def test_dicom_over_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate")
    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    store = InstanceStore(tmp_path / "data")
    server = DicomListener(store)
    port = free_port()
    server.start("127.0.0.1", port, tls_certificate=certificate, tls_key=key)
    try:
        files = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:2]
        base = ["storescu", "-xv", "-aec", "MEDSIGHT", "127.0.0.1", str(port)]
        plain = subprocess.run(base + [str(f) for f in files], capture_output=True, timeout=60)
        assert plain.returncode != 0 and store.count() == 0  # TLS only
        secure = subprocess.run(
            [
                "storescu",
                "+tla",
                "+cf",
                str(certificate),
                "-xv",
                "-aec",
                "MEDSIGHT",
                "127.0.0.1",
                str(port),
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert secure.returncode == 0, secure.stdout + secure.stderr
        assert store.count() == 2
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_an_instance_over_a_resource_limit_is_refused_at_c_store(listener, tmp_path):
    """Refused while the sender still holds it (status C000 with the limit in ErrorComment);
    the good instance sent with it is stored."""
    from tests._hostile import huge_declared, many_frames

    store, port = listener
    good = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[:1]
    hostile = [huge_declared(tmp_path / "huge.dcm"), many_frames(tmp_path / "frames.dcm")]
    command = ["storescu", "-d", "-nh", "-xv", "-aet", "MODALITY", "-aec", "MEDSIGHT"]
    sent = subprocess.run(
        [*command, "127.0.0.1", str(port), *map(str, [*hostile, *good])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    words = sent.stdout + sent.stderr
    assert words.count("0xc000: Error: Cannot understand") == 2, words
    assert "over the limit frame_pixels" in words and "over the limit frames" in words
    assert store.count() == 1
