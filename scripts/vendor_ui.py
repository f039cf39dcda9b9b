"""Vendor the browser libraries the service's pages use from their npm packages, so the
wheel carries them and the pages work offline (no CDN).

    python scripts/vendor_ui.py          # fetch (npm pack), check integrity, copy, record
    python scripts/vendor_ui.py --check  # the copied files match what VENDOR.json records

Each package is pinned with npm's integrity (sha512 of the tarball); only the files the
pages load are copied, with the package's licence, into
``src/medsight/service/viewer/static/vendor/<name>-<version>/``, and ``VENDOR.json``
there records each file's SHA-256 (tests/service/test_vendored_ui.py checks them)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "src/medsight/service/viewer/static/vendor"

#: name, version, npm integrity, files copied (relative to the package root)
PACKAGES = [
    (
        "openseadragon",
        "6.1.1",
        "sha512-g4iKe2q8B642SaBT3+x4ZF3/8b1TxPPydyjmtrOLgDrlYWMKd9ZXM+1Cb/xa9DVySkvs/7l6HR1nHKfD5F3Tsw==",
        ["LICENSE.txt", "build/openseadragon/openseadragon.min.js", "build/openseadragon/images"],
    ),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch() -> None:
    manifest = {}
    for name, version, integrity, wanted in PACKAGES:
        with tempfile.TemporaryDirectory() as work:
            subprocess.run(
                ["npm", "pack", f"{name}@{version}", "--silent"],
                cwd=work,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            tarball = Path(work) / f"{name}-{version}.tgz"
            digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
            if f"sha512-{digest}" != integrity:
                sys.exit(f"{tarball.name}: integrity differs from the pinned one")
            with tarfile.open(tarball) as archive:
                archive.extractall(work, filter="data")
            target = VENDOR / f"{name}-{version}"
            shutil.rmtree(target, ignore_errors=True)
            for entry in wanted:
                source = Path(work) / "package" / entry
                destination = target / Path(entry).name
                if source.is_dir():
                    shutil.copytree(source, destination)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, destination)
        files = sorted(p for p in target.rglob("*") if p.is_file())
        manifest[f"{name}-{version}"] = {
            "npm": f"{name}@{version}",
            "integrity": integrity,
            "files": {p.relative_to(target).as_posix(): _sha256(p) for p in files},
        }
    (VENDOR / "VENDOR.json").write_text(json.dumps(manifest, indent=2) + "\n")


def check() -> list[str]:
    """What differs between the vendored files and VENDOR.json (empty: nothing)."""
    manifest = json.loads((VENDOR / "VENDOR.json").read_text())
    problems = []
    for folder, entry in manifest.items():
        for relative, digest in entry["files"].items():
            path = VENDOR / folder / relative
            if not path.is_file():
                problems.append(f"{folder}/{relative}: missing")
            elif _sha256(path) != digest:
                problems.append(f"{folder}/{relative}: changed since it was vendored")
    return problems


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    if parser.parse_args().check:
        found = check()
        print("\n".join(found) or "vendored files match VENDOR.json")
        sys.exit(1 if found else 0)
    fetch()
