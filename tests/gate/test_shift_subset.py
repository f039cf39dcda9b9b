"""A small fixed subset of scripts/shift_tests.py in CI: for the chest model, other tasks'
photographs, rotated and inverted chest films and noise, all dressed with passing DX tags,
are withheld; its own held-back films pass."""

from __future__ import annotations

import importlib.util

import pytest

from medsight.datasets import repository_root
from medsight.gate import InputGate
from medsight.inference import Predictor
from medsight.tasks import load_named_task
from tests.conftest import require_data

pytestmark = pytest.mark.timeout(600)


def _script():
    path = repository_root() / "scripts" / "shift_tests.py"
    spec = importlib.util.spec_from_file_location("shift_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shifted_inputs_are_withheld_and_own_films_pass():
    require_data("kermany-cxr")
    shift = _script()
    task = load_named_task("cxr-pneumonia")
    gate, predictor = InputGate(task), Predictor(task, explain=False, backend="onnxruntime")
    kinds = shift.kinds_for(task, 3)
    chosen = ["dermoscopy (PH2)", "fundus (DR)", "noise", "chest X-ray rotated 90"]
    chosen += ["chest X-ray inverted", "pathology tile (GBM40)"]
    missed = []
    for kind in chosen:
        for number, load in enumerate(kinds[kind][:3]):
            withheld, _, _ = shift.judge(task, gate, predictor, shift.as_task_input(load(), task))
            if not withheld:
                missed.append(f"{kind} #{number}")
    assert not missed, f"not withheld: {missed}"
    rejected = []
    for number, load in enumerate(shift.validation_images(task, 8)):
        _, passed, _ = shift.judge(task, gate, predictor, load())
        if not passed:
            rejected.append(number)
    assert not rejected, f"own held-back films rejected: {rejected}"
