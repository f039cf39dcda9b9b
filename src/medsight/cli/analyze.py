"""``medsight analyze PATH``: run tasks on every study under a path and write the results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medsight.analysis import StudyOutcome
from medsight.cli._errors import DEBUG_OPTION, MAX_MEMORY_OPTION, run
from medsight.cli._progress import progress_bar
from medsight.findings.measurements import spoken_measurement

console = Console(highlight=False, stderr=True)
RESEARCH_USE = (
    "medsight: research use only, not for diagnostic use. No AI finding is not a negative read."
)


def analyze(
    path: Annotated[
        Path | None,
        typer.Argument(help="A DICOM file/folder/DICOMDIR, NIfTI or image (or give --manifest)."),
    ] = None,
    task: Annotated[str, typer.Option(help="Task name, name@version, task folder, or auto.")] = (
        "auto"
    ),
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per study).")] = Path(
        "medsight-out"
    ),
    tasks_dir: Annotated[
        list[Path] | None,
        typer.Option(metavar="<dir>", help="Extra task folder(s), besides MEDSIGHT_TASKS."),
    ] = None,
    backend: Annotated[str, typer.Option(help="torch or onnxruntime.")] = "torch",
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="Average over flipped inputs (default: as each task's [inference] tta says).",
        ),
    ] = None,
    level: Annotated[int | None, typer.Option(help="Whole-slide level to analyse.")] = None,
    outputs: Annotated[
        str, typer.Option(help="Comma-separated: seg, sr, sc (DICOM sources), json, html.")
    ] = "json,html",
    include_identifiers: Annotated[
        bool, typer.Option(help="Put patient identifiers in result.json and report.html.")
    ] = False,
    rules: Annotated[
        Path | None, typer.Option(help="Site routing rules (TOML/YAML) for automatic selection.")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Studies analysed at once, each in its own process with cores/jobs threads, "
            "for machines with more cores than one study keeps busy (memory grows with it).",
        ),
    ] = 1,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="A CSV of images to analyse instead of PATH: columns image (required), task, "
            "study, patient, laterality, phase (docs/engine.md).",
        ),
    ] = None,
    mpp: Annotated[
        float | None,
        typer.Option(
            min=0.05,
            max=100.0,
            help="Micrometres per pixel of 2D images whose files state no spacing (histology "
            "tiles): resampled to the task's resolution, measured in real units.",
        ),
    ] = None,
    roi: Annotated[
        Path | None,
        typer.Option(
            help="Whole slides: a region of interest (GeoJSON polygons in level-0 pixels, as "
            "QuPath exports them); only nuclei inside it are analysed.",
        ),
    ] = None,
    max_memory: MAX_MEMORY_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Analyse each study: result.json, report.html, masks/, overlays/ and DICOM results
    (SEG, SR, SC) under OUT/<study>/."""

    def action() -> None:
        from medsight.analysis import AnalysisOptions, TaskSource, analyze_studies, studies_of
        from medsight.analysis.memory import parse_size
        from medsight.analysis.outputs import parse_outputs
        from medsight.errors import InvalidInputError
        from medsight.tasks.selection import load_rules

        if backend not in ("torch", "onnxruntime"):
            raise InvalidInputError(f"backend must be torch or onnxruntime, got {backend!r}")
        site = load_rules(rules) if rules else None
        options = AnalysisOptions(
            task=task,
            tasks_dirs=list(tasks_dir or []),
            backend=backend,
            tta=tta,
            slide_level=level,
            outputs=parse_outputs(outputs),
            max_memory=parse_size(max_memory) if max_memory else None,
            include_identifiers=include_identifiers,
            rules=list(site.rules) if site and site.rules else None,
            rules_version=site.version if site else "",
            site_setting=site.triage.setting if site else "",
            urgent_findings=site.triage.urgent_findings() if site else (),
            pixel_spacing_mm=mpp / 1000.0 if mpp is not None else None,
            slide_roi=_region(roi),
        )
        studies = studies_of(path, manifest)
        tasks = TaskSource(options)
        tasks.check_requested(studies)  # a bad task name or task.toml fails before any work
        with progress_bar(console, transient=True) as progress:
            bar = progress.add_task(f"analysing {len(studies)} study(ies)", total=len(studies))
            outcomes = analyze_studies(
                studies,
                out,
                options,
                jobs=jobs,
                on_done=lambda _: progress.advance(bar),
                tasks=tasks,
            )
        _summary(outcomes, out)
        failed = [o for o in outcomes if o.failed]
        if failed:
            raise typer.Exit(failed[0].exit_code if len(failed) == len(outcomes) else 1)

    run(action, debug=debug)


def _region(path: Path | None) -> Any:
    """The ``--roi`` GeoJSON as one geometry (refused now, not after the first slides)."""
    if path is None:
        return None
    from medsight.analysis.slide_nuclei import read_roi

    return read_roi(path)


def _segmented(analysis: dict[str, Any]) -> list[str]:
    """Each segment's segmented volume (3D) or area (2D) in the units people write."""
    sizes = {
        f["name"]: m
        for f in analysis.get("findings", [])
        for m in f.get("measurements", [])
        if m["name"] in ("volume", "area", "nucleus count")
    }
    described = []
    for segment in analysis["segmentation"]["segments"]:
        size = sizes.get(segment["name"])
        if size is None and "instance_map" in analysis["segmentation"]:
            continue  # an instance task's rim class: merged into its objects
        if size is None:
            described.append(f"{segment['name']}: nothing segmented")
        elif size["name"] == "nucleus count":
            described.append(f"{segment['name']}: {size['value']:.0f} nuclei")
        else:
            value = spoken_measurement(size["value"], size["unit"])
            described.append(f"{segment['name']}: segmented {size['name']} {value}")
    return described


def _summary(outcomes: list[StudyOutcome], out: Path) -> None:
    table = Table(title=f"results in {out}", title_justify="left")
    for column in ("study", "priority", "image", "task", "state", "result"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        for analysis in outcome.analyses:
            state = analysis["state"]
            classification = analysis.get("classification")
            if classification:
                flags = [
                    f"{p['output']} {p['probability']:.2f} "
                    + (
                        f"FLAG at {name}"
                        if p["flag"]
                        else f"below {name}: no AI finding (not a negative read)"
                    )
                    for name, p in classification["operating_points"].items()
                ]
                probabilities = ", ".join(
                    f"{k} {v:.2f}" for k, v in classification["probabilities"].items()
                )
                summary = "; ".join(flags) or probabilities
            elif "segmentation" in analysis:
                summary = ", ".join(_segmented(analysis))
            elif "slide" in analysis:
                slide = analysis["slide"]
                summary = (
                    f"{slide['nuclei']} nuclei in {slide['tiles_analysed']} tissue tiles "
                    f"of {slide['tiles_total']}"
                )
            else:
                summary = ""
            if state == "NEEDS_REVIEW":
                summary += " | review: " + "; ".join(analysis["review_reasons"])
            table.add_row(
                outcome.key,
                (outcome.priority or {}).get("level", "-"),
                analysis["input"].get("path")
                or analysis["input"]["modality"]
                or analysis["input"]["kind"],
                f"{analysis['task']['id']} {analysis['task']['version']}",
                state,
                summary,
            )
        for failure in outcome.failures:
            table.add_row(
                outcome.key,
                (outcome.priority or {}).get("level", "-"),
                failure["what"],
                "-",
                "FAILED",
                failure["reason"],
            )
    Console(highlight=False, width=None if console.is_terminal else 200).print(table)
    Console(highlight=False).print(RESEARCH_USE)
