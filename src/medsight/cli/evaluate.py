"""``medsight evaluate TASK DATA``: a classifier's evidence on labelled class folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.cli._progress import progress_bar

console = Console(highlight=False, stderr=True)


def evaluate(
    task: Annotated[str, typer.Argument(help="Task name, name@version, or task folder.")],
    data: Annotated[Path, typer.Argument(help="A folder with one sub-folder per class.")],
    classes: Annotated[str, typer.Option(help="Class folders in output order, comma-separated.")],
    subgroup_pattern: Annotated[
        str | None, typer.Option(help="Regex on file names; group 1 names a subgroup.")
    ] = None,
    prevalence: Annotated[float | None, typer.Option(help="Prevalence for PPV/NPV.")] = None,
    out: Annotated[Path, typer.Option(help="Where evaluation.json and report.html go.")] = Path(
        "medsight-evaluation"
    ),
    tasks_dir: Annotated[list[Path] | None, typer.Option(help="Extra task folder(s).")] = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """ROC AUC with CI, each locked operating point re-checked (holds / fails), calibration,
    subgroups; JSON of all numbers and an HTML report."""

    def action() -> None:
        from medsight.errors import TaskMismatchError
        from medsight.evaluation.report import evaluate_classifier, write_report
        from medsight.inference import Predictor
        from medsight.io import read_image
        from medsight.tasks import load_named_task
        from medsight.training.config import ClassFolders
        from medsight.training.data import list_cases

        loaded = load_named_task(task, tasks_dir or [])
        if loaded.spec.kind != "classification" or len(loaded.spec.outputs) != 2:
            raise TaskMismatchError(f"task {loaded.id} is not a binary classifier")
        config = ClassFolders(
            root=str(data.resolve()),
            classes=classes.split(","),
            patient_pattern="^(.+)$",
            subgroup_pattern=subgroup_pattern,
            suffixes=[".jpeg", ".jpg", ".png", ".dcm", ".tif", ".tiff"],
        )
        cases = list_cases(config)
        predictor = Predictor(loaded, explain=False)
        probabilities: list[float] = []
        with progress_bar(console) as bar:
            job = bar.add_task("evaluating", total=len(cases))
            for first in range(0, len(cases), 32):
                chunk = cases[first : first + 32]
                for prediction in predictor.predict_many([read_image(c.path) for c in chunk]):
                    assert prediction.probabilities is not None
                    probabilities.append(prediction.probabilities[loaded.spec.outputs[1].name])
                bar.advance(job, len(chunk))
        labels = [c.label for c in cases]
        results = evaluate_classifier(
            loaded,
            labels,
            probabilities,
            prevalence=prevalence,
            subgroups=(
                {"subgroup": [c.attributes.get("subgroup") for c in cases]}
                if subgroup_pattern
                else None
            ),
        )
        json_path, html_path = write_report(results, labels, probabilities, out)
        auc = results["roc_auc"]
        console.print(f"ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})")
        for name, point in results["operating_points"].items():
            console.print(f"{name}: {'holds' if point['holds'] else 'FAILS'} - {point['note']}")
        console.print(f"wrote {json_path} and {html_path}")
        console.print("research use only, not for diagnostic use")
        failing = [n for n, p in results["operating_points"].items() if not p["holds"]]
        if failing:
            raise typer.Exit(1)

    run(action, debug=debug)
