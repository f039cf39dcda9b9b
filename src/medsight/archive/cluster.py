"""The Ray side of an archive run: joining or starting a cluster, and the analysis actors.

Each actor is one long-lived worker process that loads a task's networks once and keeps
them for every study it is given (the process pool of ``analyze --jobs`` does the same on
one host). Actors write each study's outputs straight to DEST, which every node must see
at the same path (a shared file system); they never append to provenance.jsonl, which only
the driver writes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from medsight.analysis import AnalysisOptions, StudyInput, StudyOutcome
from medsight.errors import ConfigurationError, MissingDependencyError

__all__ = ["connect", "make_actor_class"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "analyze-archive needs Ray: pip install 'medsight[distributed]'"
        ) from exc
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds on an address nothing listens at (ray.init would retry for a
    minute or more)."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigurationError(
            f"the Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)"
        ) from None
    try:
        with socket.create_connection((host, number), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): "
            "is `ray start --head` running there, and is the port open to this machine?"
        ) from exc


def connect(address: str | None, *, cpus: int | None = None) -> dict[str, float]:
    """Join the cluster at ``address``, or start a local Ray instance on this machine's
    cores (``cpus``: fewer). Returns the cluster's resources."""
    ray = _ray()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        _reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigurationError(f"cannot join the Ray cluster at {address} ({exc})") from exc
    else:
        ray.init(
            num_cpus=cpus or os.cpu_count() or 1,
            include_dashboard=False,
            # the object store holds only study descriptions and outcomes: keep /dev/shm free
            object_store_memory=128 * 1024 * 1024,
            log_to_driver=False,
            logging_level="ERROR",
        )
    return dict(ray.cluster_resources())


def make_actor_class(cpus_per_actor: float) -> Any:
    """The Ray actor class, with its CPU share (Ray imports this module on each worker)."""
    ray = _ray()

    @ray.remote(num_cpus=cpus_per_actor, max_restarts=0)
    class StudyAnalyzer:
        """A worker that keeps its loaded tasks across studies."""

        def __init__(self, options: AnalysisOptions) -> None:
            import torch

            from medsight.analysis import TaskSource

            threads = max(1, int(cpus_per_actor))
            torch.set_num_threads(threads)
            options.threads = threads
            self.options = options
            self.tasks = TaskSource(options)

        def ready(self) -> str:
            return f"{socket.gethostname()}:{os.getpid()}"

        def analyze(self, study: StudyInput, dest: str) -> StudyOutcome:
            from medsight.analysis import analyze_study

            return analyze_study(
                study, Path(dest), self.options, tasks=self.tasks, record_provenance=False
            )

    return StudyAnalyzer
