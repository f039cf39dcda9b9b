"""Typed training configuration (TOML or YAML), saved inside every checkpoint."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from medsight.errors import ConfigurationError

__all__ = [
    "ClassFolders",
    "CocoBoxes",
    "DataConfig",
    "GroupRule",
    "ImageMaskFolders",
    "Manifest",
    "Npz",
    "TrainConfig",
    "load_config",
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_suffixes() -> list[str]:
    return [".jpeg", ".jpg", ".png"]


class ClassFolders(_Config):
    """One sub-folder per class. ``root`` is relative to the data folder (MEDSIGHT_DATA,
    default ../shared/data) unless absolute."""

    kind: Literal["class-folders"] = "class-folders"
    root: str
    classes: list[str] = Field(min_length=2)  # folder name of output index 0, 1, ...
    patient_pattern: str  # regular expression on the file name; group 1 is the patient id
    subgroup_pattern: str | None = None  # group 1 names a subgroup for the evaluation
    suffixes: list[str] = Field(default_factory=_default_suffixes)


class Manifest(_Config):
    """A CSV with one row per case. Paths are templates over the row's columns, e.g.
    ``image = "images/{image}.jpg"``, relative to ``root`` (default: the CSV's folder)."""

    kind: Literal["manifest"] = "manifest"
    csv: str  # relative to the data folder unless absolute
    root: str | None = None
    image: str = "{image}"
    label_column: str | None = None  # classification: the column holding the class
    # sigmoid classification (several outputs per image): output name -> column of 0 / 1
    # (empty: not graded, masked in the loss) ...
    targets: dict[str, str] = Field(default_factory=dict)
    # ... and ordinal name -> column of integer grades 0..K, which label its cumulative
    # outputs (grade >= k); empty masks them all
    ordinal_targets: dict[str, str] = Field(default_factory=dict)
    classes: list[str] | None = None  # classification: label values in output order
    # class value -> output class, to merge values (e.g. common and atypical naevus)
    label_map: dict[str, str] = Field(default_factory=dict)
    mask: str | None = None  # segmentation: the label-map template
    roi: str | None = None  # optional region of interest (e.g. a field-of-view mask)
    patient_column: str | None = None  # default: each image is its own patient
    split_column: str | None = None  # a predefined split: values "train" / "validation"
    subgroup_columns: list[str] = Field(default_factory=list)  # e.g. site, sex, device


class ImageMaskFolders(_Config):
    """Images and their masks in parallel folders, matched by a case id."""

    kind: Literal["image-mask-folders"] = "image-mask-folders"
    root: str
    images: str  # a glob under root, e.g. "images/*.tif"
    id_pattern: str = r"^([^.]+)"  # on the image file name; group 1 is the case id
    mask: str  # template with {id}, e.g. "1st_manual/{id}_manual1.gif"
    roi: str | None = None  # template with {id}, e.g. "mask/{id}_training_mask.gif"
    patient_pattern: str | None = None  # on the case id; default: each case is a patient


class Npz(_Config):
    """A MedMNIST-style ``.npz`` (``train_images``/``train_labels``, ``val_images``/
    ``val_labels``); its own train/validation split is used."""

    kind: Literal["npz"] = "npz"
    file: str
    classes: list[str] = Field(min_length=2)  # names of label values 0, 1, ...


class CocoBoxes(_Config):
    """Detection: a COCO file's boxes and the folder of its images (each relative to the
    data folder unless absolute), with an optional CSV of the images (an ``image`` column of
    file names) for groups, subgroups and exclusions."""

    kind: Literal["coco"] = "coco"
    annotations: str
    images: str
    labels: str | None = None
    # images sharing a value stay in one fold (e.g. near-duplicates); empty: its own group
    group_column: str | None = None
    subgroup_columns: list[str] = Field(default_factory=list)
    # images left out of every model's training, still predicted and reported, e.g.
    # {hardware = ["1"]}: implants appear only on fractured images, a shortcut
    train_exclude: dict[str, list[str]] = Field(default_factory=dict)


def _data_kind(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "class-folders"))
    return str(getattr(value, "kind", "class-folders"))


DataConfig = Annotated[
    Annotated[ClassFolders, Tag("class-folders")]
    | Annotated[Manifest, Tag("manifest")]
    | Annotated[ImageMaskFolders, Tag("image-mask-folders")]
    | Annotated[Npz, Tag("npz")]
    | Annotated[CocoBoxes, Tag("coco")],
    Discriminator(_data_kind),
]


class GroupRule(_Config):
    """Cases whose file name matches ``pattern`` (and whose number, the pattern's group 1,
    lies in ``numbers``) form the group ``name``; the first matching rule wins."""

    name: str = Field(min_length=1)
    pattern: str
    numbers: tuple[int, int] | None = None  # inclusive range of the pattern's group 1

    @model_validator(mode="after")
    def _compiles(self) -> GroupRule:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"group {self.name}: invalid pattern ({exc})") from exc
        if self.numbers is not None and compiled.groups < 1:
            raise ValueError(f"group {self.name}: numbers need a pattern with a group")
        return self


class SplitConfig(_Config):
    # the random patient-level validation share; with folds or groups, the share of each
    # fold's training patients kept aside to choose the epoch (never the held-out fold)
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.15
    seed: int = 0
    # k-fold cross-validation: operating point and temperature from the out-of-fold
    # predictions, then one model refitted on every case
    folds: Annotated[int, Field(ge=3, le=20)] | None = None
    # group-held-out validation: each group is held out in turn (acquisition batch, site,
    # device), by file-name rules or a manifest column; the operating point and temperature
    # are locked on the pooled held-out predictions
    groups: list[GroupRule] = Field(default_factory=list)
    group_column: str | None = None
    groups_note: str = ""  # for the model card: what the groups do and do not simulate
    # a share of patients (stratified, seeded) kept from every step of training, gate fit and
    # choice: a final check nothing was tuned on (`medsight evaluate RECIPE --split holdback`)
    holdback_fraction: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0
    # with folds or groups: ship one model refitted on all cases, or the fold models as an
    # ensemble whose logits are averaged (no refit; each member exported to ONNX on its own)
    ship: Literal["refit", "ensemble"] = "refit"

    @model_validator(mode="after")
    def _one_scheme(self) -> SplitConfig:
        if self.groups and self.group_column:
            raise ValueError("give groups (file-name rules) or group_column, not both")
        if (self.groups or self.group_column) and self.folds:
            raise ValueError("give folds or groups, not both")
        if self.ship == "ensemble" and not (self.folds or self.groups or self.group_column):
            raise ValueError("ship = 'ensemble' needs folds or groups")
        return self

    @property
    def grouped(self) -> bool:
        return bool(self.groups or self.group_column)


class OptimConfig(_Config):
    epochs: Annotated[int, Field(ge=1)] = 5
    batch_size: Annotated[int, Field(ge=1)] = 32
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    # "cosine": the rate falls from learning_rate to 0 over the recipe's epochs (set per epoch,
    # so a resumed run, or a refit for fewer epochs, continues on the same curve)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    # classification imbalance: class-weighted loss, weighted sampling, or neither
    class_weighting: Literal["balanced", "sampler", "none"] = "balanced"
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"  # segmentation: always Dice+CE
    early_stopping_patience: Annotated[int, Field(ge=1)] = 3
    max_steps_per_epoch: Annotated[int, Field(ge=1)] | None = None  # for smoke tests
    augment: bool = True
    # "strong": wider rotation/scale/shift, gamma, contrast and noise (shortcut-resistant);
    # "fundus": any rotation, mirroring, exposure and white-balance changes (photographs);
    # "histology" (segmentation): quarter turns, and H&E stain jitter so that other labs'
    # staining is seen in training (medsight.training.stain)
    augment_strength: Literal["standard", "strong", "fundus", "histology"] = "standard"
    # segmentation: patches per epoch, share centred on foreground, axes safe to mirror
    # (never an axis whose sides carry different labels, e.g. anterior/posterior)
    steps_per_epoch: Annotated[int, Field(ge=1)] = 100
    foreground_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    flip_axes: list[int] = Field(default_factory=list)
    seed: int = 0
    threads: int | None = None


_Target = Annotated[float, Field(gt=0.0, le=1.0)]


class LockedPoint(_Config):
    """An operating point a sigmoid classifier locks on one output."""

    output: str
    target_sensitivity: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95


class EvaluationConfig(_Config):
    target_sensitivity: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    # sigmoid classification: the points to lock (name -> output and target), and on what:
    # each image, or each patient's worst image (e.g. a screening decision per patient from
    # both eyes: the patient's probability is the higher eye's)
    points: dict[str, LockedPoint] = Field(default_factory=dict)
    lock_on: Literal["image", "patient_worst"] = "image"
    # segmentation: accuracy targets the card reports as reached or missed, judged on the
    # evidence (out-of-fold) estimate: one value for every segment ({dice = 0.93}) or one per
    # segment ({dice = {anterior = 0.89, posterior = 0.88}})
    targets: dict[Literal["dice", "pixel_auc", "aji"], _Target | dict[str, _Target]] = Field(
        default_factory=dict
    )
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
    # tables merged into the base task's task.toml for this version, e.g.
    # [task.preprocessing] resize = [192, 192] or [task] explanation_layer = "..."; the key
    # network_arguments merges into the first network's arguments
    task: dict[str, Any] = Field(default_factory=dict)


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
        config = TrainConfig.model_validate(data)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigurationError(f"invalid training config: {problems}", path=path) from exc
        raise ConfigurationError(f"cannot parse training config ({exc})", path=path) from exc
    # task folders named relative to the recipe: a template (a task that has no shipped
    # version yet) or the version of another task whose weights training starts from
    updates = {}
    for key in ("base_task", "init_from"):
        named = getattr(config, key)
        folder = path.parent / named if named else None
        if folder is not None and (folder / "task.toml").is_file():
            updates[key] = str(folder.resolve())
    return config.model_copy(update=updates) if updates else config
