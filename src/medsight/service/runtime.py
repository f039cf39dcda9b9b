"""Running the service: the refusal of default secrets outside development mode, and the
worker processes (each a separate OS process, restarted by the server if it dies, and
killed with the server so none is left holding leases without a parent)."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.analysis import AnalysisOptions
from medsight.errors import ConfigurationError
from medsight.service.auth import DEFAULT_PASSWORDS, Users
from medsight.service.events import configure_service_logging, log_event
from medsight.service.outbound import PacsTarget

__all__ = ["DEV_ADMIN", "WorkerConfig", "WorkerPool", "check_secrets"]

DEV_ADMIN = ("admin", "medsight")  # created only with --dev, and refused without it
MIN_WEBHOOK_SECRET = 16
logger = logging.getLogger(__name__)


def check_secrets(
    users: Users, *, dev: bool, webhook_url: str | None, webhook_secret: bytes
) -> None:
    """Refuse to serve with default or missing secrets, unless in development mode, where
    a development admin is created if there is no user at all."""
    if dev:
        if not users.names():
            users.add(DEV_ADMIN[0], "admin", DEV_ADMIN[1], dev=True)
            logger.warning(
                "development mode: created user %s with a default password", DEV_ADMIN[0]
            )
        return
    if not users.names():
        raise ConfigurationError(
            "no users yet: create an admin first (medsight users add NAME --role admin), "
            "or run with --dev for a throwaway development setup"
        )
    weak = users.users_with_default_passwords()
    if weak:
        raise ConfigurationError(
            f"user(s) {', '.join(weak)} have a default password; set a new one with "
            "medsight users add (or use --dev)"
        )
    if webhook_url:
        secret = webhook_secret.decode(errors="replace")
        if len(webhook_secret) < MIN_WEBHOOK_SECRET or secret.lower() in DEFAULT_PASSWORDS:
            raise ConfigurationError(
                f"the webhook signing secret is missing, a default, or shorter than "
                f"{MIN_WEBHOOK_SECRET} bytes (or use --dev)"
            )


def bind_http(host: str, port: int) -> socket.socket:
    """The HTTP listening socket, bound before anything else starts: a port in use is one
    clear error, never a traceback with the DICOM port left bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ConfigurationError(f"cannot listen on HTTP {host}:{port}: {exc.strerror}") from None
    listening.listen(128)
    listening.set_inheritable(True)
    return listening


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs (picklable: processes are spawned)."""

    data_dir: Path
    database_url: str | None
    lease_seconds: float
    quiet_seconds: float
    options: AnalysisOptions
    pacs: PacsTarget | None = None
    stow_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: bytes = b""
    ae_title: str = "MEDSIGHT"
    poll_seconds: float = 0.5


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def worker_main(config: WorkerConfig) -> None:
    from medsight.service.outbound import Outbound
    from medsight.service.store import InstanceStore
    from medsight.service.worker import Worker

    _die_with_parent()
    configure_service_logging()
    if config.options.threads:
        import torch

        torch.set_num_threads(config.options.threads)
    store = InstanceStore(config.data_dir, config.database_url, lease_seconds=config.lease_seconds)
    outbound = Outbound(
        store.engine,
        store.data_dir,
        pacs=config.pacs,
        stow_url=config.stow_url,
        webhook_url=config.webhook_url,
        webhook_secret=config.webhook_secret,
        calling_ae=config.ae_title,
    )
    worker = Worker(store, config.options, quiet_seconds=config.quiet_seconds, outbound=outbound)
    while True:
        if worker.run_once() is None:
            time.sleep(config.poll_seconds)


class WorkerPool:
    """``count`` worker processes; ``check`` restarts any that died."""

    def __init__(
        self, config: WorkerConfig, count: int, on_restart: Callable[[], Any] = lambda: None
    ) -> None:
        self.config = config
        self.on_restart = on_restart  # e.g. put the dead worker's lease back at once
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = [self._start() for _ in range(count)]

    def _start(self) -> Any:
        # not a daemon: a worker may start its own pool (parallel DICOM decoding); it still
        # dies with the server (PR_SET_PDEATHSIG)
        process = self.context.Process(target=worker_main, args=(self.config,), daemon=False)
        process.start()
        return process

    def check(self) -> None:
        for index, process in enumerate(self.processes):
            if not process.is_alive():
                log_event(
                    "worker-restarted",
                    logging.WARNING,
                    pid=process.pid,
                    exit_code=process.exitcode,
                )
                self.processes[index] = self._start()
                self.on_restart()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(timeout=10)
