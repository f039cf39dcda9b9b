#!/usr/bin/env python
"""cardiac-mr on the Sunnybrook cine DICOM (../shared/data/sunnybrook-cine) against the
manual contours: LV cavity Dice per contoured slice (filled endocardial contours), the
myocardium Dice on the end-diastolic slices with epicardial contours (SC-HF-I-6 excluded:
its epicardial contours are misplaced), LV volumes and EF on the contoured slices against
the manual ones, the LV myocardial mass (myocardial volume x 1.05 g/mL) on the end-diastolic
slices with both contours against the manual mass there, and the whole-stack figures apart.
Also checks that the analysis picks end-diastole and end-systole as the contours mark them
(ED is the phase with epicardial contours).

    python scripts/evaluate_sunnybrook.py [--task cardiac-mr] [--out sunnybrook.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from medsight.analysis.inputs import find_studies
from medsight.datasets import shared_data_dir
from medsight.evaluation.intervals import bootstrap_ci
from medsight.findings.cardiac import CardiacPhase, cardiac_function
from medsight.inference import Predictor
from medsight.tasks import load_named_task

MISPLACED_EPICARDIUM = {"SC-HF-I-6"}  # the data README: o-contours 15 px below the heart


def _contour(folder: Path, kind: str, instance: int) -> np.ndarray | None:
    path = folder / f"{kind}-contours" / f"IM-0001-{instance:04d}-{kind}contour-manual.txt"
    return np.loadtxt(path) if path.is_file() else None


def _filled(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    # x = column = axis i, y = row = axis j (medsight arrays are (i, j) = (column, row))
    ii, jj = polygon(points[:, 0], points[:, 1], shape)
    mask[ii, jj] = True
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def _fraction(ed: float, es: float) -> float:
    return 100.0 * (ed - es) / ed


def evaluate_patient(task, predictor, folder: Path, contours: Path) -> dict:
    (study,) = find_studies(folder)
    (source,) = study.images
    cine = source.load()
    lv, myo = (
        {o.name: o.index for o in task.spec.outputs}[n]
        for n in ("left_ventricle", "left_ventricle_myocardium")
    )
    phases = []
    rows = []
    volumes: dict[int, dict[str, float]] = {}
    epicardial_phase = None
    density = task.spec.cardiac_function.myocardial_density
    mass = {"manual_contoured": 0.0, "predicted_contoured": 0.0}
    for t in range(cine.num_timepoints):
        image = cine.timepoint(t)
        labels = predictor.predict(image).label_map
        phases.append(CardiacPhase(t, f"phase {t + 1}", image, labels))
        pixel_ml = float(np.prod(image.spacing)) / 1000.0  # area x slice spacing
        manual = predicted = 0.0
        for k, frame in enumerate(image.frames):
            instance = int(frame.path.stem)
            inner = _contour(contours, "i", instance)
            if inner is None:
                continue
            truth = _filled(inner, image.shape[:2])
            mine = labels[..., k] == lv
            manual += truth.sum() * pixel_ml
            predicted += mine.sum() * pixel_ml
            row = {"phase": t, "slice": k, "instance": instance, "lv_dice": _dice(mine, truth)}
            outer = _contour(contours, "o", instance)
            if outer is not None:
                epicardial_phase = t
                if contours.name not in MISPLACED_EPICARDIUM:
                    wall = _filled(outer, image.shape[:2]) & ~truth
                    row["myocardium_dice"] = _dice(labels[..., k] == myo, wall)
                    mass["manual_contoured"] += wall.sum() * pixel_ml * density
                    mass["predicted_contoured"] += (
                        (labels[..., k] == myo).sum() * pixel_ml * density
                    )
            rows.append(row)
        volumes[t] = {
            "manual_contoured": manual,
            "predicted_contoured": predicted,
            "predicted_whole_stack": float((labels == lv).sum()) * pixel_ml,
        }
    document, _ = cardiac_function(phases, task.spec.cardiac_function, task)
    chosen_ed = document["phases"]["ED"]["analysis"]
    ed, es = chosen_ed, 1 - chosen_ed
    whole = next(m["value"] for m in document["measurements"] if m["name"] == "myocardial mass")
    return {
        "myocardial_mass_g": None
        if contours.name in MISPLACED_EPICARDIUM
        else {**mass, "predicted_whole_stack": whole},
        "ed_phase_by_contours": epicardial_phase,
        "ed_phase_chosen": chosen_ed,
        "slices": rows,
        "volumes_ml": volumes,
        "ef_manual_contoured": _fraction(
            volumes[ed]["manual_contoured"], volumes[es]["manual_contoured"]
        ),
        "ef_predicted_contoured": _fraction(
            volumes[ed]["predicted_contoured"], volumes[es]["predicted_contoured"]
        ),
        "ef_predicted_whole_stack": _fraction(
            volumes[ed]["predicted_whole_stack"], volumes[es]["predicted_whole_stack"]
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cardiac-mr")
    parser.add_argument("--out", type=Path, default=Path("sunnybrook.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the headers' invalid UIDs: pydicom warns per file
    logging.disable(logging.WARNING)
    root = shared_data_dir() / "sunnybrook-cine"
    task = load_named_task(args.task)
    predictor = Predictor(task, explain=False)
    results = {}
    with (root / "link.csv").open() as handle:
        for link in csv.DictReader(handle):
            results[link["patient_id"]] = evaluate_patient(
                task,
                predictor,
                root / "dicoms" / link["patient_id"],
                root / "contourfiles" / link["original_id"],
            )
    lv = [r["lv_dice"] for p in results.values() for r in p["slices"]]
    wall = [
        r["myocardium_dice"]
        for p in results.values()
        for r in p["slices"]
        if "myocardium_dice" in r
    ]

    def mean_ci(values: list[float]) -> dict | None:
        if not values:
            return None
        array = np.asarray(values)
        return bootstrap_ci(lambda i: float(array[i].mean()), len(array)).as_dict()

    summary = {
        "task": f"{task.id} {task.version}",
        "lv_dice_per_slice_mean": mean_ci(lv),
        "lv_dice_slices": len(lv),
        "myocardium_dice_per_slice_mean": mean_ci(wall),
        "myocardium_dice_slices": len(wall),
        "ed_es_as_contours_mark": sum(
            p["ed_phase_by_contours"] == p["ed_phase_chosen"] for p in results.values()
        ),
        "patients": len(results),
        "ef_difference_contoured_mean_abs": float(
            np.mean(
                [
                    abs(p["ef_predicted_contoured"] - p["ef_manual_contoured"])
                    for p in results.values()
                ]
            )
        ),
    }
    masses = [p["myocardial_mass_g"] for p in results.values() if p["myocardial_mass_g"]]
    summary["myocardial_mass_difference_contoured_mean_abs_g"] = float(
        np.mean([abs(m["predicted_contoured"] - m["manual_contoured"]) for m in masses])
    )
    summary["myocardial_mass_difference_contoured_mean_pct"] = float(
        np.mean(
            [
                100.0 * (m["predicted_contoured"] - m["manual_contoured"]) / m["manual_contoured"]
                for m in masses
            ]
        )
    )
    args.out.write_text(
        json.dumps({"summary": summary, "patients": results}, indent=2, default=float)
    )
    print(json.dumps(summary, indent=2))
    for patient, r in results.items():
        ed, es = r["ed_phase_chosen"], 1 - r["ed_phase_chosen"]
        v = r["volumes_ml"]
        print(
            f"{patient}: ED/ES as the contours mark them: {r['ed_phase_by_contours'] == ed}; "
            f"LV EDV manual {v[ed]['manual_contoured']:.0f} mL, predicted "
            f"{v[ed]['predicted_contoured']:.0f} (whole stack "
            f"{v[ed]['predicted_whole_stack']:.0f}); ESV manual {v[es]['manual_contoured']:.0f}, "
            f"predicted {v[es]['predicted_contoured']:.0f}; EF manual "
            f"{r['ef_manual_contoured']:.1f}%, predicted {r['ef_predicted_contoured']:.1f}% "
            f"(whole stack {r['ef_predicted_whole_stack']:.1f}%)"
        )
        if r["myocardial_mass_g"]:
            m = r["myocardial_mass_g"]
            print(
                f"  LV mass on the ED slices with both contours: manual "
                f"{m['manual_contoured']:.0f} g, predicted {m['predicted_contoured']:.0f} g "
                f"(whole stack {m['predicted_whole_stack']:.0f} g)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
