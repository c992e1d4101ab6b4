"""`make verify`: start the reference server on a free port, verify it with the conformance suite, gate, stop.

Prints the verdict and the evidence paths; exits non-zero when any check failed or the gate refused.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll /readyz until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the reference server exited with status {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as err:
            last = f"{err.code} {err.read().decode(errors='replace')[:300]}"
        except OSError as err:
            last = str(err)
        time.sleep(0.5)
    raise RuntimeError(f"the reference server was not ready within {timeout:.0f} s: {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evidence-dir", type=Path, default=ROOT / "evidence")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="the suite's per-run timeout, seconds")
    args = parser.parse_args()
    evidence = args.evidence_dir.resolve()
    log_dir = ROOT / "build" / "verify"
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MOCKS_DISABLED": "1", "PYTHONUNBUFFERED": "1"}
    log_path = log_dir / "server.log"
    print(f"verify: starting the reference server on {url} (log: {log_path.relative_to(ROOT)})", flush=True)
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "python"), "-m", "reference_server", "--host", "127.0.0.1", "--port", str(port),
             "--evidence-dir", str(evidence)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_ready(url, server, args.ready_timeout)
            suite = subprocess.run(
                [str(BIN / "trainer-conformance"), "--base-url", url, "--out", str(evidence / "phase1" / "verify"),
                 "--timeout", str(args.timeout)],
                env=env, cwd=ROOT, check=False,
            )  # fmt: skip
        except RuntimeError as err:
            print(f"verify: could not run: {err}", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            return 2
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
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
    print(f"verify: {verdict}; evidence: {folder}", flush=True)
    return gate.returncode


if __name__ == "__main__":
    sys.exit(main())
