"""`make verify`: start the reference server on a free port, verify it with the conformance suite, stop it, gate,
and write the evidence pack (EVIDENCE_PACK.md, evidence-pack.json) beside the verification.

`--executor ray` (`make verify EXECUTOR=ray`) first starts a local Ray cluster of its own (a head and two worker
nodes, every process on loopback: the Makefile runs this script through scripts/loopback-only), runs the server on
it, and stops the cluster at the end.

Prints the verdict, the evidence paths and the pack's path; exits non-zero when any check failed or the gate refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tooling/ lives at the repository root

from tooling.launcher import LaunchError, launch
from tooling.ray_local import LocalRayCluster, on_loopback_only

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evidence-dir", type=Path, default=ROOT / "evidence")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="the suite's per-run timeout, seconds")
    parser.add_argument("--executor", choices=("local", "ray"), default="local", help="where the server trains")
    args = parser.parse_args()
    cluster: LocalRayCluster | None = None
    if args.executor == "ray":
        if not on_loopback_only():
            print("verify: the Ray cluster runs on loopback only: scripts/loopback-only python scripts/verify.py ...",
                  file=sys.stderr)  # fmt: skip
            return 2
        print("verify: starting a local Ray cluster (a head and two worker nodes)", flush=True)
        cluster = LocalRayCluster.start([0, 1, 1])
    try:
        return verify(args, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def verify(args: argparse.Namespace, cluster: LocalRayCluster | None) -> int:
    """Serve, verify, stop, gate, pack; the exit status."""
    evidence = args.evidence_dir.resolve()
    log_dir = ROOT / "build" / "verify"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MOCKS_DISABLED": "1", "PYTHONUNBUFFERED": "1"}
    log_path = log_dir / "server.log"
    log_path.unlink(missing_ok=True)
    print(f"verify: starting the reference server (log: {log_path.relative_to(ROOT)})", flush=True)
    try:
        executor = ["--executor", "ray", "--ray-address", cluster.address] if cluster else []
        server = launch(
            ["--evidence-dir", str(evidence), *executor],
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
