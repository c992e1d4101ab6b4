"""The command line: exit statuses and the verdict line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_target import Breakage, ScriptedTarget
from trainer_conformance.cli import main


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_target_exits_2_with_one_verdict_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--base-url", f"http://127.0.0.1:{closed_port()}", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 2
    assert lines[-1].startswith("trainer-conformance: COULD NOT RUN: target unreachable")
    assert list(tmp_path.iterdir()) == [], "nothing is written when the suite could not run"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--base-url", "ftp://example"],
        ["--base-url", "http://x", "--dataset", "imagenet"],
        ["--base-url", "http://x", "--check", "no.such_check"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    assert code == 2


def test_passing_and_failing_targets_exit_0_and_1_naming_the_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedTarget() as good:
        assert main(["--base-url", good.url, "--out", str(tmp_path), "--check", "health", "--commit", "c1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("trainer-conformance: PASSED") and line.endswith(str(tmp_path / "c1"))
    with ScriptedTarget(Breakage(mocks=True)) as bad:
        assert main(["--base-url", bad.url, "--out", str(tmp_path), "--check", "health"]) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "FAILED 3 of 4 checks (health.liveness, health.readiness, health.headers)" in line
    # Without --commit the folder is named by the target's X-Commit-SHA.
    assert (tmp_path / "abc1234def5678" / "report.json").is_file()


def test_gate_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "--commit", "abc1234", "--evidence-root", str(tmp_path)]) == 1
    assert "REFUSED abc1234" in capsys.readouterr().out


def test_console_script_lists_every_check() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainer_conformance", "list"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "sse.rate" in done.stdout and "mocks.zero_learning_rate" in done.stdout
