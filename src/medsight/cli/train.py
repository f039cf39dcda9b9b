"""``medsight train CONFIG``: train a task version from a recipe (resumable)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.cli._progress import progress_bar

console = Console(highlight=False, stderr=True, soft_wrap=True)


def train(
    config: Annotated[Path, typer.Argument(help="Training recipe (TOML or YAML).")],
    tasks_dir: Annotated[
        Path | None, typer.Option(help="Write the new task version here (default: MEDSIGHT_TASKS).")
    ] = None,
    work: Annotated[
        Path | None, typer.Option(help="Checkpoints and caches (default: medsight-train/...).")
    ] = None,
    fold: Annotated[
        int | None,
        typer.Option(
            help="Train only this fold (1-based; the k-th group of a group-held-out recipe) and "
            "stop: run folds side by side, or on machines sharing --work, then once without "
            "--fold to finish.",
            min=1,
        ),
    ] = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Train, validate, calibrate and lock an operating point; rerun to resume."""

    def action() -> None:
        from medsight.errors import InvalidInputError
        from medsight.tasks import load_named_task
        from medsight.tasks.registry import user_task_dirs
        from medsight.training import (
            load_config,
            train_classifier,
            train_multilabel,
            train_segmenter,
        )
        from medsight.training.detector import train_detector

        recipe = load_config(config)
        target = tasks_dir or next(iter(user_task_dirs()), None)
        if target is None:
            raise InvalidInputError("give --tasks-dir or set MEDSIGHT_TASKS")
        folder = work or Path("medsight-train") / f"{config.stem}-{recipe.version}"
        command = "medsight " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        spec = load_named_task(recipe.base_task).spec
        segmentation = spec.kind == "segmentation"
        independent = spec.kind == "classification" and spec.activation == "sigmoid"
        trainer = (
            train_detector
            if spec.kind == "detection"
            else train_segmenter
            if segmentation
            else train_multilabel
            if independent
            else train_classifier
        )
        if fold is not None:
            with progress_bar(console) as progress:
                trainer(
                    recipe, tasks_dir=target, work_dir=folder, progress=progress, only_fold=fold
                )
            console.print(
                f"fold {fold} trained in {folder}; run again without --fold (same --work) when "
                "every fold is done"
            )
            return
        if spec.kind == "detection":
            trained = _train_detection(recipe, target, folder, command)
            gated, gate = _fit_gate(trained, recipe, target, command)
            console.print(f"input gate of {gated.id} {gated.version}: {gate.fitted_on}")
            return
        with progress_bar(console) as progress:
            result = trainer(
                recipe, tasks_dir=target, work_dir=folder, command=command, progress=progress
            )
        assert result is not None
        # last step: the input gate, fitted on the same split (docs/gate.md)
        gated, gate = _fit_gate(result.task, recipe, target, command)
        metrics = result.record["metrics"]
        console.print(f"wrote {gated.id} {gated.version} to {gated.folder}")
        console.print(f"input gate: {gate.fitted_on}")
        if segmentation:
            for segment, summary in metrics["validation"].items():
                dice = summary["dice"]
                console.print(
                    f"validation {segment}: Dice {dice['value']:.3f} "
                    f"({dice['low']:.3f}-{dice['high']:.3f})"
                )
            console.print(f"validation report: {folder / 'validation-report' / 'report.html'}")
        elif independent:
            for name, point in metrics["points"].items():
                auc = metrics["outputs"][point["spec"]["output"]]["roc_auc"] or {}
                console.print(
                    f"out-of-fold {point['spec']['output']} ROC AUC {auc.get('value', 'n/a')}"
                    f" ({auc.get('low', '')}-{auc.get('high', '')}); {name}: "
                    f"{point['spec']['note']}"
                )
        else:
            auc = metrics["roc_auc"]
            console.print(
                f"validation ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-"
                f"{auc['high']:.3f}); {metrics['operating_point']['note']}"
            )
        console.print("research use only, not for diagnostic use")

    run(action, debug=debug)


def _fit_gate(task: Any, recipe: Any, target: Path, command: str) -> tuple[Any, Any]:
    """The input gate of the version just trained, fitted on the recipe's split."""
    from medsight.training.gate_fit import fit_gate, write_gated_task

    with progress_bar(console) as progress:
        job = progress.add_task("fitting the input gate", total=None)
        gate = fit_gate(task, recipe, progress=lambda n: progress.advance(job, n))
    return write_gated_task(task, gate, target, command, in_place=True), gate


def _train_detection(recipe: Any, target: Path, folder: Path, command: str) -> Any:
    """Train a detection task (its gate is fitted after, as for the other kinds)."""
    from medsight.training.detector import train_detector

    with progress_bar(console) as progress:
        result = train_detector(
            recipe, tasks_dir=target, work_dir=folder, command=command, progress=progress
        )
    assert result is not None  # only a --fold run returns None
    metrics = result.record["metrics"]
    figures = metrics["all"]
    console.print(f"wrote {result.task.id} {result.task.version} to {result.task.folder}")
    if "auc" in figures:
        auc = figures["auc"]
        console.print(
            f"out-of-fold image ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f}); "
            f"sensitivity {figures['sensitivity']['value']:.3f}, specificity "
            f"{figures['specificity']['value']:.3f} at the locked point"
        )
    at = figures.get("froc", {}).get("sensitivity_at_fp_per_image", {})
    if at:
        console.print(
            "out-of-fold lesion sensitivity at 0.5 / 1 / 2 / 4 false positives per image: "
            + " / ".join(f"{at[r]['value']:.3f}" for r in ("0.5", "1.0", "2.0", "4.0"))
        )
    console.print("research use only, not for diagnostic use")
    return result.task
