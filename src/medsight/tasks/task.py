"""A loaded task: its spec, its folder, and the hashes that identify it in every result."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from medsight.errors import ModelLoadError, TaskDefinitionError
from medsight.tasks.spec import TaskSpec

__all__ = ["Task", "load_task", "sha256_file"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Task:
    """A task folder: ``task.toml``, the weights it names and ``MODEL_CARD.md``."""

    spec: TaskSpec
    folder: Path
    toml_sha256: str
    shipped: bool = False
    _verified: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def weights_available(self) -> bool:
        return all((self.folder / n.weights).is_file() for n in self.spec.networks)

    @property
    def weights_sha256(self) -> dict[str, str]:
        """Declared SHA-256 of each network's weights, by network name."""
        return {network.name: network.sha256 for network in self.spec.networks}

    @property
    def task_hash(self) -> str:
        """SHA-256 over task.toml and every declared weights hash (identifies the task)."""
        digest = hashlib.sha256(self.toml_sha256.encode())
        for network in self.spec.networks:
            digest.update(network.sha256.encode())
        for declared in self.gate_files.values():
            digest.update(declared.encode())
        return digest.hexdigest()

    @property
    def gate_files(self) -> dict[str, str]:
        """Declared SHA-256 of each fitted gate file, by role (``reference``, ``ood``)."""
        gate = self.spec.gate
        return {
            role: entry.sha256
            for role, entry in (("reference", gate.reference), ("ood", gate.ood))
            if entry is not None
        }

    def gate_path(self, role: str) -> Path:
        """A verified gate file (``reference`` or ``ood``), checked like the weights."""
        entry = getattr(self.spec.gate, role, None)
        if entry is None:
            raise TaskDefinitionError(f"task {self.id} declares no gate {role} file")
        path = self.folder / entry.file
        if not path.is_file():
            raise ModelLoadError(f"gate {role} file missing for task {self.id}", path=path)
        mismatch = f"gate {role} file does not match its SHA-256"
        return self._verified_file(f"gate:{role}", path, entry.sha256, mismatch)

    def weights_path(self, network_name: str) -> Path:
        """The verified weights file of a network (SHA-256 checked once per process)."""
        network = next((n for n in self.spec.networks if n.name == network_name), None)
        if network is None:
            raise TaskDefinitionError(f"task {self.id} has no network named {network_name!r}")
        path = self.folder / network.weights
        if not path.is_file():
            raise ModelLoadError(
                f"weights file missing for network {network.name!r} of task {self.id} "
                f"{self.version}; train it or install the task's weights",
                path=path,
            )
        mismatch = "weights do not match their SHA-256"
        return self._verified_file(network.name, path, network.sha256, mismatch)

    def _verified_file(self, key: str, path: Path, declared: str, mismatch: str) -> Path:
        """``path`` once its SHA-256 equals ``declared`` (hashed once per process)."""
        if self._verified.get(key) != declared:
            actual = sha256_file(path)
            if actual != declared:
                raise ModelLoadError(
                    f"{mismatch} (expected {declared[:12]}..., "
                    f"found {actual[:12]}...): the file is corrupted or was replaced",
                    path=path,
                )
            self._verified[key] = actual
        return path

    @property
    def model_card(self) -> str:
        card = self.folder / "MODEL_CARD.md"
        return card.read_text() if card.is_file() else ""


def load_task(folder: str | Path, *, shipped: bool = False) -> Task:
    """Load and validate ``folder/task.toml``; errors name the file and the field."""
    folder = Path(folder)
    path = folder / "task.toml" if folder.is_dir() else folder
    folder = path.parent
    if not path.is_file():
        raise TaskDefinitionError("no task.toml in the task folder", path=folder)
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskDefinitionError(f"invalid TOML ({exc})", path=path) from exc
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise TaskDefinitionError(f"invalid task: {problems}", path=path) from exc
    return Task(
        spec=spec, folder=folder, toml_sha256=hashlib.sha256(raw).hexdigest(), shipped=shipped
    )
