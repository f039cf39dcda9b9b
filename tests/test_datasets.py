"""The real-data gate: skip on a user's machine, fail under CI=true, honour MEDSIGHT_DATA."""

from __future__ import annotations

import pytest

from medsight.datasets import repository_root, shared_data_dir
from tests.conftest import require_data


def test_default_is_shared_data_beside_the_repository(monkeypatch):
    monkeypatch.delenv("MEDSIGHT_DATA", raising=False)
    assert shared_data_dir() == (repository_root() / ".." / "shared" / "data").resolve()
    assert (repository_root() / "pyproject.toml").is_file()


def test_missing_data_skips_for_users_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_data("kermany-cxr")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have the real data"):
        require_data("kermany-cxr")
    (tmp_path / "kermany-cxr").mkdir()
    assert require_data("kermany-cxr") == tmp_path / "kermany-cxr"
