"""`make verify`: start the reference server on a free port, verify it with the conformance suite, stop it, gate,
and write the evidence pack (EVIDENCE_PACK.md, evidence-pack.json) beside the verification.

Prints the verdict, the evidence paths and the pack's path; exits non-zero when any check failed or the gate refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from reference_server.launcher import LaunchError, launch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evidence-dir", type=Path, default=ROOT / "evidence")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="the suite's per-run timeout, seconds")
    args = parser.parse_args()
    evidence = args.evidence_dir.resolve()
    log_dir = ROOT / "build" / "verify"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MOCKS_DISABLED": "1", "PYTHONUNBUFFERED": "1"}
    log_path = log_dir / "server.log"
    log_path.unlink(missing_ok=True)
    print(f"verify: starting the reference server (log: {log_path.relative_to(ROOT)})", flush=True)
    try:
        server = launch(
            ["--evidence-dir", str(evidence)],
            log_path=log_path,
            env=env,
            cwd=ROOT,
            python=str(BIN / "python"),
            timeout=args.ready_timeout,
        )
    except LaunchError as err:
        print(f"verify: could not run: {err}", file=sys.stderr)
        return 2
    try:
        suite = subprocess.run(
            [str(BIN / "trainer-conformance"), "--base-url", server.url, "--out", str(evidence / "phase1" / "verify"),
             "--timeout", str(args.timeout)],
            env=env, cwd=ROOT, check=False,
        )  # fmt: skip
    finally:
        server.stop(timeout=30)
    if suite.returncode != 0:
        print(f"verify: FAILED (conformance exit {suite.returncode}); server log: {log_path}", file=sys.stderr)
        return suite.returncode
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    sha = commit.stdout.strip() or "unknown"
    gate = subprocess.run(
        [str(BIN / "trainer-conformance"), "gate", "--commit", sha, "--evidence-root", str(evidence)],
        cwd=ROOT, check=False,
    )  # fmt: skip
    verdict = "PASSED" if gate.returncode == 0 else "FAILED (gate)"
    folder = evidence / "phase1" / "verify" / sha
    for run in json.loads((folder / "report.json").read_text()).get("runs", []):
        print(f"verify: {run['role']} run {run['run_id']} {run['status']}: {evidence / 'training' / run['run_id']}")
    pack = subprocess.run(
        [str(BIN / "trainer-conformance"), "pack", "--commit", sha, "--evidence-root", str(evidence)],
        cwd=ROOT, check=False, capture_output=True, text=True,
    )  # fmt: skip
    if pack.returncode != 0:
        reason = pack.stderr.strip() or pack.stdout.strip()
        print(f"verify: the evidence pack was not written: {reason}", file=sys.stderr)
        return pack.returncode
    print(f"verify: {verdict}; evidence: {folder}")
    print(f"verify: evidence pack: {folder / 'EVIDENCE_PACK.md'}", flush=True)
    return gate.returncode


if __name__ == "__main__":
    sys.exit(main())
