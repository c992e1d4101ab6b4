"""`trainer-conformance`: verify a training server over HTTP, or gate a commit on its verification evidence.

    trainer-conformance --base-url URL [--out DIR] [--commit SHA] [--dataset NAME] [--token T] [--owners FILE]
                        [--timeout S] [--check ID ...]
    trainer-conformance gate --commit SHA [--evidence-root DIR]
    trainer-conformance list

Exit status: 0 every required check passed (gate: passed); 1 a check failed (gate: refused); 2 the suite could not
run (unreachable target, bad arguments). The last line printed is the verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .runner import DEFAULT_OUT, run_suite

DATASETS = ("mnist", "fashion-mnist", "cifar10")


def _suite_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer-conformance",
        description="Verify a training server over HTTP and write verification evidence under OUT/COMMIT/. "
        "Subcommands: `gate` (pass a commit only with intact passing evidence), `list` (the checks).",
    )
    parser.add_argument("--base-url", required=True, help="the target, e.g. http://127.0.0.1:8080")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"evidence root (default {DEFAULT_OUT})")
    parser.add_argument("--commit", help="folder name under OUT (default: the target's X-Commit-SHA)")
    parser.add_argument("--dataset", choices=DATASETS, help="dataset for the runs (default: the target's default)")
    parser.add_argument("--token", help="sent as `Authorization: Bearer TOKEN` (redacted in probes)")
    parser.add_argument("--owners", type=Path, help="a CODEOWNERS file: failures name their owners")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take (default 300)")
    parser.add_argument(
        "--run-config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="extra fields for the main run's request, e.g. '{\"steps\": 300}' (default: the target's defaults; "
        "the gate refuses reports made with anything but a dataset here)",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only this check or section (repeatable, e.g. sse.rate or sse); the gate refuses partial reports",
    )
    return parser


def _gate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer-conformance gate",
        description="Pass only when a passing verification report exists for COMMIT and the training evidence it "
        "names is intact.",
    )
    parser.add_argument("--commit", required=True)
    parser.add_argument("--evidence-root", type=Path, default=Path("evidence"), help="default: evidence")
    return parser


def gate_main(argv: Sequence[str]) -> int:
    """`trainer-conformance gate`."""
    from .gate import run_gate

    args = _gate_parser().parse_args(argv)
    outcome = run_gate(args.commit, args.evidence_root)
    for problem in outcome.problems:
        print(f"  - {problem}")
    if outcome.passed:
        print(
            f"trainer-conformance gate: PASSED {args.commit}: {outcome.folder} "
            f"(training evidence of {len(outcome.runs)} runs intact)"
        )
        return 0
    print(
        f"trainer-conformance gate: REFUSED {args.commit}: {len(outcome.problems)} problem(s); "
        f"evidence: {outcome.folder or args.evidence_root}"
    )
    return 1


def list_main() -> int:
    """`trainer-conformance list`: every check id, title and requirement."""
    from .registry import select

    for check in select():
        print(f"{check.id}\t{check.title}\n\t{check.requirement}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gate"]:
        return gate_main(args[1:])
    if args[:1] == ["list"]:
        return list_main()
    options = _suite_parser().parse_args(args)
    from .session import Options

    if not isinstance(options.run_config, dict):
        print("trainer-conformance: COULD NOT RUN: --run-config must be a JSON object")
        return 2
    if not options.base_url.startswith(("http://", "https://")):
        print(f"trainer-conformance: COULD NOT RUN: --base-url {options.base_url!r} is not an http(s) URL")
        return 2
    outcome = run_suite(
        Options(
            base_url=options.base_url,
            dataset=options.dataset,
            timeout=options.timeout,
            token=options.token,
            main_request=options.run_config,
        ),
        out=options.out,
        commit=options.commit,
        owners_file=options.owners,
        patterns=options.check,
    )
    print(outcome.line)
    return outcome.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
