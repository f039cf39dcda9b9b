"""`medsight train --fold K` for the trainers that hold parts out in one process (a
classifier's groups or folds, a multi-label classifier, a detector): one part trained
alone writes no version, and the finishing run reuses it and ships what one process
training every part in turn ships. The segmenter's side-by-side test is in
test_train_segmenter.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsight.cli import app
from medsight.tasks import load_task

runner = CliRunner()


def _classifier_groups(tmp_path: Path) -> tuple[Path, str]:
    from tests.training.test_evidence import GROUPS, build, recipe

    build(tmp_path / "data", "a", 16, seed=1)
    build(tmp_path / "data", "b", 16, seed=2)
    return recipe(tmp_path, tmp_path / "data", groups=GROUPS), "group-batch-b"


def _multilabel(tmp_path: Path) -> tuple[Path, str]:
    from tests.training.test_train_multilabel import build_dataset, write_recipe

    build_dataset(tmp_path / "data")
    return write_recipe(tmp_path), "fold-2"


def _detector(tmp_path: Path) -> tuple[Path, str]:
    from tests.training.test_train_detector import recipe

    return recipe(tmp_path), "fold-2"


BUILDERS: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "classifier-groups": _classifier_groups,
    "multilabel": _multilabel,
    "detector": _detector,
}


def _train(recipe: Path, tmp_path: Path, tasks: str, work: str, *extra: str) -> object:
    where = ["--tasks-dir", str(tmp_path / tasks), "--work", str(tmp_path / work)]
    return runner.invoke(app, ["train", str(recipe), *where, *extra])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_a_part_trained_alone_is_reused_by_the_finishing_run(tmp_path, kind):
    recipe, part = BUILDERS[kind](tmp_path)
    alone = _train(recipe, tmp_path, "t", "w", "--fold", "2")
    assert alone.exit_code == 0, alone.output
    assert "fold 2 trained" in alone.output and "run again without --fold" in alone.output
    saved = tmp_path / "w" / part / "held_out.npz"
    assert saved.is_file() and (saved.parent / "model.pt").is_file()
    others = [p.parent.name for p in (tmp_path / "w").glob("*/held_out.npz")]
    assert others == [part]  # the other parts are left to their own runs
    assert not list((tmp_path / "t").glob("*/*/task.toml"))  # no version before all parts
    stamp = saved.stat().st_mtime_ns

    finished = _train(recipe, tmp_path, "t", "w")
    assert finished.exit_code == 0, finished.output
    assert saved.stat().st_mtime_ns == stamp  # reused, not retrained
    in_turn = _train(recipe, tmp_path, "t2", "w2")
    assert in_turn.exit_code == 0, in_turn.output
    (version,) = (tmp_path / "t").glob("*/*/task.toml")
    shipped = load_task(version.parent)
    sequential = load_task(tmp_path / "t2" / version.parent.relative_to(tmp_path / "t"))
    assert shipped.weights_sha256 == sequential.weights_sha256

    outside = _train(recipe, tmp_path, "t3", "w3", "--fold", "9")
    assert outside.exit_code == 2 and "fold 9 is outside 1.." in outside.output
    assert not (tmp_path / "w3").exists() or not any((tmp_path / "w3").glob("*/held_out.npz"))


def test_fold_on_a_recipe_without_held_out_parts_is_refused(tmp_path):
    from tests.training.test_evidence import build, recipe

    build(tmp_path / "data", "a", 4, seed=1)
    plain = recipe(tmp_path, tmp_path / "data", groups="")
    refused = _train(plain, tmp_path, "t", "w", "--fold", "1")
    assert refused.exit_code == 3
    assert "--fold needs a recipe with [split] folds or groups" in refused.output
    assert not (tmp_path / "w").exists()
