"""``medsight evaluate TASK DATA``: a task's evidence on labelled data (class folders, a
manifest CSV, or a training recipe's dataset)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.cli._progress import progress_bar

if TYPE_CHECKING:
    from medsight.tasks import Task
    from medsight.training.data import Case

console = Console(highlight=False, stderr=True, soft_wrap=True)

DATA_HELP = (
    "A folder with one sub-folder per class (give --classes); a manifest CSV with columns "
    "image and label (or mask), optional patient and any subgroup columns; or a training "
    "recipe (TOML/YAML), whose dataset is used (--split picks its held-back part)."
)


def _cases(
    data: Path,
    classes: list[str] | None,
    subgroups: list[str],
    subgroup_pattern: str | None,
    split: str,
    task: Task,
    masks: str = "{stem}_gt{suffix}",
    patient_pattern: str | None = None,
) -> list[Case]:
    from medsight.errors import InvalidInputError
    from medsight.training.config import ClassFolders, Manifest, load_config
    from medsight.training.data import list_cases, split_by_patient, split_holdback

    if data.is_dir() and task.spec.kind == "segmentation":
        from medsight.evaluation.cases import mask_folder_cases

        return mask_folder_cases(data, masks, patient_pattern)
    if data.is_dir():
        if not classes:
            raise InvalidInputError("class folders need --classes (in output order)", path=data)
        config: Any = ClassFolders(
            root=str(data.resolve()),
            classes=classes,
            patient_pattern="^(.+)$",
            subgroup_pattern=subgroup_pattern,
            suffixes=[".jpeg", ".jpg", ".png", ".dcm", ".tif", ".tiff"],
        )
        return list_cases(config)
    if data.suffix.lower() == ".csv":
        if not data.is_file():
            raise InvalidInputError("manifest not found", path=data)
        with data.open(newline="", encoding="utf-8-sig") as handle:
            columns = next(csv.reader(handle), [])
        segmentation = task.spec.kind == "segmentation"
        names = classes or [o.name for o in task.spec.outputs]
        if task.spec.activation == "sigmoid":  # columns named after the outputs and grades
            config = Manifest(
                csv=str(data.resolve()),
                image="{image}",
                targets={o.name: o.name for o in task.spec.outputs if o.name in columns},
                ordinal_targets={g.name: g.name for g in task.spec.ordinal if g.name in columns},
                patient_column="patient" if "patient" in columns else None,
                subgroup_columns=subgroups,
            )
            return list_cases(config, task.spec)
        config = Manifest(
            csv=str(data.resolve()),
            image="{image}",
            label_column=None if segmentation else "label",
            classes=None if segmentation else names,
            mask="{mask}" if segmentation else None,
            roi="{roi}" if "roi" in columns else None,
            patient_column="patient" if "patient" in columns else None,
            subgroup_columns=subgroups,
        )
        return list_cases(config)
    recipe = load_config(data)
    cases, held_back = split_holdback(list_cases(recipe.data, task.spec), recipe.split)
    if split == "holdback":
        if not held_back:
            raise InvalidInputError("the recipe holds no patients back", path=data)
        return held_back
    if split == "all":
        return cases
    if recipe.split.folds:
        raise InvalidInputError(
            "a k-fold recipe has no held-back part: every case trained the shipped model",
            path=data,
        )
    train, validation = split_by_patient(cases, recipe.split)
    return validation if split == "validation" else train


def evaluate(
    task: Annotated[str, typer.Argument(help="Task name, name@version, or task folder.")],
    data: Annotated[Path, typer.Argument(help=DATA_HELP)],
    classes: Annotated[
        str | None, typer.Option(help="Class folders (or label values) in output order.")
    ] = None,
    subgroup_pattern: Annotated[
        str | None, typer.Option(help="Class folders: regex on file names; group 1 = subgroup.")
    ] = None,
    subgroup_columns: Annotated[
        str | None, typer.Option(help="Manifest columns to report subgroups by, comma-separated.")
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="With a recipe: all (every case but the held-back ones), validation, train, "
            "or holdback (the patients the recipe kept from all of training)."
        ),
    ] = "all",
    masks: Annotated[
        str,
        typer.Option(
            help="Segmentation, a folder: each image's mask file, from the image's {stem} "
            "and {suffix}."
        ),
    ] = "{stem}_gt{suffix}",
    patient_pattern: Annotated[
        str | None,
        typer.Option(
            help="Segmentation, a folder: regex on file names, group 1 = patient (e.g. "
            "'^(patient\\d+)_' keeps a patient's phases together in the CIs)."
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="Detection: the folder of the COCO file's images (default: images/ beside it)."
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Detection: a CSV with an image column (file names) and the --subgroup-columns."
        ),
    ] = None,
    prevalence: Annotated[float | None, typer.Option(help="Prevalence for PPV/NPV.")] = None,
    out: Annotated[Path, typer.Option(help="Where evaluation.json and report.html go.")] = Path(
        "medsight-evaluation"
    ),
    tasks_dir: Annotated[
        list[Path] | None, typer.Option(metavar="<dir>", help="Extra task folder(s).")
    ] = None,
    debug: DEBUG_OPTION = False,
) -> None:
    """Classifiers: ROC AUC with CI, each locked operating point and each model-card claim
    re-checked (holds / FAILS, by how much), calibration, subgroups, where the heatmaps lie
    (border band share, gallery). Segmentation: Dice, IoU, HD95, surface Dice with CIs, the
    claims and the worst cases. A JSON of all numbers and an HTML report."""

    def action() -> None:
        from medsight.errors import InvalidInputError, TaskMismatchError
        from medsight.tasks import load_named_task

        if split not in ("all", "validation", "train", "holdback"):
            raise InvalidInputError(
                f"--split must be all, validation, train or holdback, not {split!r}"
            )
        loaded = load_named_task(task, tasks_dir or [])
        groups = [c for c in (subgroup_columns or "").split(",") if c]
        if loaded.spec.kind == "detection":
            _evaluate_detection(loaded, data, images, labels, groups, out)
            return
        names = classes.split(",") if classes else None
        cases = _cases(data, names, groups, subgroup_pattern, split, loaded, masks, patient_pattern)
        if loaded.spec.kind == "segmentation":
            _evaluate_segmentation(loaded, cases, out)
            return
        if loaded.spec.activation == "sigmoid":
            _evaluate_multilabel(loaded, cases, out)
            return
        if len(loaded.spec.outputs) != 2:
            raise TaskMismatchError(f"task {loaded.id} is not a binary classifier")
        if any(case.mask is not None for case in cases):
            raise TaskMismatchError(f"task {loaded.id} is a classifier; the data has masks")
        _evaluate_classifier(loaded, cases, prevalence, out)

    run(action, debug=debug)


def _development_check(task: Task, results: dict[str, Any], cases: list[Any]) -> None:
    """Say so, loudly, where the data include images the model was developed on (then no
    claim or operating point is said to hold or fail on them)."""
    from medsight.evaluation.cases import read_case_image
    from medsight.evaluation.development import development_overlap, mark_development_overlap
    from medsight.io import read_image

    def read(case: Any) -> Any:
        return read_image(case.image) if hasattr(case, "reference") else read_case_image(case)

    def name(case: Any) -> str:  # the file, or the row of an .npz archive
        if hasattr(case, "reference"):
            return str(case.image.name)
        return str(case.path.name) if case.npz_index is None else str(case.name)

    warning = mark_development_overlap(results, development_overlap(task, cases, read, name))
    if warning:
        console.print(f"[bold red]NOT EVIDENCE[/]: {warning}")


def _claims_and_files(claims: list[dict[str, Any]], json_path: Path, html_path: Path) -> None:
    """The card's claims in words, the files written; exit 1 when a claim fails."""
    for claim in claims:
        console.print(claim["words"])
    console.print(f"wrote {json_path} and {html_path}")
    console.print("research use only, not for diagnostic use")
    if any(claim["holds"] is False for claim in claims):
        raise typer.Exit(1)


def _evaluate_detection(
    task: Task, coco: Path, images: Path | None, labels: Path | None, groups: list[str], out: Path
) -> None:
    from medsight.errors import InvalidInputError
    from medsight.evaluation.detection_report import (
        detection_cases,
        evaluate_detector,
        write_detection_report,
    )

    if coco.suffix.lower() != ".json":
        raise InvalidInputError("a detection task is evaluated on a COCO file (.json)", path=coco)
    cases = detection_cases(coco, images or coco.parent / "images", labels, groups)
    with progress_bar(console) as bar:
        results = evaluate_detector(task, cases, progress=bar)
    _development_check(task, results, cases)
    json_path, html_path = write_detection_report(results, out)
    if "auc" in results:
        auc, sens, spec = results["auc"], results["sensitivity"], results["specificity"]
        console.print(
            f"image ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f}); at "
            f"{results['operating_point']['name']}: sensitivity {sens['value']:.3f}, "
            f"specificity {spec['value']:.3f}"
        )
    if "froc" in results:
        at = results["froc"]["sensitivity_at_fp_per_image"]
        console.print(
            "lesion sensitivity at 0.5 / 1 / 2 / 4 false positives per image: "
            + " / ".join(f"{at[r]['value']:.3f}" for r in ("0.5", "1.0", "2.0", "4.0"))
        )
    _claims_and_files(results["claims"], json_path, html_path)


def _evaluate_segmentation(task: Task, cases: list[Case], out: Path) -> None:
    from medsight.errors import TaskMismatchError
    from medsight.evaluation.segmentation_report import (
        evaluate_segmenter,
        write_segmentation_report,
    )

    if any(case.mask is None for case in cases):
        raise TaskMismatchError(f"task {task.id} segments; every case needs a mask")
    with progress_bar(console) as bar:
        results = evaluate_segmenter(task, cases, progress=bar)
    _development_check(task, results, cases)
    json_path, html_path = write_segmentation_report(results, out)
    for segment, summary in results["summary"].items():
        dice = summary["dice"]
        console.print(f"{segment}: Dice {dice['value']:.3f} ({dice['low']:.3f}-{dice['high']:.3f})")
    for structure, entry in results.get("ejection_fraction", {}).items():
        error = entry["mean_absolute_error"]
        console.print(
            f"{structure} ejection fraction: mean absolute error {error['value']:.1f} "
            f"({error['low']:.1f}-{error['high']:.1f}) percentage points over "
            f"{entry['patients']} patients"
        )
    _claims_and_files(results["claims"], json_path, html_path)


def _evaluate_multilabel(task: Task, cases: list[Case], out: Path) -> None:
    from medsight.evaluation.multilabel import evaluate_multilabel, write_multilabel_report

    with progress_bar(console) as bar:
        results = evaluate_multilabel(task, cases, progress=bar)
    _development_check(task, results, cases)
    json_path, html_path = write_multilabel_report(results, out)
    ungradable = results["ungradable"]
    console.print(
        f"ungradable: {ungradable['count']} of {results['images']} ({ungradable['rate']:.1%})"
    )
    for name, output in results["outputs"].items():
        auc = output["roc_auc"]
        console.print(
            f"{name}: ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})"
            if auc
            else f"{name}: ROC AUC not measurable (the data hold one class only)"
        )
    for name, grade in results["grades"].items():
        kappa = grade["quadratic_weighted_kappa"]
        console.print(
            f"{name}: quadratic-weighted kappa {kappa['value']:.3f} "
            f"({kappa['low']:.3f}-{kappa['high']:.3f})"
        )
    _claims_and_files(results["claims"], json_path, html_path)


def _evaluate_classifier(
    task: Task, cases: list[Case], prevalence: float | None, out: Path
) -> None:
    from medsight.evaluation.attention import AttentionSummary
    from medsight.evaluation.gallery import Gallery
    from medsight.evaluation.report import evaluate_classifier, write_report
    from medsight.findings.finding import BORDER_BAND
    from medsight.inference import Predictor
    from medsight.inference.preprocess import display_values
    from medsight.training.data import read_case_image, read_case_mask

    positive = task.spec.outputs[1].name
    threshold = _flag_threshold(task)
    explain = task.spec.explanation == "gradcam" and task.spec.chain is None
    predictor = Predictor(task, explain=explain, explain_output=positive)
    attention = AttentionSummary(BORDER_BAND)
    by_outcome: dict[str, AttentionSummary] = {}
    gallery = Gallery(band_fraction=BORDER_BAND)
    grid: tuple[int, ...] | None = None
    probabilities: list[float] = []
    with progress_bar(console) as bar:
        job = bar.add_task("evaluating", total=len(cases))
        for first in range(0, len(cases), 32):
            chunk = cases[first : first + 32]
            images = [read_case_image(c) for c in chunk]
            for case, image, prediction in zip(
                chunk, images, predictor.predict_many(images), strict=True
            ):
                assert prediction.probabilities is not None
                probability = prediction.probabilities[positive]
                probabilities.append(probability)
                if prediction.heatmap is None or image.spatial_dims != 2:
                    continue
                grid = prediction.heatmap_grid or grid
                # a manifest's roi column (e.g. a body or lung mask) gives the outside share
                body = read_case_mask(case, image, "roi").array[0] > 0 if case.roi else None
                attention.add(prediction.heatmap, body)
                kind = _outcome(case.label, probability, threshold)
                by_outcome.setdefault(kind, AttentionSummary(BORDER_BAND)).add(
                    prediction.heatmap, body
                )
                confidence = probability if kind != "false_negative" else 1 - probability
                if gallery.wants(kind, confidence):  # the display copy only for kept cases
                    picture = display_values(image, task.spec.display)[0]
                    gallery.offer(kind, confidence, case.name, picture, prediction.heatmap)
            bar.advance(job, len(chunk))
    labels = [c.label for c in cases]
    columns = sorted({key for case in cases for key in case.attributes})
    results = evaluate_classifier(
        task,
        labels,
        probabilities,
        prevalence=prevalence,
        subgroups={column: [c.attributes.get(column) for c in cases] for column in columns},
    )
    if attention.shares:
        results["attention"] = attention.as_dict() | {
            "grid": "x".join(str(n) for n in grid or ()),
            "by_outcome": {kind: summary.as_dict() for kind, summary in by_outcome.items()},
        }
    _development_check(task, results, cases)
    json_path, html_path = write_report(results, labels, probabilities, out, gallery=gallery)
    auc = results["roc_auc"]
    console.print(f"ROC AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})")
    for name, point in results["operating_points"].items():
        verdict = {True: "holds", False: "FAILS", None: "not checked"}[point["holds"]]
        console.print(f"{name}: {verdict} - {point['note']}")
    for claim in results["claims"]:
        console.print(claim["words"])
    if "attention" in results and "border" in results["attention"]:
        border = results["attention"]["border"]
        console.print(
            f"heatmap mass in the outer {BORDER_BAND:.0%} border band: mean {border['mean']:.1%}"
            f" (an even map: {results['attention']['band_area_share']:.1%}); maximum in the "
            f"band for {results['attention']['peak_in_border']['count']} images"
        )
    console.print(f"wrote {json_path} and {html_path}")
    console.print("research use only, not for diagnostic use")
    failed = any(point["holds"] is False for point in results["operating_points"].values())
    if failed or any(claim["holds"] is False for claim in results["claims"]):
        raise typer.Exit(1)


def _flag_threshold(task: Task) -> float:
    """The threshold findings use for the positive output (high_sensitivity if present)."""
    points = {
        n: p for n, p in task.spec.operating_points.items() if p.output == task.spec.outputs[1].name
    }
    if not points:
        return 0.5
    return points.get("high_sensitivity", points[sorted(points)[0]]).threshold


def _outcome(label: int, probability: float, threshold: float) -> str:
    flagged = probability >= threshold
    if label == 1:
        return "true_positive" if flagged else "false_negative"
    return "false_positive" if flagged else "true_negative"
