"""Write docs/openapi.json from the service's routes (a test checks it is current).

Usage: python scripts/write_openapi.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def openapi_document() -> dict:
    from medsight.service import InstanceStore
    from medsight.service.app import create_app

    with tempfile.TemporaryDirectory() as folder:
        return create_app(InstanceStore(Path(folder))).openapi()


if __name__ == "__main__":
    target = Path(__file__).parents[1] / "docs" / "openapi.json"
    target.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {target}\n")
