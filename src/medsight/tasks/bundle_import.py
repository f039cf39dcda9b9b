"""Turn a MONAI bundle into a medsight task folder (``medsight import-model``).

Read: ``configs/metadata.json`` (network_data_format: inputs, outputs, channel names),
``configs/inference.json`` or ``.yaml`` (``network_def``, preprocessing transforms, inferer),
and ``models/model.ts`` (TorchScript) or ``models/model.pt`` (a state dict for
``network_def``). Nothing in the bundle is ever evaluated: ``network_def`` must name an
allowed MONAI network with literal arguments (any ``$`` expression, ``@`` reference or
``%`` macro is refused), and preprocessing transforms map onto task.toml fields or the import
is refused with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from medsight.errors import InvalidInputError
from medsight.tasks.spec import NETWORK_ALLOW_LIST
from medsight.tasks.task import Task, load_task, sha256_file

__all__ = ["import_bundle"]

RESEARCH_USE = "Research use only, not for diagnostic use."
#: transforms that do not change what the network sees (loading, typing, channel layout)
_NEUTRAL = {
    "LoadImage",
    "LoadImaged",
    "EnsureChannelFirst",
    "EnsureChannelFirstd",
    "EnsureType",
    "EnsureTyped",
    "ToTensor",
    "ToTensord",
    "CastToType",
    "CastToTyped",
    "AddChannel",
    "AddChanneld",
    "Compose",
}


class BundleError(InvalidInputError):
    """The bundle cannot be mapped to a task; the message says what and why."""


def _read_config(configs: Path, stem: str) -> dict[str, Any]:
    for suffix in (".json", ".yaml", ".yml"):
        path = configs / f"{stem}{suffix}"
        if path.is_file():
            text = path.read_text()
            try:
                if suffix == ".json":
                    return dict(json.loads(text))
                import yaml

                return dict(yaml.safe_load(text))
            except (ValueError, TypeError) as exc:
                raise BundleError(f"cannot parse {path.name} ({exc})", path=path) from exc
    raise BundleError(f"no configs/{stem}.json or .yaml in the bundle", path=configs.parent)


def _literal(value: Any, where: str) -> Any:
    """``value`` if it is a literal (number, string, list of literals), else refuse."""
    if isinstance(value, str):
        if value.strip().startswith(("$", "@", "%")):
            raise BundleError(
                f"{where} is an expression or reference ({value!r}); medsight "
                "never evaluates bundle code: give literal values"
            )
        return value
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_literal(v, where) for v in value]
    raise BundleError(f"{where} is a {type(value).__name__}; only literal values can be mapped")


def _target_name(target: Any, where: str) -> str:
    if not isinstance(target, str) or target.startswith(("$", "@", "%")):
        raise BundleError(f"{where} _target_ {target!r} is not a plain class name")
    return target.rsplit(".", 1)[-1]


def _network(config: dict[str, Any], models: Path) -> tuple[dict[str, Any], Path]:
    torchscript = models / "model.ts"
    state = models / "model.pt"
    if torchscript.is_file():
        return {"architecture": "TorchScript", "arguments": {}}, torchscript
    if not state.is_file():
        raise BundleError("neither models/model.ts nor models/model.pt is present", path=models)
    definition = config.get("network_def")
    if not isinstance(definition, dict):
        raise BundleError("models/model.pt needs a network_def in the inference config")
    name = _target_name(definition.get("_target_"), "network_def")
    if name not in NETWORK_ALLOW_LIST or name == "TorchScript":
        allowed = ", ".join(sorted(n for n in NETWORK_ALLOW_LIST if n != "TorchScript"))
        raise BundleError(f"network_def _target_ {name!r} is not on the allow-list ({allowed})")
    arguments = {
        key: _literal(value, f"network_def.{key}")
        for key, value in definition.items()
        if key != "_target_"
    }
    return {"architecture": name, "arguments": arguments}, state


def _transforms(config: dict[str, Any]) -> list[dict[str, Any]]:
    preprocessing = config.get("preprocessing")
    if preprocessing is None:
        return []
    if isinstance(preprocessing, dict):
        items = preprocessing.get("transforms", [])
    else:
        items = preprocessing
    if not isinstance(items, list):
        raise BundleError("preprocessing.transforms is not a list of transforms")
    return [t for t in items if isinstance(t, dict)]


def _map_preprocessing(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(display, preprocessing) tables from the bundle's transforms, or refuse."""
    display: dict[str, Any] = {"window": "none"}
    preprocessing: dict[str, Any] = {"normalize": "none"}
    unknown = []
    for transform in _transforms(config):
        name = _target_name(transform.get("_target_"), "preprocessing")

        def get(key: str, default: Any = None, transform: dict[str, Any] = transform) -> Any:
            return _literal(transform.get(key, default), f"{transform.get('_target_')}.{key}")

        if name in _NEUTRAL:
            continue
        if name in ("Orientationd", "Orientation"):
            preprocessing["reorient"] = str(get("axcodes", "RAS"))
        elif name in ("Spacingd", "Spacing"):
            preprocessing["spacing"] = [float(v) for v in get("pixdim")]
        elif name in ("ScaleIntensityRanged", "ScaleIntensityRange"):
            low, high = float(get("a_min")), float(get("a_max"))
            b_min, b_max = float(get("b_min", 0.0)), float(get("b_max", 1.0))
            if (b_min, b_max) != (0.0, 1.0):
                unknown.append(f"{name} to [{b_min}, {b_max}] (only [0, 1] is mapped)")
            display.update(window="range", value_range=[low, high], clip=bool(get("clip", False)))
        elif name in ("ScaleIntensityd", "ScaleIntensity"):
            display["window"] = "minmax"
        elif name in ("NormalizeIntensityd", "NormalizeIntensity"):
            preprocessing["normalize"] = "zscore_nonzero" if get("nonzero", False) else "zscore"
        else:
            unknown.append(name)
    if unknown:
        raise BundleError(
            f"preprocessing transforms medsight cannot map: {', '.join(unknown)}; "
            "adapt the bundle or write the task.toml by hand"
        )
    inferer = config.get("inferer")
    if isinstance(inferer, dict) and "roi_size" in inferer:
        preprocessing["patch_size"] = [int(v) for v in _literal(inferer["roi_size"], "roi_size")]
        preprocessing["overlap"] = float(_literal(inferer.get("overlap", 0.5), "overlap"))
        preprocessing["batch_size"] = int(_literal(inferer.get("sw_batch_size", 1), "sw_batch"))
    return display, preprocessing


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "bundle"


def import_bundle(bundle: str | Path, tasks_dir: str | Path, *, task_id: str | None = None) -> Task:
    """Write ``tasks_dir/<id>/<version>/`` from a MONAI bundle and return the loaded task."""
    import tomli_w

    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError("not a bundle folder", path=bundle)
    configs = bundle / "configs"
    metadata = _read_config(configs, "metadata")
    config = _read_config(configs, "inference")
    network, weights = _network(config, bundle / "models")

    data_format = metadata.get("network_data_format") or {}
    inputs = (data_format.get("inputs") or {}).get("image")
    outputs = (data_format.get("outputs") or {}).get("pred")
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise BundleError("metadata.json lacks network_data_format inputs.image / outputs.pred")
    spatial_shape = inputs.get("spatial_shape") or []
    spatial_dims = len(spatial_shape)
    if spatial_dims not in (2, 3):
        raise BundleError(f"input spatial_shape {spatial_shape} is neither 2D nor 3D")
    channels = int(inputs.get("num_channels", 1))
    kind = (
        "segmentation"
        if str(outputs.get("format", "")).lower() == "segmentation"
        else ("classification")
    )
    channel_names = outputs.get("channel_def") or {
        str(i): f"class_{i}" for i in range(int(outputs.get("num_channels", 0)))
    }
    if not channel_names:
        raise BundleError("outputs.pred has neither channel_def nor num_channels")

    display, preprocessing = _map_preprocessing(config)
    if "patch_size" not in preprocessing:
        if kind == "segmentation" and inputs.get("is_patch_data"):
            preprocessing["patch_size"] = [int(v) for v in spatial_shape]
        else:
            preprocessing["resize"] = [int(v) for v in spatial_shape]

    identifier = task_id or _slug(str(metadata.get("name") or bundle.name))
    version = str(metadata.get("version") or "0.0.0")
    modality = inputs.get("modality")
    intended = str(metadata.get("intended_use") or metadata.get("description") or "").strip()
    document = {
        "id": identifier,
        "version": version,
        "title": str(metadata.get("name") or identifier),
        "kind": kind,
        "intended_use": f"{intended} (imported MONAI bundle) {RESEARCH_USE}".strip(),
        "acceptance": {
            "spatial_dims": spatial_dims,
            "modalities": [str(modality).upper()] if modality else [],
            "unknown_modality": "review",
            "photometric": ["MONOCHROME2"] if channels == 1 else ["RGB"],
            "channels": [channels if channels in (1, 3) else 1],
        },
        "display": display,
        "preprocessing": preprocessing,
        "networks": [
            {"name": "main", "weights": weights.name, "sha256": sha256_file(weights), **network}
        ],
        "outputs": [
            {
                "name": _slug(str(name)).replace("-", "_"),
                "index": int(index),
                "code": {"value": _slug(str(name)), "scheme": "99MEDSIGHT", "meaning": str(name)},
            }
            for index, name in sorted(channel_names.items(), key=lambda kv: int(kv[0]))
        ],
    }
    folder = Path(tasks_dir) / identifier / version
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / weights.name)
    (folder / "task.toml").write_text(
        f"# imported from the MONAI bundle {bundle.name} by medsight import-model\n"
        + tomli_w.dumps(document)
    )
    card = [
        f"# {identifier} {version}: model card (imported MONAI bundle)",
        "",
        f"**{RESEARCH_USE}**",
        "",
        str(metadata.get("description") or ""),
    ]
    for key in ("authors", "copyright", "data_source", "references", "license"):
        if metadata.get(key):
            card += ["", f"- {key}: {metadata[key]}"]
    (folder / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    return load_task(folder)
