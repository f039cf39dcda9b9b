"""Write ``development_images.json`` for task versions trained before training wrote it.

The config each version was trained with is in its ``training_record.json``; the images it
lists (all but the held-back part) are read from the shared data and fingerprinted, as
training now does (``training.common.write_development_record``).

Usage: python scripts/development_images.py src/medsight/tasks/derm-lesion [more folders]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medsight.tasks import load_task
from medsight.training.common import write_development_record
from medsight.training.config import TrainConfig


def main(folders: list[str]) -> None:
    for name in folders:
        folder = Path(name)
        record = json.loads((folder / "training_record.json").read_text())
        config = TrainConfig.model_validate(record["config"])
        path = write_development_record(folder, config, load_task(folder))
        images = json.loads(path.read_text())
        print(f"{path}: {len(images['sha256'])} distinct images of {images['images']} listed")


if __name__ == "__main__":
    main(sys.argv[1:])
