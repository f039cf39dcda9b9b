"""STOW-RS parts over a resource limit are refused in the response; the others are stored."""

from __future__ import annotations

from pathlib import Path

from medsight.service import InstanceStore
from medsight.service.intake.stow import receive_stow
from tests._hostile import deep_sequence, huge_declared
from tests.reporting._sources import totalseg_ct_with_uids


def _multipart(parts: list[bytes]) -> tuple[str, bytes]:
    boundary = "medsight-test-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body


def test_over_limit_parts_are_refused_with_the_limit_and_the_rest_stored(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "data")
    good = sorted(totalseg_ct_with_uids(tmp_path / "ct").glob("*.dcm"))[0]
    parts = [
        huge_declared(tmp_path / "huge.dcm").read_bytes(),
        deep_sequence(tmp_path / "deep.dcm").read_bytes(),
        good.read_bytes(),
    ]
    status, response = receive_stow(store, *_multipart(parts), "test")
    assert status == 202  # some stored, some failed
    assert len(response["00081199"]["Value"]) == 1
    comments = [item["00000902"]["Value"][0] for item in response["00081198"]["Value"]]
    assert comments[0].startswith("over the limit frame_pixels=")
    assert "nested" in comments[1]
    assert store.count() == 1
