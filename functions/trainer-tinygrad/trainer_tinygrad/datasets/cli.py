"""`trainer-datasets`: fetch, import, verify and list the cached datasets.

Exit status: 0 success; 1 a dataset error (mismatch, fetch failed, not available; `verify`: see its help); 2 bad
usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..protocol import function_version
from .cache import ENV_DATA_DIR, DatasetCache, DatasetStatus, FileState
from .errors import DatasetError
from .manifest import Manifest
from .sources import KNOWN_SOURCES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer-datasets",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=f"environment: {ENV_DATA_DIR} is the dataset cache when --data-dir is not given (the server and "
        "every training process read the same variable).",
    )
    p.add_argument("--version", action="version", version=function_version())
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"the dataset cache (default: ${ENV_DATA_DIR}, else ~/.cache/trainer-tinygrad/datasets)",
    )
    p.add_argument("--manifest", type=Path, help="the manifest (default: the one shipped with the package)")
    sub = p.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download a dataset from its mirrors and verify it")
    fetch.add_argument("name")
    bar = fetch.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    imp = sub.add_parser("import", help="copy a dataset's files from a local directory and verify them")
    imp.add_argument("name")
    imp.add_argument("directory", type=Path)
    sub.add_parser("import-known", help="import datasets from well-known local sources (e.g. Debian packages)")
    ver = sub.add_parser(
        "verify",
        help="re-check the cache; exit 1 on a mismatch or a missing dataset",
        description="Re-check cached datasets against the manifest. With NAME: exit 1 unless NAME is present and "
        "verified. Without: every dataset with a file in the cache is checked (absent ones are listed, not "
        "required); exit 1 when one of them is incomplete or mismatched, or when no dataset is verified at all.",
    )
    ver.add_argument("name", nargs="?", help="the dataset to require (default: every dataset in the cache)")
    ver.add_argument("--force", action="store_true", help="re-hash every file even when its stamp is valid")
    lst = sub.add_parser("list", help="what is known, present, verified, and from which source")
    lst.add_argument("--json", action="store_true", help="JSON as served by GET /api/datasets")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        cache = DatasetCache(args.data_dir, Manifest.load(args.manifest))
        return _COMMANDS[args.command](cache, args)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; a partial download is kept and resumed by the next fetch", file=sys.stderr)
        return 130


def _fetch(cache: DatasetCache, args: argparse.Namespace) -> int:
    status = cache.fetch(args.name, progress=args.progress)
    _print_files(status)
    return 0 if status.verified else 1


def _import(cache: DatasetCache, args: argparse.Namespace) -> int:
    status = cache.import_dir(args.name, args.directory)
    _print_files(status)
    if not status.verified:
        missing = [f.name for f in status.files if f.state is not FileState.VERIFIED]
        print(f"error: {args.name} is incomplete; not verified: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _import_known(cache: DatasetCache, args: argparse.Namespace) -> int:
    done = cache.import_known()
    if not done:
        looked = ", ".join(str(s.directory) for s in KNOWN_SOURCES)
        print(f"no well-known local dataset source found (looked in {looked}); nothing imported")
        return 0
    for item in done:
        verb = "imported from" if item.imported else "already verified; source"
        print(f"{item.status.name}: {verb} {item.status.source} ({item.source.label}) into {cache.root}")
    return 0 if all(item.status.verified for item in done) else 1


def _verify(cache: DatasetCache, args: argparse.Namespace) -> int:
    statuses = cache.verify(args.name, force=args.force)
    failed = []
    for status in statuses:
        if args.name is None and all(f.state is FileState.MISSING for f in status.files):
            # Optional datasets (MNIST, CIFAR-10 offline) are often absent; naming one makes it required.
            print(f"{status.name}: not in the cache (not checked; `verify {status.name}` requires it)")
            continue
        _print_files(status)
        if not status.verified:
            failed.append(status.name)
    if failed:
        print(f"error: not verified: {', '.join(failed)} (in {cache.root})", file=sys.stderr)
        return 1
    if not any(s.verified for s in statuses):
        print(f"error: no dataset in {cache.root} is verified", file=sys.stderr)
        return 1
    return 0


def _list(cache: DatasetCache, args: argparse.Namespace) -> int:
    statuses = cache.statuses()
    if args.json:
        print(json.dumps({"datasets": [s.to_json() for s in statuses]}, indent=2))
        return 0
    print(f"cache: {cache.root}")
    for s in statuses:
        state = "verified" if s.verified else "present, NOT verified" if s.present else "missing"
        done = sum(f.state is FileState.VERIFIED for f in s.files)
        source = f"  source: {s.source}" if s.source else ""
        print(f"{s.name:<14} {state:<22} {done}/{len(s.files)} files{source}")
    return 0


def _print_files(status: DatasetStatus) -> None:
    for f in status.files:
        how = f" by {f.matched} hash" if f.matched else ""
        detail = f": {f.reason}" if f.state is FileState.MISMATCH and f.reason else ""
        print(f"{status.name}/{f.name}: {f.state.value}{how}{detail}")


_COMMANDS = {
    "fetch": _fetch,
    "import": _import,
    "import-known": _import_known,
    "verify": _verify,
    "list": _list,
}
