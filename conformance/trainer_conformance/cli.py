"""`trainer-conformance`: verify a training server over HTTP, gate a commit on its evidence, list the checks, pack
the evidence for a status report.

    trainer-conformance [run] --base-url URL [--out DIR] [--commit SHA] [--profile NAME] [--dataset NAME]
                        [--owners FILE] [--timeout S] [--ready-timeout S] [--check ID ...] [--run-config JSON]
                        [--fuzz [--fuzz-seconds S] [--fuzz-examples N]] [--quiet] [--json]
    trainer-conformance gate --commit SHA [--evidence-root DIR] [--profile NAME]
    trainer-conformance list [--markdown | --update FILE]
    trainer-conformance pack --commit SHA [--evidence-root DIR] [--profile NAME]
    trainer-conformance --version

Exit status: 0 every required check passed (gate: passed; pack: written); 1 a check failed (gate: refused); 2 the
suite could not run (unreachable target, bad arguments); 130 interrupted. Stdout carries the verdict line (or, with
`--json`, one JSON summary); progress, errors and "could not run" go to stderr. A reader that closes the pipe early
(`trainer-conformance list | head -1`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .profile import DEFAULT_PROFILE, profile_names
from .session import DEFAULT_READY_TIMEOUT_S

PROG = "trainer-conformance"
DATASETS = ("mnist", "fashion-mnist", "cifar10")
COMMANDS = ("run", "gate", "list", "pack")
#: The token may come from the environment, where `ps` does not show it.
TOKEN_ENV = "TRAINER_CONFORMANCE_TOKEN"
#: The variables the commands read, for --help.
ENVIRONMENT = f"""environment:
  {TOKEN_ENV}  run: the bearer token (--token wins; the variable does not show in `ps`)
  NO_COLOR                   run: no colour in the live progress line on a terminal
  CI_RUN_URL                 pack: the CI run to link (GitHub Actions and GitLab CI are recognised without it)
"""
#: What a shell reports for a process ended by SIGPIPE: the exit status when the reader closed the pipe.
CLOSED_PIPE = 141


def version() -> str:
    """The installed trainer-conformance version."""
    from .runner import suite_version

    return suite_version()


def parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per command (`run` is the default)."""
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Verify a training server over HTTP and write verification evidence; gate a commit on it.\n"
        f"Without a command, `run` is meant: `{PROG} --base-url URL`.\nEach command's options: {PROG} COMMAND --help.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"{PROG} {version()}")
    commands = top.add_subparsers(dest="command", metavar="{run,gate,list,pack}")
    run = commands.add_parser("run", help="verify a target (the default command)", description=__doc__)
    _run_parser(run)
    run.epilog = ENVIRONMENT
    _commit_command(
        commands,
        "gate",
        "pass a commit only with an intact, passing verification",
        "Pass only when a passing verification report exists for COMMIT and the training evidence it names is intact.",
    )
    listing = commands.add_parser("list", help="every check: id, title, requirement")
    listing.add_argument("--markdown", action="store_true", help="the checks table of docs/conformance.md")
    listing.add_argument(
        "--update", type=Path, metavar="FILE", help="rewrite the checks table between its markers in FILE"
    )
    _commit_command(
        commands,
        "pack",
        "write EVIDENCE_PACK.md and evidence-pack.json for a verified commit",
        "Write the status report a project manager links to (EVIDENCE_PACK.md, evidence-pack.json) into COMMIT's "
        "verification folder: the gate's verdict, the CI run, every evidence folder, the discrepancies.",
    )
    return top


def _commit_command(commands: Any, name: str, summary: str, description: str) -> None:
    """A command about one commit's verification folder (`gate`, `pack`)."""
    sub = commands.add_parser(name, help=summary, description=description)
    sub.add_argument(
        "--commit", required=True, help="the commit: its folder is <evidence-root>/<profile's folder>/COMMIT"
    )
    sub.add_argument("--evidence-root", type=Path, default=Path("evidence"), help="default: evidence")
    sub.add_argument("--profile", default=DEFAULT_PROFILE, choices=profile_names(), help="default: %(default)s")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _run_parser(run: argparse.ArgumentParser) -> None:
    run.formatter_class = argparse.RawDescriptionHelpFormatter
    run.add_argument("--base-url", required=True, help="the target, e.g. http://127.0.0.1:8080")
    run.add_argument("--out", type=Path, help="evidence root for verification folders (default evidence/phase1/verify)")
    run.add_argument("--commit", help="folder name under OUT (default: the target's X-Commit-SHA)")
    run.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        choices=profile_names(),
        help="the stage markers to expect (X-Phase, X-Mocks, the health body's phase and mocks); default %(default)s",
    )
    run.add_argument("--dataset", choices=DATASETS, help="dataset for the runs (default: the target's default)")
    run.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"sent as `Authorization: Bearer TOKEN`, redacted in probes; prefer {TOKEN_ENV}, which ps does not show",
    )
    run.add_argument("--owners", type=Path, help="a CODEOWNERS file: failures name their owners")
    run.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take (default 300)")
    run.add_argument(
        "--ready-timeout",
        type=float,
        default=DEFAULT_READY_TIMEOUT_S,
        help=f"seconds to wait for /readyz to say ready before checking (default {DEFAULT_READY_TIMEOUT_S:g})",
    )
    run.add_argument(
        "--run-config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="extra fields for the main run's request, e.g. '{\"steps\": 300}' (default: the target's defaults; "
        "the gate refuses reports made with anything but a dataset here)",
    )
    run.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only this check or section (repeatable, e.g. sse.rate or sse); the gate refuses partial reports",
    )
    run.add_argument(
        "--fuzz",
        action="store_true",
        help="also run the fuzz checks: Schemathesis against the target's /openapi.json (needs the `fuzz` extra)",
    )
    run.add_argument("--fuzz-seconds", type=float, default=None, help="time budget of each fuzz phase (default 60)")
    run.add_argument(
        "--fuzz-examples",
        type=_positive_int,
        default=None,
        metavar="N",
        help="examples per operation in each fuzz phase (default 50); without --fuzz-seconds, one pass bounded by "
        "examples instead of time: the same test cases however loaded the machine is",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (the verdict: stderr)")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be said, and saying so would be noise. Point stdout at
        # /dev/null so the interpreter's final flush does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_PIPE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: list[str]) -> int:
    if not args or args[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args = ["run", *args]
    options = parser().parse_args(args)
    if options.command == "gate":
        return gate_main(options)
    if options.command == "list":
        return list_main(markdown=options.markdown, update=options.update)
    if options.command == "pack":
        return pack_main(options)
    return run_main(options)


def run_main(options: argparse.Namespace) -> int:
    """`trainer-conformance run`."""
    from .progress import progress_for
    from .runner import run_suite
    from .session import Options

    if not isinstance(options.run_config, dict):
        return _could_not_run("--run-config must be a JSON object", options.json)
    if not options.base_url.startswith(("http://", "https://")):
        return _could_not_run(f"--base-url {options.base_url!r} is not an http(s) URL", options.json)
    patterns = list(options.check)
    if options.fuzz:
        from .fuzzing import fuzzing_available, phase_seconds

        if problem := fuzzing_available():
            return _could_not_run(problem, options.json)
        if patterns and not any(p == "fuzz" or p.startswith("fuzz.") for p in patterns):
            patterns.append("fuzz")
        fuzz_examples = options.fuzz_examples
        fuzz_seconds = phase_seconds(options.fuzz_seconds, fuzz_examples)
    else:
        fuzz_seconds, fuzz_examples = None, None
    outcome = run_suite(
        Options(
            base_url=options.base_url,
            dataset=options.dataset,
            timeout=options.timeout,
            token=options.token,
            main_request=options.run_config,
            profile=options.profile,
            ready_timeout=options.ready_timeout,
            fuzz_seconds=fuzz_seconds,
            fuzz_examples=fuzz_examples,
        ),
        out=options.out,
        commit=options.commit,
        owners_file=options.owners,
        patterns=patterns,
        progress=progress_for(sys.stderr, quiet=options.quiet),
    )
    if outcome.exit_code == 2:
        return _could_not_run(outcome.line.split("COULD NOT RUN: ", 1)[-1], options.json)
    if options.json:
        print(outcome.line, file=sys.stderr)
        print(json.dumps(_summary(outcome), indent=2))
    else:
        print(outcome.line)
    return outcome.exit_code


def _summary(outcome: Any) -> dict[str, Any]:
    report = outcome.report or {}
    checks = report.get("checks", [])
    return {
        "verdict": report.get("verdict"),
        "exit_code": outcome.exit_code,
        "line": outcome.line,
        "folder": str(outcome.folder) if outcome.folder else None,
        "commit": report.get("commit"),
        "profile": report.get("profile"),
        "target": report.get("target", {}).get("base_url"),
        "duration_s": report.get("duration_s"),
        "readiness": report.get("readiness"),
        "summary": report.get("summary"),
        "failed": [c["id"] for c in checks if c["status"] in ("failed", "error")],
        "checks": [{k: c[k] for k in ("id", "status", "duration_s", "failure", "message", "evidence")} for c in checks],
    }


def _could_not_run(reason: str, as_json: bool) -> int:
    print(f"{PROG}: COULD NOT RUN: {reason}", file=sys.stderr)
    if as_json:
        print(json.dumps({"verdict": "could_not_run", "exit_code": 2, "error": reason}, indent=2))
    return 2


def gate_main(options: argparse.Namespace) -> int:
    """`trainer-conformance gate`."""
    from .gate import run_gate

    outcome = run_gate(options.commit, options.evidence_root, profile=options.profile)
    for problem in outcome.problems:
        print(f"  - {problem}")
    if outcome.passed:
        print(
            f"{PROG} gate: PASSED {options.commit}: {outcome.folder} "
            f"(training evidence of {len(outcome.runs)} runs intact)"
        )
        return 0
    print(
        f"{PROG} gate: REFUSED {options.commit}: {len(outcome.problems)} problem(s); "
        f"evidence: {outcome.folder or options.evidence_root}"
    )
    return 1


def list_main(*, markdown: bool = False, update: Path | None = None) -> int:
    """`trainer-conformance list`: every check id, title and requirement (or the docs' Markdown table)."""
    from .registry import checks_table, select, update_table

    if update is not None:
        changed = update_table(update)
        print(f"{PROG} list: {update} {'updated' if changed else 'already up to date'}")
        return 0
    if markdown:
        sys.stdout.write(checks_table())
        return 0
    for check in select(include_optional=True):
        print(f"{check.id}\t{check.title}\n\t{check.requirement}")
    return 0


def pack_main(options: argparse.Namespace) -> int:
    """`trainer-conformance pack`: EVIDENCE_PACK.md and evidence-pack.json beside the verification."""
    from .pack import write_pack

    try:
        written = write_pack(options.commit, options.evidence_root, profile=options.profile)
    except FileNotFoundError as exc:
        print(f"{PROG} pack: {exc}", file=sys.stderr)
        return 1
    print(f"{PROG} pack: {written.markdown} ({written.verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
