"""`medsight import-model`: a MONAI bundle becomes a task that runs through the whole flow."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from typer.testing import CliRunner

from medsight.cli import app
from medsight.errors import InvalidInputError
from medsight.image import Image
from medsight.inference import Predictor
from medsight.tasks.bundle_import import import_bundle

NETWORK = {
    "_target_": "monai.networks.nets.UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
}


def make_bundle(root, *, torchscript=False, network=None, transforms=None):
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    metadata = {
        "name": "Spleen CT Segmentation (test)",
        "version": "0.3.1",
        "description": "A tiny test UNet in bundle layout.",
        "authors": "medsight tests",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": [32, 32, 32],
                    "is_patch_data": True,
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 2,
                    "channel_def": {"0": "background", "1": "spleen"},
                }
            },
        },
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    inference = {
        "network_def": network or NETWORK,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": transforms
            or [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0]},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -57,
                    "a_max": 164,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [32, 32, 32],
            "sw_batch_size": 2,
            "overlap": 0.25,
        },
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.manual_seed(0)
    model = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"}).eval()
    if torchscript:
        torch.jit.trace(model, torch.zeros(1, 1, 32, 32, 32)).save(
            str(root / "models" / "model.ts")
        )
    else:
        torch.save(model.state_dict(), root / "models" / "model.pt")
    return model


def ct_volume() -> Image:
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    return Image(
        rng.integers(-1000, 400, size=(1, 60, 50, 24)).astype(np.int16), affine, 3, modality="CT"
    )


@pytest.mark.parametrize("torchscript", [False, True], ids=["state-dict", "torchscript"])
def test_bundle_becomes_a_task_that_runs(tmp_path, torchscript):
    make_bundle(tmp_path / "bundle", torchscript=torchscript)
    task = import_bundle(tmp_path / "bundle", tmp_path / "tasks")
    assert task.folder == tmp_path / "tasks" / "spleen-ct-segmentation-test" / "0.3.1"
    spec = task.spec
    assert spec.kind == "segmentation" and spec.acceptance.modalities == ["CT"]
    assert spec.preprocessing.spacing == [1.5, 1.5, 2.0] and spec.preprocessing.reorient == "RAS"
    assert spec.display.window == "range" and spec.display.value_range == (-57.0, 164.0)
    assert [o.name for o in spec.outputs] == ["background", "spleen"]
    image = ct_volume()
    prediction = Predictor(task).predict(image)
    assert prediction.label_map is not None and prediction.label_map.shape == image.shape
    np.testing.assert_array_equal(prediction.affine, image.affine)


def test_imported_task_refuses_an_rgb_photo(tmp_path):
    from medsight.errors import TaskMismatchError

    make_bundle(tmp_path / "bundle")
    task = import_bundle(tmp_path / "bundle", tmp_path / "tasks")
    photo = Image(np.zeros((3, 64, 64), np.uint8), np.eye(4), 2, photometric_interpretation="RGB")
    with pytest.raises(TaskMismatchError, match="image is 2D, the task needs 3D"):
        Predictor(task).predict(photo)


@pytest.mark.parametrize(
    ("network", "transforms", "message"),
    [
        ({**NETWORK, "channels": "$@channels"}, None, "expression or reference"),
        ({**NETWORK, "_target_": "SwinUNETR"}, None, "not on the allow-list"),
        (None, [{"_target_": "RandGaussianNoised", "keys": "image"}], "cannot map"),
    ],
    ids=["expression", "not-allowed", "unknown-transform"],
)
def test_unmappable_bundles_are_refused_with_the_reason(tmp_path, network, transforms, message):
    make_bundle(tmp_path / "bundle", network=network, transforms=transforms)
    with pytest.raises(InvalidInputError, match=message):
        import_bundle(tmp_path / "bundle", tmp_path / "tasks")


def test_import_model_command_then_analyze(tmp_path):
    make_bundle(tmp_path / "bundle")
    runner = CliRunner()
    result = runner.invoke(
        app, ["import-model", str(tmp_path / "bundle"), "--out", str(tmp_path / "tasks")]
    )
    assert result.exit_code == 0, result.output
    image = ct_volume()
    nib.save(
        nib.Nifti1Image(image.array[0], np.diag([-1, -1, 1, 1]) @ image.affine),
        tmp_path / "ct.nii.gz",
    )
    analysed = runner.invoke(
        app,
        [
            "analyze",
            str(tmp_path / "ct.nii.gz"),
            "--task",
            "spleen-ct-segmentation-test",
            "--tasks-dir",
            str(tmp_path / "tasks"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert analysed.exit_code == 0, analysed.output
    assert list((tmp_path / "out").glob("*/masks/*.nii.gz"))
    # no fitted gate: the tag and pixel checks run, and the result says the OOD check did not
    (result,) = (tmp_path / "out").glob("*/result.json")
    gate = json.loads(result.read_text())["analyses"][0]["gate"]
    assert not gate["ood_fitted"] and "tag and pixel checks only" in gate["notes"][0]
    assert "out_of_distribution" not in {c["name"] for c in gate["checks"]}
