"""uPlot, vendored: fetch the pinned version from the npm registry, verify it, and write or check the copy in
reference_server/static/vendor/uplot/.

    python scripts/vendor_uplot.py                    re-fetch the pinned version and check the vendored files
                                                      byte for byte against it (exit 1 on any difference)
    python scripts/vendor_uplot.py --write            re-fetch and (re)write the files and VENDOR.json
    python scripts/vendor_uplot.py --write --version X   move the pin to version X

The tarball comes from `npm pack` (npm's own client, which checks it against the registry's integrity); its SHA-512
is checked again here against the one VENDOR.json records, and each vendored file's SHA-256 against its record. The
server checks the same SHA-256s at start (reference_server/dashboard.py), so it only ever serves the bytes recorded
here. Needs `npm` and the npm registry; nothing else in the project does.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "reference_server" / "static" / "vendor" / "uplot"
RECORD = TARGET / "VENDOR.json"
PACKAGE = "uplot"
#: Vendored file -> its path in the npm tarball.
FILES = {
    "uPlot.iife.min.js": "package/dist/uPlot.iife.min.js",
    "uPlot.min.css": "package/dist/uPlot.min.css",
    "LICENSE": "package/LICENSE",
}


def fetch(version: str, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """`npm pack uplot@version` into workdir: the tarball and what npm reports about it."""
    done = subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{version}", "--json", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
    )
    if done.returncode != 0:
        raise SystemExit(f"vendor_uplot: npm pack {PACKAGE}@{version} failed:\n{done.stderr[-2000:]}")
    info = json.loads(done.stdout)[0]
    return workdir / info["filename"], info


def integrity(path: Path) -> str:
    """The tarball's Subresource-Integrity string (`sha512-<base64>`), as the npm registry records it."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def extract(tarball: Path) -> dict[str, bytes]:
    """The vendored files' bytes, read by name from the tarball (nothing else is extracted)."""
    with tarfile.open(tarball, "r:gz") as archive:
        out = {}
        for name, member in FILES.items():
            handle = archive.extractfile(member)
            if handle is None:
                raise SystemExit(f"vendor_uplot: {member} is not a file in {tarball.name}")
            out[name] = handle.read()
    return out


def main(argv: list[str] | None = None) -> int:
    """Check (default) or write the vendored copy; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the files and VENDOR.json")
    parser.add_argument("--version", help="the version to vendor (default: the one VENDOR.json pins)")
    args = parser.parse_args(argv)
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else None
    version = args.version or (record or {}).get("version")
    if not version:
        raise SystemExit("vendor_uplot: nothing is vendored yet; give --write --version X")
    with tempfile.TemporaryDirectory() as tmp:
        tarball, info = fetch(version, Path(tmp))
        got = integrity(tarball)
        if got != info["integrity"]:
            raise SystemExit(f"vendor_uplot: the tarball hashes to {got}, npm reported {info['integrity']}")
        if record and record["version"] == version and got != record["integrity"]:
            raise SystemExit(
                f"vendor_uplot: {PACKAGE}@{version} is {got} today, VENDOR.json recorded {record['integrity']}"
            )
        files = extract(tarball)
    if args.write:
        TARGET.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (TARGET / name).write_bytes(data)
        document = {
            "package": PACKAGE,
            "version": version,
            "license": "MIT",
            "homepage": "https://github.com/leeoniya/uPlot",
            "tarball": f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{version}.tgz",
            "integrity": got,
            "files": {
                name: {"from": FILES[name], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        }
        RECORD.write_text(json.dumps(document, indent=2) + "\n")
        print(f"vendor_uplot: wrote {PACKAGE}@{version} ({got}) into {TARGET.relative_to(REPO)}")
        return 0
    assert record is not None
    bad = []
    for name, data in files.items():
        want = record["files"][name]["sha256"]
        have = (TARGET / name).read_bytes() if (TARGET / name).is_file() else b""
        if hashlib.sha256(data).hexdigest() != want or have != data:
            bad.append(name)
    if bad:
        print(f"vendor_uplot: differs from {PACKAGE}@{version} on the registry: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"vendor_uplot: {PACKAGE}@{version} matches the registry ({got}); {len(files)} files checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
