"""Golden tests: each shipped, trained model reproduces its committed result on CPU.

Regenerate after retraining (and review the diff): MEDSIGHT_UPDATE_GOLDEN=1 scripts/test -k golden
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medsight.datasets import repository_root
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.tasks import load_task
from medsight.tasks.registry import shipped_tasks_dir

GOLDEN = repository_root() / "tests" / "golden"
SAMPLES = repository_root() / "src" / "medsight" / "samples" / "cxr"

CASES = {
    "cxr-pneumonia": [
        "normal_IM-0115-0001.jpeg",
        "pneumonia_person1000_bacteria_2931.jpeg",
        "pneumonia_sample_sc.dcm",
    ],
}


def _trained(task_id: str):
    task = load_task(shipped_tasks_dir() / task_id)
    if not task.weights_available:
        pytest.skip(f"{task_id} has no trained weights yet")
    return task


@pytest.mark.parametrize("task_id", sorted(CASES))
def test_shipped_model_reproduces_its_golden_result(task_id):
    task = _trained(task_id)
    predictor = Predictor(task, deterministic=True, explain=False)
    results = {}
    for name in CASES[task_id]:
        prediction = predictor.predict(read_image(SAMPLES / name))
        assert prediction.logits is not None and prediction.probabilities is not None
        results[name] = {
            "logits": prediction.logits.tolist(),
            "probabilities": prediction.probabilities,
            "flags": {k: bool(v["flag"]) for k, v in prediction.flags.items()},
            "task_hash": task.task_hash,
        }
    path = GOLDEN / f"{task_id}.json"
    if os.environ.get("MEDSIGHT_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(results, indent=2) + "\n")
    golden = json.loads(path.read_text())
    for name, result in results.items():
        expected = golden[name]
        assert result["task_hash"] == expected["task_hash"], "the task changed: update golden"
        np.testing.assert_allclose(result["logits"], expected["logits"], atol=1e-4)
        assert result["flags"] == expected["flags"]
