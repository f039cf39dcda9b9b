"""The Task specification: what a task accepts, how it runs, and what its outputs mean.

A task folder holds ``task.toml`` (this schema), the weights files it names, and
``MODEL_CARD.md``. Everything here is a value: no code, no expressions, no string sigils.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: 2 declares the input gate's fitted files (``[gate]``) and ``[[measurement_flags]]``;
#: schema 1 files still load (they run with the tag and pixel checks only)
TASK_SCHEMA_VERSION = 2

#: MONAI networks a task may name, with the argument names it may pass
NETWORK_ALLOW_LIST: dict[str, str] = {
    "DenseNet": "monai.networks.nets.DenseNet",
    "DenseNet121": "monai.networks.nets.DenseNet121",
    "UNet": "monai.networks.nets.UNet",
    "BasicUNet": "monai.networks.nets.BasicUNet",
    # a U-Net's encoder with a linear head (starts from a trained U-Net: training.init_from)
    "UNetEncoderClassifier": "medsight.models.encoder_classifier.UNetEncoderClassifier",
    # MONAI's RetinaNet with its anchors and box selection (kind = "detection")
    "BoxDetector": "medsight.models.detector.BoxDetector",
    # a TorchScript file from a MONAI bundle: loaded with torch.jit.load, no arguments
    "TorchScript": "torch.jit.load",
}

Literal_ = str | int | float | bool
Argument = Literal_ | list[Literal_] | list[list[Literal_]]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(_Spec):
    """A coded concept as highdicom expects it (SNOMED CT 'SCT' or DICOM 'DCM')."""

    value: str
    scheme: str
    meaning: str


class Acceptance(_Spec):
    """Intended-use checks. ``refuse`` checks stop the analysis; ``review`` checks let it run
    and mark the result NEEDS_REVIEW with the reason."""

    spatial_dims: Literal[2, 3]
    modalities: list[str] = Field(default_factory=list)  # empty: any (e.g. photographs)
    # an input with no modality (a JPEG, a NIfTI): refuse, run with NEEDS_REVIEW, or accept
    unknown_modality: Literal["refuse", "review", "accept"] = "refuse"
    sop_class_uids: list[str] = Field(default_factory=list)
    photometric: list[str] = Field(default_factory=list)
    channels: list[int] = Field(default_factory=list)
    max_bits_stored: int | None = None
    # input gate (medsight.gate): a known value outside these withholds the finding, an
    # unknown one adds a review reason
    body_parts: list[str] = Field(default_factory=list)
    view_positions: list[str] = Field(default_factory=list)
    sexes: list[Literal["M", "F", "O"]] = Field(default_factory=list)
    age_years: tuple[float, float] | None = None
    min_size: list[int] | None = None  # spatial (i, j[, k])
    max_size: list[int] | None = None
    # the in-plane pixel spacing (mm) the task is for, low and high: a known spacing outside
    # withholds (a 0.7 mm radiograph is not a histology tile at 0.5 um)
    spacing_mm: tuple[float, float] | None = None


class Display(_Spec):
    """How stored values map to the appearance the model was trained on (never implicit)."""

    window: Literal["dicom", "minmax", "percentile", "fixed", "range", "none"] = "minmax"
    center_width: tuple[float, float] | None = None  # for window = "fixed" (DICOM linear)
    value_range: tuple[float, float] | None = None  # for window = "range": [low, high] -> [0, 1]
    clip: bool = True  # for window = "range"
    percentiles: tuple[float, float] = (0.5, 99.5)  # for window = "percentile"
    monochrome1: Literal["invert", "keep"] = "invert"
    color: Literal["grayscale", "rgb", "keep"] = "keep"

    @model_validator(mode="after")
    def _fixed_needs_values(self) -> Display:
        if self.window == "fixed" and self.center_width is None:
            raise ValueError("display.window = 'fixed' needs center_width = [center, width]")
        if self.window == "range" and self.value_range is None:
            raise ValueError("display.window = 'range' needs value_range = [low, high]")
        return self


class Preprocessing(_Spec):
    reorient: str | None = None  # e.g. "RAS" (3D only)
    # resample to this spacing (mm) before the network; a 3D task may give two values, the
    # in-plane spacing of the stored grid's first two axes, and keep the slice axis as it is
    # (thick-slice cine MR)
    spacing: list[Annotated[float, Field(gt=0.0)]] | None = None
    # an image whose spacing is unknown: "review" (the gate asks for review; the resampling
    # would assume the stored grid), or "stored_grid" (the network runs on the stored voxel
    # grid, as a model trained on such data did; measurements come out in voxels)
    unknown_spacing: Literal["review", "stored_grid"] = "review"
    normalize: Literal["none", "zscore", "zscore_nonzero", "unit"] = "unit"
    resize: list[int] | None = None  # whole-image networks: resize to this size (i, j[, k])
    patch_size: list[int] | None = None  # sliding-window networks: window size
    overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    batch_size: Annotated[int, Field(ge=1)] = 4
    pad_to_multiple: int | None = None
    # whole-image networks: per-image histogram equalisation (exposure and contrast of each
    # acquisition batch stop telling classes apart), and the outer band (fraction of each
    # side) set to zero, where burnt-in text and markers sit
    equalize: bool = False
    border_mask: Annotated[float, Field(ge=0.0, lt=0.25)] = 0.0
    # whole-image networks: each channel minus its local mean (a Gaussian of this fraction
    # of the image's shorter side), so small lesions stand out whatever the illumination
    # (the fundus photograph standardisation of Graham, Kaggle DR 2015); black (unlit)
    # pixels stay black
    local_contrast: Annotated[float, Field(gt=0.0, lt=0.5)] | None = None

    @model_validator(mode="after")
    def _whole_image_only(self) -> Preprocessing:
        if (self.equalize or self.border_mask or self.local_contrast) and self.resize is None:
            raise ValueError(
                "equalize, border_mask and local_contrast need a whole-image network (resize)"
            )
        return self


class Network(_Spec):
    name: str
    architecture: str
    weights: str  # file name inside the task folder
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    arguments: dict[str, Argument] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _allowed(self) -> Network:
        if self.architecture not in NETWORK_ALLOW_LIST:
            allowed = ", ".join(sorted(NETWORK_ALLOW_LIST))
            raise ValueError(f"architecture {self.architecture!r} is not one of: {allowed}")
        if "/" in self.weights or self.weights.startswith("."):
            raise ValueError(f"weights must be a file name inside the task folder: {self.weights}")
        return self


MeasurementName = Literal[
    "volume",
    "volume_mm3",
    "surface_area",
    "extents",
    "recist",
    "intensity",
    "area",
    "asymmetry",
    "border_irregularity",
    "vessel_area_fraction",
    "vessel_tortuosity",
    "nuclei",
]


class Output(_Spec):
    """One class (classification) or segment (segmentation) and its coded meaning."""

    name: str
    index: int = Field(ge=0)
    code: Code
    critical: bool = False  # a flag on this output is a critical finding (triage)
    # a flagged critical finding at or above this calibrated probability is STAT, else URGENT
    stat_probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    # segmentation: what to measure on this segment (see medsight.findings)
    measurements: list[MeasurementName] = Field(default_factory=list)
    # sigmoid classification: outputs a flag on this one implies by definition (severe DR is
    # referable): their findings are flagged too, saying why, so that no result contradicts
    implies: list[str] = Field(default_factory=list)


class Inference(_Spec):
    """How the network is run by default (``medsight analyze --tta/--no-tta`` overrides)."""

    # average over flips (the image and its flip along each of ``tta_axes``): the task's
    # evidence was measured this way
    tta: bool = False
    # the spatial axes a flip may go along: those training flipped (a hippocampus model
    # trained with left-right flips only swaps anterior and posterior when flipped along the
    # other axes: out-of-fold Dice 0.878 / 0.863 fell to 0.732 / 0.689). None: every axis
    # (versions from before the field); training writes it.
    tta_axes: list[int] | None = None

    def flip_axes(self, spatial_dims: int) -> list[int]:
        """The axes TTA flips along for an image of ``spatial_dims`` axes."""
        axes = range(spatial_dims) if self.tta_axes is None else self.tta_axes
        return [axis for axis in axes if axis < spatial_dims]

    @field_validator("tta_axes")
    @classmethod
    def _axes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (
            len(set(value)) != len(value) or any(not 0 <= a < 3 for a in value)
        ):
            raise ValueError(f"tta_axes must be distinct spatial axes 0, 1 or 2, got {value}")
        return value


class PostProcessing(_Spec):
    largest_component: bool = False
    fill_holes: bool = False
    min_size_voxels: int = 0
    # cavity -> wall, e.g. {left_ventricle = "left_ventricle_myocardium"}: in each slice,
    # whatever the wall and cavity together enclose becomes cavity (papillary muscles and
    # gaps inside the ring), so the wall surrounds its cavity
    enclosed_cavities: dict[str, str] = Field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(
            self.largest_component
            or self.fill_holes
            or self.min_size_voxels
            or self.enclosed_cavities
        )


class OperatingPoint(_Spec):
    output: str
    threshold: float = Field(ge=0.0, le=1.0)
    # the sensitivity asked for when the point was locked; ``sensitivity`` is what was achieved
    target_sensitivity: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    note: str = ""


ClaimMetric = Literal[
    "roc_auc", "sensitivity", "specificity", "ece", "dice", "f1", "pixel_auc", "aji"
]
#: metrics where lower is better; every other claim is a floor
LOWER_IS_BETTER = frozenset({"ece"})


class Claim(_Spec):
    """A figure the model card states, re-checked by ``medsight evaluate`` on new data."""

    metric: ClaimMetric
    value: float
    low: float | None = None  # the 95% CI, where the card gives one
    high: float | None = None
    operating_point: str | None = None  # sensitivity / specificity: at which locked point
    # dice / f1 / pixel_auc / aji: of which segment; roc_auc of a sigmoid task: of which output
    segment: str | None = None
    measured_on: str  # the data and how it was held out

    @model_validator(mode="after")
    def _ordered(self) -> Claim:
        if (
            self.low is not None
            and self.high is not None
            and not (self.low <= self.value <= self.high)
        ):
            raise ValueError(f"claim {self.metric}: value {self.value} outside its CI")
        if self.metric in ("sensitivity", "specificity") and not self.operating_point:
            raise ValueError(f"claim {self.metric}: name its operating_point")
        return self


class Calibration(_Spec):
    """The temperature applied to the logits by the Predictor: one for a softmax head; with
    ``activation = "sigmoid"`` each output may have its own (``temperatures``, by name)."""

    temperature: Annotated[float, Field(gt=0.0)] = 1.0
    temperatures: dict[str, Annotated[float, Field(gt=0.0)]] = Field(default_factory=dict)
    fitted_on: str = ""


class Ordinal(_Spec):
    """An ordinal grade read from cumulative outputs (``activation = "sigmoid"``): the k-th
    name in ``cumulative`` is the probability that the grade is at least k. The grade's
    distribution follows from their differences (made non-increasing first), and the grade
    given is the median one: the highest k whose P(grade >= k) is at least 0.5."""

    name: str  # e.g. "dr_grade"
    code: Code  # what is graded (the finding that carries the grade)
    levels: list[str] = Field(min_length=2)  # what each grade 0..K means, in order
    cumulative: list[str] = Field(min_length=1)  # outputs P(grade >= 1) ... P(grade >= K)

    @model_validator(mode="after")
    def _sized(self) -> Ordinal:
        if len(self.levels) != len(self.cumulative) + 1:
            raise ValueError(
                f"ordinal {self.name}: {len(self.levels)} levels need "
                f"{len(self.levels) - 1} cumulative outputs, not {len(self.cumulative)}"
            )
        return self


class Chain(_Spec):
    """A classifier run on the crop around a segment found by a first network of the task
    (e.g. a lesion mask, then a lesion-level classifier)."""

    segmenter: str  # network name, run first on the whole image
    classifier: str  # network name, run on the crop
    segment_index: Annotated[int, Field(ge=1)] = 1
    margin: Annotated[float, Field(ge=0.0)] = 0.1  # of the box size, added on each side
    display: Display = Display()
    preprocessing: Preprocessing


_SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class GateFile(_Spec):
    """A fitted file of the input gate, inside the task folder, with its SHA-256."""

    file: str
    sha256: _SHA256

    @model_validator(mode="after")
    def _inside(self) -> GateFile:
        if "/" in self.file or self.file.startswith("."):
            raise ValueError(f"gate file must be a file name inside the task folder: {self.file}")
        return self


class OodGate(GateFile):
    """Out-of-distribution score from the task's own network features (medsight.gate.ood)."""

    method: Literal["mahalanobis"] = "mahalanobis"
    threshold: Annotated[float, Field(gt=0.0)]
    false_rejection_target: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.02
    # measured on in-distribution images not used to set the threshold
    false_rejection_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    fitted_on: str = ""


class GateSpec(_Spec):
    """The input gate's task-specific parts (the fixed tag and pixel checks need none)."""

    # what an in-distribution image is, for the clinician's reason ("this image does not
    # look like <expects>"), e.g. "a paediatric frontal chest radiograph"
    expects: str = ""
    photo: Literal["fundus", "skin"] | None = None  # photograph quality checks
    # projection radiographs: when the OOD check fails, say whether the image looks rotated
    # or inverted (the OOD score of the turned or inverted image is far lower)
    orientation: bool = False
    reference: GateFile | None = None  # reference.json: statistics and score distributions
    ood: OodGate | None = None


class MeasurementFlag(_Spec):
    """A measurement that sets the study's priority, e.g. an ejection fraction below 35%."""

    measurement: str
    structure: str = ""  # the segment or group it is measured on ("" any)
    threshold: float
    direction: Literal["above", "below"]
    level: Literal["STAT", "URGENT", "ROUTINE"]
    reason: str = ""


class CardiacFunction(_Spec):
    """Which segments a cine's phases are measured on for ventricular function: volumes at
    end-diastole and end-systole, stroke volumes, ejection fractions and myocardial mass
    (a study finding derived from the phases' analyses, medsight.findings.cardiac)."""

    left_ventricle: str  # the LV cavity (blood pool)
    right_ventricle: str | None = None
    myocardium: str | None = None  # LV myocardium, for the mass at end-diastole
    myocardial_density: Annotated[float, Field(gt=0.0)] = 1.05  # g/mL


class WorseSide(_Spec):
    """A patient-level result from both sides (eyes) of one study: each side's from its worst
    gradable image, the patient's from the worse side (medsight.findings.screening)."""

    name: str  # the study finding's name, e.g. "patient_referable_dr"
    code: Code
    outputs: list[str] = Field(min_length=1)  # taken as the highest probability
    sides: list[Annotated[str, Field(pattern="^[RL]$")]] = Field(
        default_factory=lambda: ["R", "L"], min_length=1
    )


class Instances(_Spec):
    """Countable objects (nuclei) as instances: a network with an interior and a boundary
    class, its touching objects split by a watershed (``medsight.inference.instances``)."""

    interior: str  # the output whose pixels are object interiors, e.g. "nucleus"
    boundary: str  # the output marking each object's rim, e.g. "nucleus_boundary"
    # the watershed's seeds: each connected interior region ("interior"), or the peaks of
    # the foreground's distance transform ("distance")
    seeds: Literal["interior", "distance"] = "interior"
    # objects smaller than this (square micrometres where the spacing is known, else
    # pixels at the model's resolution) are dropped as debris
    min_area_um2: Annotated[float, Field(ge=0.0)] = 0.0
    # the model's resolution, micrometres per pixel (recorded; preprocessing.spacing is the
    # same in millimetres and is what resamples an input)
    mpp: Annotated[float, Field(gt=0.0)] | None = None


class Detection(_Spec):
    """Boxes (kind = "detection"): how flipped views are fused and which boxes are findings.
    The network keeps boxes above its own ``score_threshold`` (its arguments); the image's
    probability of the class is its most confident anchor, calibrated by the task's
    temperature, and is what the operating points flag."""

    # TTA: boxes of the flipped views overlapping this much are one box (weighted box fusion)
    fusion_iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.55
    # boxes reported as findings: at least this score (after fusion)
    finding_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3


class TaskSpec(_Spec):
    schema_version: Literal[1, 2] = 1
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    version: str
    title: str
    kind: Literal["classification", "segmentation", "detection"]
    intended_use: str
    acceptance: Acceptance
    display: Display = Display()
    preprocessing: Preprocessing = Preprocessing()
    networks: list[Network] = Field(min_length=1)
    outputs: list[Output] = Field(min_length=1)
    inference: Inference = Inference()
    postprocessing: PostProcessing = PostProcessing()
    calibration: Calibration = Calibration()
    # classification: "softmax", one class per image; "sigmoid", each output a probability
    # of its own (several findings of one image, an ordinal grade's cumulative outputs)
    activation: Literal["softmax", "sigmoid"] = "softmax"
    ordinal: list[Ordinal] = Field(default_factory=list)
    operating_points: dict[str, OperatingPoint] = Field(default_factory=dict)
    explanation: Literal["gradcam", "none"] = "none"
    # the layer Grad-CAM weighs; default per architecture (medsight.inference.explain)
    explanation_layer: str | None = None
    chain: Chain | None = None
    # networks whose outputs are averaged (logits: the geometric mean of their probabilities),
    # e.g. the k fold models of a cross-validation; the first is the one Grad-CAM explains
    ensemble: list[str] = Field(default_factory=list)
    # named unions of segments measured together, e.g. total = anterior + posterior
    segment_groups: dict[str, list[str]] = Field(default_factory=dict)
    gate: GateSpec = GateSpec()
    measurement_flags: list[MeasurementFlag] = Field(default_factory=list)
    cardiac_function: CardiacFunction | None = None
    worse_side: WorseSide | None = None
    instances: Instances | None = None
    detection: Detection | None = None
    claims: list[Claim] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.schema_version < 2 and (
            self.gate.ood or self.gate.reference or self.measurement_flags
        ):
            raise ValueError(
                "gate files and measurement_flags need schema_version = 2 in task.toml"
            )
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError("output names must be unique")
        if (self.kind == "detection") != (self.detection is not None):
            raise ValueError('kind = "detection" and a [detection] section go together')
        two_d = self.acceptance.spatial_dims == 2
        if self.kind == "detection" and (len(self.outputs) != 1 or not two_d):
            raise ValueError("a detection task has one output (its class) and 2D images, for now")
        for point_name, point in self.operating_points.items():
            if point.output not in names:
                raise ValueError(
                    f"operating point {point_name!r} names unknown output {point.output!r}"
                )
        sigmoid_only = self.ordinal or self.calibration.temperatures
        if sigmoid_only and (self.activation != "sigmoid" or self.kind != "classification"):
            raise ValueError(
                "ordinal grades and per-output temperatures need a classification task with "
                'activation = "sigmoid"'
            )
        if self.activation == "sigmoid" and self.schema_version < 2:
            raise ValueError('activation = "sigmoid" needs schema_version = 2 in task.toml')
        unknown = [
            n
            for n in [
                *self.calibration.temperatures,
                *(c for o in self.ordinal for c in o.cumulative),
            ]
            if n not in names
        ]
        if unknown:
            raise ValueError(f"calibration or ordinal names unknown outputs {unknown}")
        for claim in self.claims:
            if claim.operating_point and claim.operating_point not in self.operating_points:
                raise ValueError(f"claim names unknown operating point {claim.operating_point!r}")
            if claim.segment and claim.segment not in names:
                raise ValueError(f"claim names unknown output {claim.segment!r}")
        if self.cardiac_function is not None:
            function = self.cardiac_function
            named = [function.left_ventricle, function.right_ventricle, function.myocardium]
            unknown = [n for n in named if n is not None and n not in names]
            if unknown or self.kind != "segmentation":
                raise ValueError(
                    f"cardiac_function needs segments of this task (unknown: {unknown})"
                )
        implied = [n for o in self.outputs for n in o.implies if n not in names]
        if implied:
            raise ValueError(f"outputs imply unknown outputs {implied}")
        if self.worse_side is not None:
            unknown = [n for n in self.worse_side.outputs if n not in names]
            if unknown or self.kind != "classification":
                raise ValueError(
                    f"worse_side needs outputs of a classification task (unknown: {unknown})"
                )
        if self.instances is not None:
            pair = [self.instances.interior, self.instances.boundary]
            unknown = [n for n in pair if n not in names]
            two_d = self.acceptance.spatial_dims == 2
            if unknown or self.kind != "segmentation" or len(set(pair)) != 2 or not two_d:
                raise ValueError(
                    "instances needs two different segments of a 2D segmentation task "
                    f"(unknown: {unknown})"
                )
            spacing = self.preprocessing.spacing
            if self.instances.mpp is not None and (
                spacing is None or any(abs(s * 1000 - self.instances.mpp) > 1e-9 for s in spacing)
            ):
                raise ValueError("instances.mpp must equal preprocessing.spacing in micrometres")
        pairs = self.postprocessing.enclosed_cavities.items()
        unknown = [n for pair in pairs for n in pair if n not in names]
        if unknown:
            raise ValueError(f"postprocessing.enclosed_cavities names unknown outputs {unknown}")
        for group, members in self.segment_groups.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"segment group {group!r} names unknown outputs {unknown}")
        network_names = [n.name for n in self.networks]
        if len(set(network_names)) != len(network_names):
            raise ValueError("network names must be unique")
        if self.ensemble:
            unknown = [n for n in self.ensemble if n not in network_names]
            if unknown or len(set(self.ensemble)) < 2 or self.chain is not None:
                raise ValueError(
                    "ensemble must name two or more of the task's networks, without a chain"
                    + (f" (unknown: {unknown})" if unknown else "")
                )
        if self.chain is not None:
            for role in (self.chain.segmenter, self.chain.classifier):
                if role not in network_names:
                    raise ValueError(f"chain names unknown network {role!r}")
            if self.kind != "classification":
                raise ValueError("a chain ends in a classifier: kind must be 'classification'")
        prep = self.preprocessing
        if self.kind == "segmentation" and prep.patch_size is None and prep.resize is None:
            raise ValueError("a segmentation task needs preprocessing.patch_size or resize")
        if "research use only" not in self.intended_use.lower():
            raise ValueError("intended_use must say 'research use only, not for diagnostic use'")
        return self
