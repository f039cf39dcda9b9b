"""The public API: every public name is exported, and importing is cheap."""

from __future__ import annotations

import subprocess
import sys

import medsight
import medsight.analysis
import medsight.evaluation
import medsight.imaging
import medsight.inference
import medsight.io
import medsight.io.dicom
import medsight.models
import medsight.reporting
import medsight.tasks
import medsight.training


def _public_names(module) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("medsight")
        and getattr(value, "__module__", "") != "medsight.cli"
    }


def test_top_level_all_is_sorted_and_complete():
    assert medsight.__all__ == sorted(medsight.__all__)
    missing = _public_names(medsight) - set(medsight.__all__)
    assert not missing, f"public names not in __all__: {missing}"
    for name in medsight.__all__:
        assert hasattr(medsight, name)


def test_subpackage_all_lists_their_public_members():
    modules = (
        medsight.io,
        medsight.io.dicom,
        medsight.imaging,
        medsight.tasks,
        medsight.models,
        medsight.inference,
        medsight.evaluation,
        medsight.reporting,
        medsight.analysis,
        medsight.training,
    )
    for module in modules:
        assert module.__all__ == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_import_is_cheap_and_side_effect_free():
    heavy = "('torch', 'monai', 'tiffslide')"
    code = f"import sys, medsight; print(any(m in sys.modules for m in {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
