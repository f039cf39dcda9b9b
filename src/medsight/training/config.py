"""Typed training configuration (TOML or YAML), saved inside every checkpoint."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medsight.errors import ConfigurationError

__all__ = ["TrainConfig", "load_config"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Config):
    """Where the cases come from. ``root`` is relative to the data folder (MEDSIGHT_DATA,
    default ../shared/data) unless absolute."""

    kind: Literal["class-folders"] = "class-folders"
    root: str
    classes: list[str] = Field(min_length=2)  # folder name of output index 0, 1, ...
    patient_pattern: str  # regular expression on the file name; group 1 is the patient id
    subgroup_pattern: str | None = None  # group 1 names a subgroup for the evaluation
    suffixes: list[str] = Field(default_factory=lambda: [".jpeg", ".jpg", ".png"])


class SplitConfig(_Config):
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.15
    seed: int = 0


class OptimConfig(_Config):
    epochs: Annotated[int, Field(ge=1)] = 5
    batch_size: Annotated[int, Field(ge=1)] = 32
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    class_weighting: Literal["balanced", "none"] = "balanced"
    early_stopping_patience: Annotated[int, Field(ge=1)] = 3
    max_steps_per_epoch: Annotated[int, Field(ge=1)] | None = None  # for smoke tests
    augment: bool = True
    seed: int = 0
    threads: int | None = None


class EvaluationConfig(_Config):
    target_sensitivity: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    prevalence: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None


class TrainConfig(_Config):
    """A training recipe: which task definition to train, on what, and how."""

    base_task: str  # a task name or folder whose task.toml is the template
    version: str
    # fine-tune: start from the weights of this trained task (name, name@version or folder)
    init_from: str | None = None
    data: DataConfig
    split: SplitConfig = SplitConfig()
    train: OptimConfig = OptimConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    data_source: str = ""  # for the model card: source, licence, citation


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError("training config not found", path=path)
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
        return TrainConfig.model_validate(data)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigurationError(f"invalid training config: {problems}", path=path) from exc
        raise ConfigurationError(f"cannot parse training config ({exc})", path=path) from exc
