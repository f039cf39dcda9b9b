"""``medsight analyze-archive SOURCE --out DEST``: analyse an archive on a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from medsight.cli._errors import DEBUG_OPTION, MAX_MEMORY_OPTION, run

console = Console(highlight=False, stderr=True)
RESEARCH_USE = (
    "medsight: research use only, not for diagnostic use. No AI finding is not a negative read."
)


def analyze_archive(
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder tree (studies found as `analyze` finds them) or a manifest CSV "
            "(columns image, task, study, patient, laterality, phase)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="DEST: one sub-folder per study, shared by all nodes.")],
    task: Annotated[str, typer.Option(help="Task name, name@version, task folder, or auto.")] = (
        "auto"
    ),
    ray_address: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of a running Ray cluster (default: start one here)."),
    ] = None,
    tasks_dir: Annotated[
        list[Path] | None,
        typer.Option(metavar="<dir>", help="Extra task folder(s), besides MEDSIGHT_TASKS."),
    ] = None,
    backend: Annotated[str, typer.Option(help="torch or onnxruntime.")] = "torch",
    outputs: Annotated[
        str, typer.Option(help="Comma-separated: seg, sr, sc (DICOM sources), json, html.")
    ] = "json,html",
    cpus: Annotated[
        int | None,
        typer.Option(min=1, help="Cores of the local Ray instance (default: all of them)."),
    ] = None,
    cpus_per_worker: Annotated[
        float, typer.Option(min=0.5, max=64, help="CPUs each analysis worker reserves.")
    ] = 1.0,
    attempts: Annotated[
        int, typer.Option(min=1, max=10, help="Tries per study when its worker dies.")
    ] = 3,
    max_memory: MAX_MEMORY_OPTION = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Analyse every study of an archive on Ray: resumable (a rerun skips what is done),
    with DEST/summary.parquet and summary.csv, one row per analysis."""

    def action() -> None:
        from medsight.analysis import AnalysisOptions, TaskSource, studies_of
        from medsight.analysis.memory import parse_size
        from medsight.analysis.outputs import parse_outputs
        from medsight.archive.driver import ArchiveProgress, run_archive
        from medsight.errors import InvalidInputError

        if backend not in ("torch", "onnxruntime"):
            raise InvalidInputError(f"backend must be torch or onnxruntime, got {backend!r}")
        options = AnalysisOptions(
            task=task,
            tasks_dirs=list(tasks_dir or []),
            backend=backend,
            outputs=parse_outputs(outputs),
            max_memory=parse_size(max_memory) if max_memory else None,
        )
        is_manifest = source.suffix.lower() == ".csv"
        studies = studies_of(None if is_manifest else source, source if is_manifest else None)
        TaskSource(options).check_requested(studies)  # unknown task: refused, exit 2
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            bar = progress.add_task("archive", total=None, counts="starting")

            def show(p: ArchiveProgress) -> None:
                progress.update(
                    bar,
                    total=p.total,
                    completed=p.done + p.failed,
                    counts=f"done {p.done} · failed {p.failed} · remaining {p.remaining}"
                    f" · {p.per_minute:.1f} studies/min",
                )

            try:
                report = run_archive(
                    studies,
                    out,
                    options,
                    address=ray_address,
                    cpus=cpus,
                    cpus_per_actor=cpus_per_worker,
                    attempts=attempts,
                    on_progress=show,
                )
            finally:  # also on Ctrl-C: the summary covers what is done so far
                _summarise(out)
        p = report.progress
        console.print(
            f"{report.studies} studies in {source}: {p.done} analysed, {p.failed} failed, "
            f"{report.already_done} done by an earlier run"
            + (f", {report.duplicates} listed twice (analysed once)" if report.duplicates else "")
        )
        for failure in report.failed[:20]:
            console.print(f"failed: {failure['label']} ({failure['key']}): {failure['error']}")
        if len(report.failed) > 20:
            console.print(f"... and {len(report.failed) - 20} more: see {out}/archive-state.jsonl")
        console.print(f"summary: {out / 'summary.csv'} and summary.parquet")
        Console(highlight=False).print(RESEARCH_USE)
        if report.failed:  # all failed alike (e.g. each over --max-memory): that code
            codes = {int(f["exit_code"]) for f in report.failed}
            alone = not p.done and not report.already_done and len(codes) == 1
            raise typer.Exit(codes.pop() if alone else 1)

    run(action, debug=debug)


def _summarise(out: Path) -> None:
    """summary.csv/.parquet of every study recorded so far; a DEST that cannot take them
    (full, read-only) is said, without hiding the error that stopped the run."""
    from medsight.archive.state import ArchiveState
    from medsight.archive.summary import write_summary
    from medsight.errors import MedsightError

    try:
        with ArchiveState(out) as state:
            keys = sorted({r.key for r in state.records.values()})
        if keys:
            write_summary(out, keys)
    except (OSError, MedsightError) as exc:
        console.print(f"warning: summary not written ({exc})")
