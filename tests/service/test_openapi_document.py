"""docs/openapi.json says what the service serves (regenerate: scripts/write_openapi.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_published_openapi_document_is_current():
    spec = importlib.util.spec_from_file_location(
        "write_openapi", ROOT / "scripts/write_openapi.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = json.loads(json.dumps(module.openapi_document()))
    published = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert published == current, "run python scripts/write_openapi.py"
    assert (
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{numbers}"
        in current["paths"]
    )
