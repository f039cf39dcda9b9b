"""A real PostgreSQL server for the service tests (Debian postgresql, started here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests._net import free_port


@pytest.fixture(scope="session")
def postgres_url():
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        pytest.fail("Debian postgresql is needed; scripts/test installs it")
    bindir = binaries[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="medsight-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "medsight"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = subprocess.Popen(
        [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(folder),
            "-h",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while True:
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        )
        if ready.returncode == 0:
            break
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            pytest.fail("PostgreSQL did not start")
        time.sleep(0.2)
    subprocess.run(
        [
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "medsight",
            "medsight",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield f"postgresql+psycopg://medsight@127.0.0.1:{port}/medsight"
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """None (SQLite in WAL mode in the data folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    from sqlalchemy import create_engine, text

    base = request.getfixturevalue("postgres_url")
    name = f"t{time.time_ns()}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"
