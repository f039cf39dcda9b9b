"""What a k-model ensemble costs at analysis time, against the single model it replaces.

For a shipped task, a copy whose task.toml lists its network k times as an ensemble (the
same weights under k names: the cost does not depend on the weights) runs the same images
through the Predictor (ONNX Runtime; each member is its own session, exported once before
timing). Prints seconds per image for k = 1 (the task as shipped) and each k, and the ratio.

Usage: python benchmarks/bench_ensemble.py [--task fundus-vessels] [--images 5] [--members 3 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import tomllib
from pathlib import Path

import tomli_w

from medsight.datasets import shared_data_dir
from medsight.inference import Predictor
from medsight.io import read_image
from medsight.tasks import load_named_task, load_task

CASES = {
    "cxr-pneumonia": "kermany-cxr/train/NORMAL/*.jpeg",
    "fundus-vessels": "drive/training/images/*.tif",
    "derm-lesion": "ph2/images/*.jpg",
    "hippocampus-mr": "hippocampus-mr/imagesTr/*.nii.gz",
}


def ensemble_copy(task_name: str, members: int, folder: Path) -> Path:
    task = load_named_task(task_name)
    shutil.copytree(task.folder, folder)
    document = tomllib.loads((folder / "task.toml").read_text())
    first = document["networks"][0]
    document["networks"] = [{**first, "name": f"member-{k}"} for k in range(members)]
    document["ensemble"] = [n["name"] for n in document["networks"]]
    document["version"] = f"{document['version']}-x{members}"
    (folder / "task.toml").write_text(tomli_w.dumps(document))
    return folder


def seconds_per_image(task_folder: Path, images: list) -> float:
    predictor = Predictor(load_task(task_folder), backend="onnxruntime", explain=False)
    predictor.predict(images[0])  # export and warm up
    started = time.perf_counter()
    for image in images:
        predictor.predict(image)
    return (time.perf_counter() - started) / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fundus-vessels", choices=sorted(CASES))
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--members", type=int, nargs="+", default=[3, 5])
    args = parser.parse_args()
    paths = sorted(shared_data_dir().glob(CASES[args.task]))[: args.images]
    images = [read_image(p) for p in paths]
    single = seconds_per_image(load_named_task(args.task).folder, images)
    print(f"{args.task}: {len(images)} images, ONNX Runtime")
    print(f"  1 model:   {single:.3f} s/image")
    with tempfile.TemporaryDirectory() as scratch:
        for members in args.members:
            folder = ensemble_copy(args.task, members, Path(scratch) / f"x{members}")
            seconds = seconds_per_image(folder, images)
            print(
                f"  {members} models:  {seconds:.3f} s/image "
                f"({seconds / single:.2f}x the single model)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
