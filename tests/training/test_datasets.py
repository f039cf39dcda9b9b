"""Training datasets: manifest CSV, image + mask folders, MedMNIST npz; each data problem is
refused before training starts, naming the rows or files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsight.cli import app
from medsight.errors import InvalidInputError
from medsight.training.config import ImageMaskFolders, Manifest, Npz, SplitConfig
from medsight.training.data import (
    kfold_by_patient,
    list_cases,
    read_case_image,
    read_case_mask,
    split_by_patient,
)
from tests.conftest import require_data


def _png(path, size=(40, 30), value=100, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new(mode, size, value).save(path)


def _manifest(tmp_path, rows, header="image,label,patient,site"):
    for row in rows:
        name = row.split(",")[0]
        if not name.startswith("missing"):
            _png(tmp_path / name)
    table = tmp_path / "manifest.csv"
    table.write_text(header + "\n" + "\n".join(rows) + "\n")
    return table


def test_manifest_lists_labels_patients_and_subgroups(tmp_path):
    table = _manifest(tmp_path, ["a.png,benign,p1,x", "b.png,malignant,p2,y", "c.png,benign,p2,y"])
    config = Manifest(
        csv=str(table),
        label_column="label",
        classes=["benign", "malignant"],
        patient_column="patient",
        subgroup_columns=["site"],
    )
    cases = list_cases(config)
    assert [(c.path.name, c.label, c.patient) for c in cases] == [
        ("a.png", 0, "p1"),
        ("b.png", 1, "p2"),
        ("c.png", 0, "p2"),
    ]
    assert cases[1].attributes == {"site": "y"} and cases[1].name == "manifest.csv row 3"
    assert read_case_image(cases[0]).shape == (40, 30)


def test_manifest_label_map_merges_values(tmp_path):
    table = _manifest(tmp_path, ["a.png,common,p1,x", "b.png,atypical,p2,x", "c.png,mel,p3,x"])
    config = Manifest(
        csv=str(table),
        label_column="label",
        classes=["naevus", "mel"],
        label_map={"common": "naevus", "atypical": "naevus"},
    )
    assert [c.label for c in list_cases(config)] == [0, 0, 1]


def test_manifest_problems_name_their_rows(tmp_path):
    table = _manifest(
        tmp_path,
        [
            "a.png,benign,p1,x",
            "missing.png,benign,p2,x",
            "b.png,maybe,p3,x",
            "c.png,malignant,p4,x",
        ],
    )
    config = Manifest(csv=str(table), label_column="label", classes=["benign", "malignant"])
    with pytest.raises(InvalidInputError) as raised:
        list_cases(config)
    message = str(raised.value)
    assert "row 3: image file" in message and "missing.png is missing" in message
    assert "row 4: unknown label 'maybe'" in message and "2 problem(s)" in message


def test_manifest_refuses_a_patient_in_two_splits(tmp_path):
    table = _manifest(
        tmp_path,
        ["a.png,benign,p1,train", "b.png,malignant,p1,validation", "c.png,malignant,p2,train"],
        header="image,label,patient,split",
    )
    config = Manifest(
        csv=str(table),
        label_column="label",
        classes=["benign", "malignant"],
        patient_column="patient",
        split_column="split",
    )
    with pytest.raises(InvalidInputError, match=r"patient 'p1' is in train \(manifest.csv row 2\)"):
        list_cases(config)


def test_manifest_refuses_a_single_class_and_missing_columns(tmp_path):
    table = _manifest(tmp_path, ["a.png,benign,p1,x", "b.png,benign,p2,x"])
    config = Manifest(csv=str(table), label_column="label", classes=["benign", "malignant"])
    with pytest.raises(InvalidInputError, match="only one class"):
        list_cases(config)
    config = Manifest(csv=str(table), label_column="diagnosis", classes=["benign", "malignant"])
    with pytest.raises(InvalidInputError, match=r"no column\(s\) \['diagnosis'\]"):
        list_cases(config)


def test_mask_geometry_must_match_its_image(tmp_path):
    _png(tmp_path / "images" / "1.png", size=(40, 30))
    _png(tmp_path / "masks" / "1.png", size=(40, 30), value=255)
    _png(tmp_path / "images" / "2.png", size=(40, 30))
    _png(tmp_path / "masks" / "2.png", size=(30, 40), value=255)
    config = ImageMaskFolders(root=str(tmp_path), images="images/*.png", mask="masks/{id}.png")
    first, second = list_cases(config)
    mask = read_case_mask(first, read_case_image(first))
    assert set(np.unique(mask.array).tolist()) == {1}  # 0/255 becomes 0/1
    with pytest.raises(InvalidInputError, match=r"2\.png: mask size \(30, 40\) differs"):
        read_case_mask(second, read_case_image(second))


def test_missing_masks_are_listed(tmp_path):
    _png(tmp_path / "images" / "1.png")
    _png(tmp_path / "images" / "2.png")
    _png(tmp_path / "masks" / "1.png")
    config = ImageMaskFolders(root=str(tmp_path), images="images/*.png", mask="masks/{id}.png")
    with pytest.raises(InvalidInputError, match=r"2\.png: mask file .*2\.png is missing"):
        list_cases(config)


def test_train_cli_refuses_bad_masks_before_training(tmp_path):
    from tests._tasks import segmenter_2d_task

    segmenter_2d_task(tmp_path / "base")
    for index in range(4):
        _png(tmp_path / "images" / f"{index}.png", size=(64, 64), mode="RGB")
        _png(tmp_path / "masks" / f"{index}.png", size=(64, 64) if index else (32, 64))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'''base_task = "{tmp_path / "base"}"
version = "1.0.0"
[data]
kind = "image-mask-folders"
root = "{tmp_path}"
images = "images/*.png"
mask = "masks/{{id}}.png"
[train]
epochs = 1
steps_per_epoch = 1
''')
    work = tmp_path / "work"
    result = CliRunner().invoke(
        app, ["train", str(recipe), "--tasks-dir", str(tmp_path / "t"), "--work", str(work)]
    )
    assert result.exit_code == 2, result.output
    assert "0.png: mask size (32, 64) differs" in result.output.replace("\n", "")
    assert not (work / "checkpoint.pt").exists()


def test_npz_uses_its_own_split(tmp_path):
    file = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(
        file,
        train_images=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
        train_labels=np.array([[0], [1], [0], [1], [0], [1]]),
        val_images=rng.integers(0, 255, (2, 28, 28), dtype=np.uint8),
        val_labels=np.array([[0], [1]]),
    )
    cases = list_cases(Npz(file=str(file), classes=["benign", "malignant"]))
    train, validation = split_by_patient(cases, SplitConfig())
    assert len(train) == 6 and len(validation) == 2
    image = read_case_image(validation[1])
    with np.load(file) as archive:
        assert np.array_equal(image.array[0].T, archive["val_images"][1])
    np.savez(file, train_images=np.zeros((2, 28, 28)), train_labels=np.array([[0], [5]]))
    with pytest.raises(InvalidInputError, match=r"train_labels\[1\]: unknown label 5"):
        list_cases(Npz(file=str(file), classes=["benign", "malignant"]))


def test_real_medmnist_npz():
    file = require_data("medmnist", "breastmnist_trainval.npz")
    cases = list_cases(Npz(file=str(file), classes=["malignant", "normal_or_benign"]))
    assert sum(c.split == "train" for c in cases) == 546
    assert sum(c.split == "validation" for c in cases) == 78
    assert read_case_image(cases[0]).shape == (28, 28)


def test_kfold_is_patient_disjoint_and_stratified(tmp_path):
    rows = [f"{i}.png,{'malignant' if i % 5 == 0 else 'benign'},p{i // 2},x" for i in range(60)]
    table = _manifest(tmp_path, rows)
    config = Manifest(
        csv=str(table),
        label_column="label",
        classes=["benign", "malignant"],
        patient_column="patient",
    )
    cases = list_cases(config)
    folds = kfold_by_patient(cases, 5, seed=0)
    assert sum(len(f) for f in folds) == len(cases)
    patients = [{c.patient for c in fold} for fold in folds]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not patients[a] & patients[b]
    positives = [sum(c.label for c in fold) for fold in folds]
    assert max(positives) - min(positives) <= 2
