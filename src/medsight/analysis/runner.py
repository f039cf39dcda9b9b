"""Analyse one study: choose tasks, predict, write result.json, masks, overlays, provenance."""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsight.analysis.devices import device_key
from medsight.analysis.inputs import ImageSource, StudyInput, with_stated_spacing
from medsight.analysis.memory import check_estimate, memory_guard
from medsight.analysis.outputs import (
    DEFAULT_OUTPUTS,
    wants_heatmap,
    wants_overlay,
    write_dicom_outputs,
)
from medsight.analysis.records import gate_record, input_record, prediction_record, task_record
from medsight.analysis.study_findings import DerivedResults, StudyFindings
from medsight.errors import MedsightError, NoMatchingTaskError
from medsight.findings import Finding, findings_from_prediction, triage
from medsight.gate import GateResult, InputGate
from medsight.image import Image
from medsight.inference import Prediction, Predictor
from medsight.reporting import RESULT_SCHEMA_VERSION, append_provenance
from medsight.reporting.html_report import write_html_report
from medsight.tasks import Task, discover_tasks, load_named_task, select_task
from medsight.tasks.selection import SelectionRule

logger = logging.getLogger(__name__)

__all__ = ["AnalysisOptions", "StudyOutcome", "TaskSource", "analyze_study"]

DISCLAIMER = "research use only, not for diagnostic use"
#: errors writing the outputs (full or read-only disk): no later study can be written either
OUT_OF_ROOM = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})


@dataclass
class AnalysisOptions:
    task: str = "auto"  # a task name, "name@version", a task folder, or "auto"
    tasks_dirs: list[Path] = field(default_factory=list)
    backend: str = "torch"
    tta: bool | None = None  # None: each task's own default ([inference] tta)
    slide_level: int | None = None
    rules: list[SelectionRule] | None = None
    rules_version: str = ""  # the site's routing rules version, recorded with each choice
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    include_identifiers: bool = False  # patient identifiers in result.json / report.html
    threads: int | None = None  # ONNX Runtime threads per network (None: one per core)
    # --max-memory: the resident memory one analysis may reach (bytes; None: no limit)
    max_memory: int | None = None
    # keys the device hash in result.json (input.device); empty: OUT/.device_key
    device_key: bytes = b""
    # --mpp: the pixel spacing (mm) of 2D images whose files state none (histology tiles)
    pixel_spacing_mm: float | None = None
    # --roi: a whole slide's region of interest (a shapely geometry in level-0 pixels)
    slide_roi: Any = None
    # the site's care setting and the findings urgent in it (site rules' [triage])
    site_setting: str = ""
    urgent_findings: tuple[str, ...] = ()


@dataclass
class StudyOutcome:
    key: str
    label: str
    result_path: Path | None
    analyses: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    priority: dict[str, Any] | None = None
    provenance: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # files of the input set aside, and why

    @property
    def failed(self) -> bool:
        return not self.analyses

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return max((int(f["exit_code"]) for f in self.failures), default=2)


class TaskSource:
    """Tasks and predictors, loaded once per run and reused across studies."""

    def __init__(self, options: AnalysisOptions) -> None:
        self.options = options
        self._named: dict[str, Task] = {}
        self._catalog: list[Task] | None = None
        self._predictors: dict[str, Predictor] = {}
        self._gates: dict[str, InputGate] = {}

    def gate(self, task: Task) -> InputGate:
        return self._gates.setdefault(task.task_hash, InputGate(task))

    def named(self, name: str) -> Task:
        """A task by name, ``name@version`` or folder (loaded once; errors are the caller's
        to report: an unknown task exits 2, missing or corrupted weights 3)."""
        if name not in self._named:
            task = load_named_task(name, self.options.tasks_dirs)
            for network in task.spec.networks:
                task.weights_path(network.name)
            self._named[name] = task
        return self._named[name]

    def choose_named(self) -> Task:
        """The task named in the options."""
        return self.named(self.options.task)

    def check_requested(self, studies: list[StudyInput]) -> None:
        """Load every task the run and its studies name, so that a bad name fails before
        any study is analysed."""
        if self.options.task != "auto":
            self.choose_named()
        for name in sorted({s.task for study in studies for s in study.images if s.task}):
            self.named(name)

    def choose(self, image: Image, requested: str | None = None) -> tuple[Task, str, list[str]]:
        if requested:
            named = self.named(requested)
            return named, "named", [f"task named in the manifest: {named.id}"]
        if self.options.task != "auto":
            named = self.choose_named()
            return named, "named", [f"task named on the command line: {named.id}"]
        if self._catalog is None:
            self._catalog = discover_tasks(self.options.tasks_dirs).tasks
        selection = select_task(image, self._catalog, self.options.rules)
        reasons = list(selection.reasons)
        if self.options.rules is not None:
            reasons.insert(0, f"site routing rules version {self.options.rules_version}")
        return selection.task, "auto", reasons

    def predictor(self, task: Task) -> Predictor:
        key = task.task_hash
        if key not in self._predictors:
            self._predictors[key] = Predictor(
                task,
                backend=self.options.backend,  # type: ignore[arg-type]
                tta=self.options.tta,
                threads=self.options.threads,
                explain=wants_heatmap(self.options.outputs),
            )
        return self._predictors[key]


def _slug(text: str) -> str:
    """A file-name stem from an image's description, without its file suffix (the outputs
    add their own: ``case.nii.gz`` gives ``masks/01_case.nii.gz``, not ``.nii.nii.gz``)."""
    from medsight.io import NIFTI_SUFFIXES, RASTER_SUFFIXES
    from medsight.io.slide import SLIDE_SUFFIXES

    lowered = text.lower()
    for suffix in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES, *SLIDE_SUFFIXES, ".dcm"):
        if lowered.endswith(suffix.lower()) and len(text) > len(suffix):
            text = text[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")[:48] or "image"


def _analyse_slide(
    source: ImageSource, tasks: TaskSource, options: AnalysisOptions, study_dir: Path, stem: str
) -> dict[str, Any]:
    from medsight.io.slide import open_slide

    assert source.path is not None
    with open_slide(source.path) as slide:
        levels = slide.levels
        level = options.slide_level
        if level is None:  # the largest level that is at most 4096 pixels wide
            level = next((lv.index for lv in levels if lv.width <= 4096), len(levels) - 1)
        image = slide.read_level(len(levels) - 1 if options.slide_level is None else level)
        task, mode, reasons = tasks.choose(image, source.task)
        predictor = tasks.predictor(task)
        if task.spec.instances is not None:  # nuclei: tiles at the model's resolution
            from medsight.analysis.slide_records import slide_nuclei_record

            record = slide_nuclei_record(
                slide,
                task,
                predictor,
                image,
                study_dir,
                stem,
                roi=options.slide_roi,
                outputs=options.outputs,
                gate=tasks.gate(task),
            )
        else:
            image = slide.read_level(level)
            probability, affine = predictor.predict_slide(slide, level=level)
            record = _slide_label_record(
                task, predictor, image, probability, affine, level, study_dir, stem
            )
    record["input"] = input_record(image, source)
    record["task"] = task_record(task, predictor, mode, reasons)
    return record


def _slide_label_record(
    task: Task,
    predictor: Predictor,
    image: Image,
    probability: np.ndarray,
    affine: np.ndarray,
    level: int,
    study_dir: Path,
    stem: str,
) -> dict[str, Any]:
    """A slide segmented at one level: its label map, as a tile is."""
    label_map = np.argmax(probability, axis=0).astype(np.uint8)
    prediction = Prediction(
        task_id=task.id,
        task_version=task.version,
        task_hash=task.task_hash,
        weights_sha256=task.weights_sha256,
        kind=task.spec.kind,
        output_names=[o.name for o in task.spec.outputs],
        affine=affine,
        shape=label_map.shape,
        backend=predictor.backend_name,
        label_map=label_map,
        details={"slide_level": level},
    )
    gate = GateResult(notes=["whole-slide images are not gated yet (issue 15)"])
    record = prediction_record(prediction, task, image, study_dir, stem, gate)
    record["gate"] = gate.as_dict()
    return record


def analyze_study(
    study: StudyInput,
    out: Path,
    options: AnalysisOptions,
    *,
    tasks: TaskSource | None = None,
    provenance_log: Path | None = None,
    record_provenance: bool = True,
) -> StudyOutcome:
    """Analyse every image of ``study`` into ``out/<study key>/``; one bad image never stops
    the others. Returns what was written and what failed (with exit codes), with the
    provenance entries it appended (or, without ``record_provenance``, left for the caller
    to append: an archive run's driver is the only writer of its provenance.jsonl)."""
    tasks = tasks or TaskSource(options)
    study_dir = out / study.key
    outcome = StudyOutcome(study.key, study.label, None, notes=list(study.skipped))
    superseded, previous_sr = _set_aside_previous(study_dir)

    key = options.device_key or device_key(out)
    all_findings: list[Finding] = []
    measurement_flags: dict[str, list[Any]] = {}
    derivations = StudyFindings()  # what several analyses of the study give together
    identifiers = None
    queue = list(study.images)
    number = 0
    while queue:
        source = queue.pop(0)
        number += 1
        stem = f"{number:02d}_{_slug(source.description)}"
        derive: tuple[Task, Image, Prediction, GateResult] | None = None
        try:
            with memory_guard(options.max_memory, source.description):
                if source.kind == "wsi":
                    record = _analyse_slide(source, tasks, options, study_dir, stem)
                else:
                    image = with_stated_spacing(source.load(), options.pixel_spacing_mm)
                    # a cine is routed by its first phase: a task that measures cine
                    # function takes it whole and analyses each phase
                    routed = image.timepoint(0) if image.is_sequence else image
                    task, mode, reasons = tasks.choose(routed, source.task)
                    if image.is_sequence and task.spec.cardiac_function is not None:
                        # a cine: each phase is analysed; the function compares them
                        queue[:0] = _phase_sources(image, source)
                        number -= 1
                        continue
                    predictor = tasks.predictor(task)
                    gate = tasks.gate(task)
                    started = time.perf_counter()
                    gate_result, statistics = gate.before_model(image)
                    gate_time = time.perf_counter() - started
                    if options.max_memory:
                        needed = predictor.working_bytes(image)
                        check_estimate(options.max_memory, needed, what=source.description)
                    prediction = predictor.predict(image)
                    started = time.perf_counter()
                    gate.with_model(gate_result, prediction, image, predictor)
                    prediction.timings["gate"] = gate_time + time.perf_counter() - started
                    record = prediction_record(
                        prediction,
                        task,
                        image,
                        study_dir,
                        stem,
                        gate_result,
                        overlay=wants_overlay(options.outputs),
                    )
                    record["gate"] = gate_record(gate_result, statistics)
                    record["input"] = input_record(image, source, key)
                    record["task"] = task_record(task, predictor, mode, reasons)
                    # a withheld answer gives no finding: no flag, no measurement (kept above
                    # in the classification / segmentation block for audit only)
                    findings = (
                        []
                        if gate_result.withheld
                        else findings_from_prediction(prediction, task, image)
                    )
                    record["findings"] = [f.as_dict() for f in findings]
                    all_findings.extend(findings)
                    measurement_flags[task.id] = list(task.spec.measurement_flags)
                    derive = (task, image, prediction, gate_result)
                    identifiers = identifiers or image.identifiers
                    if any(kind in options.outputs for kind in ("seg", "sr", "sc")):
                        written, notes = write_dicom_outputs(
                            prediction,
                            gate_result,
                            task,
                            image,
                            findings,
                            study_dir / record["overlays"][0] if record["overlays"] else None,
                            study_dir,
                            stem,
                            options.outputs,
                            previous_sr=previous_sr,
                        )
                        record["dicom_outputs"] = written
                        record["output_notes"] = notes
        except NoMatchingTaskError as exc:
            outcome.failures.append(
                {"what": source.description, "reason": exc.message, "exit_code": exc.exit_code}
            )
            continue
        except MedsightError as exc:
            outcome.failures.append(
                {"what": source.description, "reason": str(exc), "exit_code": exc.exit_code}
            )
            continue
        except OSError as exc:  # a file gone or unreadable since discovery: this image only
            if exc.errno in OUT_OF_ROOM:  # the outputs cannot be written: stop, not skip
                raise
            missing = exc.filename or source.description
            outcome.failures.append(
                {
                    "what": source.description,
                    "reason": f"{missing}: cannot be read any more ({exc.strerror or exc})",
                    "exit_code": 2,
                }
            )
            continue
        if derive is not None:
            derivations.add(len(outcome.analyses), *derive, source)
        outcome.analyses.append(record)

    derived = derivations.finish(options.outputs, study_dir)
    all_findings += derived.findings
    result_path = _write_study_result(
        study.key,
        study_dir,
        outcome,
        all_findings,
        superseded,
        options,
        identifiers,
        measurement_flags,
        derived,
    )
    document = json.loads(result_path.read_text())
    outcome.result_path = result_path
    outcome.priority = document["priority"]
    outcome.provenance = [
        _provenance_entry(record, study.key, result_path, out) for record in outcome.analyses
    ]
    if record_provenance:
        log = provenance_log or out / "provenance.jsonl"
        for entry in outcome.provenance:
            append_provenance(log, entry)
    return outcome


def _phase_sources(image: Image, source: ImageSource) -> list[ImageSource]:
    """Each time point of a cine as a source of its own (already read: a partial of the
    phase image, so nothing is read twice)."""
    count = image.num_timepoints
    marked = image.metadata.get("CardiacCyclePositions") or [None] * count
    times = image.metadata.get("TriggerTimes") or [None] * count
    return [
        replace(
            source,
            description=f"{source.description} phase {t + 1} of {count}"
            + (f" (trigger time {times[t]:g} ms)" if times[t] is not None else ""),
            load=partial(_given, image.timepoint(t)),
            phase=_DICOM_PHASES.get(marked[t] or "", source.phase),
        )
        for t in range(count)
    ]


#: the source's own end-diastole / end-systole markers (DICOM CardiacCyclePosition)
_DICOM_PHASES = {"END_DIASTOLE": "ED", "END_SYSTOLE": "ES"}


def _given(image: Image) -> Image:
    return image


def _provenance_entry(
    record: dict[str, Any], study_key: str, result_path: Path, out: Path
) -> dict[str, Any]:
    """What provenance.jsonl says of one analysis: inputs, task, state and outputs."""
    from medsight import __version__

    return {
        "medsight_version": __version__,
        "input": {
            k: record["input"][k]
            for k in (
                "kind",
                "file_sha256",
                "study_instance_uid",
                "series_instance_uid",
                "sop_instance_uids",
            )
        },
        "task": {k: record["task"][k] for k in ("id", "version", "hash", "weights_sha256")},
        "state": record["state"],
        "outputs": [result_path.relative_to(out).as_posix()]
        + [f"{study_key}/{p}" for p in record["overlays"]]
        + (
            [f"{study_key}/{record['segmentation']['label_map']}"]
            if "segmentation" in record
            else []
        )
        + [f"{study_key}/{p}" for p in record.get("dicom_outputs", [])],
    }


def _write_study_result(
    study_key: str,
    study_dir: Path,
    outcome: StudyOutcome,
    all_findings: list[Finding],
    superseded: str | None,
    options: AnalysisOptions,
    identifiers: Any,
    measurement_flags: dict[str, list[Any]] | None = None,
    derived: DerivedResults | None = None,
) -> Path:
    """result.json (and report.html) from the analyses and failures of one study."""
    from medsight import __version__

    def where(analysis: dict[str, Any]) -> str:
        return str(analysis["input"].get("modality") or analysis["input"]["kind"])

    def withholding(analysis: dict[str, Any]) -> list[str]:
        checks = analysis.get("gate", {}).get("checks", [])
        return [c["reason"] for c in checks if c["outcome"] == "withhold"]

    withheld = [f"{where(a)}: {r}" for a in outcome.analyses for r in withholding(a)]
    review = [
        f"{where(a)}: {reason}"
        for a in outcome.analyses
        for reason in a.get("review_reasons", [])
        if reason not in withholding(a)
    ]
    derived = derived or DerivedResults()
    review += derived.review_reasons
    priority = triage(
        all_findings,
        review,
        [f"{f['what']}: {f['reason']}" for f in outcome.failures],
        measurement_flags=measurement_flags,
        withheld=withheld,
        urgent_findings=options.urgent_findings,
        setting=options.site_setting,
    )
    task_hashes = sorted({a["task"]["hash"] for a in outcome.analyses})
    result_id = _result_id(study_key, task_hashes)
    document: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "medsight_version": __version__,
        "disclaimer": DISCLAIMER,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "study_key": study_key,
        "result_id": result_id,
        "status": "final",
        "supersedes": superseded if superseded != result_id else None,
        "priority": priority.as_dict(),
        "analyses": outcome.analyses,
        "study_findings": derived.documents,  # results derived from several analyses
        "failures": outcome.failures,
    }
    if outcome.notes:
        document["input_notes"] = outcome.notes
    if options.include_identifiers and identifiers is not None:
        document["identifiers"] = {
            "patient_id": identifiers.patient_id,
            "patient_name": identifiers.patient_name,
            "study_instance_uid": identifiers.study_instance_uid,
            "accession_number": identifiers.accession_number,
            "study_date": identifiers.study_date,
        }
    study_dir.mkdir(parents=True, exist_ok=True)
    result_path = study_dir / "result.json"
    write_result(document, result_path)
    if "html" in options.outputs:
        write_html_report(document, study_dir)
    return result_path


def write_unanalysed_study(
    study_key: str, out: Path, reason: str, options: AnalysisOptions, *, exit_code: int = 1
) -> Path:
    """A result for a study that could not be analysed at all (the service gave up on it):
    NEEDS_REVIEW with the reason, so it reaches the worklist and never reads as negative."""
    study_dir = out / study_key
    superseded, _previous_sr = _set_aside_previous(study_dir)
    outcome = StudyOutcome(
        study_key,
        study_key,
        None,
        failures=[{"what": "study", "reason": reason, "exit_code": exit_code}],
    )
    return _write_study_result(study_key, study_dir, outcome, [], superseded, options, None)


def _result_id(study_key: str, task_hashes: list[str]) -> str:
    """Same study and same task versions: same id (a rerun replaces, never duplicates)."""
    import hashlib

    return hashlib.sha256("|".join([study_key, *task_hashes]).encode()).hexdigest()[:20]


def _set_aside_previous(study_dir: Path) -> tuple[str | None, list[Any]]:
    """Move an earlier result of this study into ``history/<result id>/`` (it is superseded,
    not lost) and return its id and its SR datasets (the new SR references them)."""
    import shutil

    import pydicom

    previous = study_dir / "result.json"
    if not previous.is_file():
        return None, []
    try:
        old = json.loads(previous.read_text())
        old_id = str(old.get("result_id") or "unversioned")
    except (OSError, ValueError):
        old_id = "unreadable"
    archive = study_dir / "history" / old_id
    archive.mkdir(parents=True, exist_ok=True)
    previous_sr = []
    for name in ("result.json", "report.html", "dicom", "masks", "heatmaps", "overlays"):
        source = study_dir / name
        if source.exists():
            target = archive / name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(source), str(target))
    for path in sorted((archive / "dicom").glob("*_sr.dcm")):
        previous_sr.append(pydicom.dcmread(path))
    return old_id, previous_sr


def write_result(document: dict[str, Any], path: Path) -> None:
    """result.json, written atomically."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, indent=2, default=_json_default))
    partial.replace(path)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
