"""Golden tests: each shipped, trained model reproduces its committed result on CPU.

Regenerate after retraining (and review the diff): MEDSIGHT_UPDATE_GOLDEN=1 scripts/test -k golden
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medsight.datasets import repository_root
from medsight.gate import InputGate
from medsight.inference import Predictor
from medsight.io import read_image
from tests._tasks import trained_shipped_task
from tests.conftest import require_data

GOLDEN = repository_root() / "tests" / "golden"
SAMPLES = repository_root() / "src" / "medsight" / "samples" / "cxr"

CASES = {
    "cxr-pneumonia": [
        SAMPLES / "normal_IM-0115-0001.jpeg",
        SAMPLES / "pneumonia_person1000_bacteria_2931.jpeg",
        SAMPLES / "pneumonia_sample_sc.dcm",
    ],
    # not redistributable: read from ../shared/data (k-fold versions: cases the shipped
    # network saw in training; the golden test checks reproduction, not accuracy)
    "derm-melanoma": [("ph2", "images", "IMD004.jpg"), ("ph2", "images", "IMD063.jpg")],
    "derm-lesion": [("ph2", "images", "IMD004.jpg")],
    "fundus-vessels": [("drive", "training", "images", "21_training.tif")],
    # academic use: one patient's two eyes read from ../shared/data, only outputs kept here
    "fundus-dr": [
        ("dr-fundus", "images", "Patient156_L.jpg"),
        ("dr-fundus", "images", "Patient156_R.jpg"),
    ],
    "cardiac-mr": [
        ("acdc", "val", "patient002_ED.nii.gz"),
        ("sunnybrook-cine", "dicoms", "SCD0000101"),
    ],
    # no licence stated: a GBM40 tile read from ../shared/data, only outputs kept here
    "pathology-nuclei": [("pathology-gbm40", "raw_image", "07.png")],
    "hippocampus-mr": [
        ("hippocampus-mr", "imagesTr", "hippocampus_003.nii.gz"),
        ("hippocampus-mr", "dicom_hippocrop"),
    ],
}


def _case_path(case: Path | tuple[str, ...]) -> Path:
    return case if isinstance(case, Path) else require_data(*case)


def _summary(prediction, task) -> dict:
    if prediction.logits is not None:
        return {
            "logits": prediction.logits.tolist(),
            "probabilities": prediction.probabilities,
            "flags": {k: bool(v["flag"]) for k, v in prediction.flags.items()},
        }
    counts = np.bincount(prediction.label_map.ravel(), minlength=len(task.spec.outputs))
    summary = {
        "voxels": counts.tolist(),
        "mean_probability": [
            float(prediction.segment_probabilities[o.index].mean()) for o in task.spec.outputs
        ],
    }
    if prediction.instance_map is not None:
        summary["instances"] = int(prediction.instance_map.max())
    return summary


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task_id", sorted(CASES))
def test_shipped_model_reproduces_its_golden_result(task_id):
    task = trained_shipped_task(task_id)
    predictor = Predictor(task, deterministic=True, explain=False)
    results = {}
    for case in CASES[task_id]:
        path = _case_path(case)
        image = read_image(path if path.is_file() else next(_series(path)))
        if image.is_sequence:  # a cine: its first phase (analyze runs each)
            image = image.timepoint(0)
        prediction = predictor.predict(image)
        gate = InputGate(task)
        checked, _ = gate.before_model(image)
        gate.with_model(checked, prediction, image, predictor)
        ood = checked.check("out_of_distribution")
        results[path.name] = {
            **_summary(prediction, task),
            "task_hash": task.task_hash,
            "gate": {
                "decision": checked.decision,
                "ood_score": None if ood is None or ood.score is None else round(ood.score, 3),
            },
        }
    golden_path = GOLDEN / f"{task_id}.json"
    if os.environ.get("MEDSIGHT_UPDATE_GOLDEN") == "1":
        golden_path.write_text(json.dumps(results, indent=2) + "\n")
    golden = json.loads(golden_path.read_text())
    for name, result in results.items():
        expected = golden[name]
        assert result["task_hash"] == expected["task_hash"], "the task changed: update golden"
        assert result["gate"]["decision"] == expected["gate"]["decision"]
        if expected["gate"]["ood_score"] is not None:
            assert result["gate"]["ood_score"] == pytest.approx(
                expected["gate"]["ood_score"], abs=0.05
            )
        if "logits" in expected:
            np.testing.assert_allclose(result["logits"], expected["logits"], atol=1e-4)
            assert result["flags"] == expected["flags"]
        else:  # label maps: a few boundary voxels may differ between CPUs
            np.testing.assert_allclose(result["voxels"], expected["voxels"], rtol=0.005, atol=3)
            np.testing.assert_allclose(
                result["mean_probability"], expected["mean_probability"], atol=1e-3
            )
            if "instances" in expected:  # a watershed may split one borderline nucleus
                assert abs(result["instances"] - expected["instances"]) <= 2


def _series(folder: Path):
    """The first DICOM series folder under ``folder``."""
    for path in [folder, *sorted(folder.rglob("*"))]:
        if path.is_dir() and any(child.is_file() for child in path.iterdir()):
            yield path
