"""The command line: subcommands, exit statuses, stdout for the verdict, stderr for progress and errors."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_target import Breakage, ScriptedTarget
from trainer_conformance.cli import CLOSED_PIPE, TOKEN_ENV, main, parser
from trainer_conformance.progress import LiveProgress, PlainProgress, Progress, progress_for


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer_conformance", *args],
        capture_output=True, text=True, check=False, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_unreachable_target_exits_2_and_says_so_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--base-url", f"http://127.0.0.1:{closed_port()}", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1].startswith("trainer-conformance: COULD NOT RUN: target unreachable")
    assert list(tmp_path.iterdir()) == [], "nothing is written when the suite could not run"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--base-url", "ftp://example"],
        ["--base-url", "http://x", "--dataset", "imagenet"],
        ["--base-url", "http://x", "--check", "no.such_check"],
        ["--base-url", "http://x", "--profile", "stage9"],
        ["run", "--base-url", "http://x", "--run-config", "[1]"],
        ["gate"],
    ],
)
def test_bad_arguments_exit_2_with_the_reason_on_stderr(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == "" and captured.err.strip()


@pytest.mark.parametrize("given", ["0", "-3", "ten"])
def test_fuzz_examples_must_be_a_count(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--base-url", "http://x", "--fuzz", "--fuzz-examples", given])
    assert exited.value.code == 2
    assert f"--fuzz-examples: {given!r} is not a whole number of at least 1" in capsys.readouterr().err


def test_passing_and_failing_targets_exit_0_and_1_naming_the_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedTarget() as good:
        assert main(["--base-url", good.url, "--out", str(tmp_path), "--check", "health", "--commit", "c1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # A subset of the checks is a partial run: it goes beside the commit's folder, never into it.
    assert line.startswith("trainer-conformance: PASSED") and line.endswith(str(tmp_path / "partial-c1"))
    assert not (tmp_path / "c1").exists()
    with ScriptedTarget(Breakage(mocks=True)) as bad:
        assert main(["run", "--base-url", bad.url, "--out", str(tmp_path), "--check", "health"]) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "FAILED 3 of 4 checks (health.liveness, health.readiness, health.headers)" in line
    # Without --commit the folder is named by the target's X-Commit-SHA.
    assert (tmp_path / "partial-abc1234def5678" / "report.json").is_file()


def test_json_prints_one_summary_on_stdout_and_the_verdict_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedTarget(Breakage(mocks=True)) as bad:
        code = main(["--base-url", bad.url, "--out", str(tmp_path), "--check", "health", "--json", "--quiet"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == summary["exit_code"] == 1
    assert summary["verdict"] == "failed" and summary["failed"] == ["health.liveness", "health.readiness",
                                                                     "health.headers"]  # fmt: skip
    assert summary["summary"]["total"] == 4 and summary["folder"] == str(tmp_path / "partial-abc1234def5678")
    assert captured.err.strip() == summary["line"]
    unreachable = main(["--base-url", f"http://127.0.0.1:{closed_port()}", "--json"])
    assert unreachable == 2 and json.loads(capsys.readouterr().out)["verdict"] == "could_not_run"


def test_progress_goes_to_stderr_as_plain_lines_off_a_terminal_and_quiet_silences_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedTarget() as good:
        main(["--base-url", good.url, "--out", str(tmp_path), "--check", "health", "--check", "sse.rate"])
        captured = capsys.readouterr()
        assert "\r" not in captured.err and "\x1b" not in captured.err
        lines = captured.err.splitlines()
        assert any("health: GET" in line for line in lines)
        assert any("main run:" in line and "succeeded" in line for line in lines), lines
        assert any(line.endswith("sse.rate passed" + line.split("sse.rate passed", 1)[-1]) for line in lines)
        assert captured.out.startswith("trainer-conformance: PASSED")
        main(["--base-url", good.url, "--out", str(tmp_path), "--check", "health", "--quiet"])
        assert capsys.readouterr().err == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_line_in_colour_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()
    live = progress_for(screen)
    assert isinstance(live, LiveProgress)
    live.status("main run", "running, step 10/100")
    live.outcome("sse.rate", "passed", 0.01)
    live.close()
    assert "\r\x1b[2K" in screen.getvalue() and "\x1b[32mpassed" in screen.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain_colours = Terminal()
    quiet_colour = progress_for(plain_colours)
    quiet_colour.outcome("sse.rate", "failed", 0.01, "too few events")
    assert "\x1b[31m" not in plain_colours.getvalue() and "too few events" in plain_colours.getvalue()
    assert isinstance(progress_for(io.StringIO()), PlainProgress)
    assert type(progress_for(screen, quiet=True)) is Progress


def test_gate_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "--commit", "abc1234", "--evidence-root", str(tmp_path)]) == 1
    assert "REFUSED abc1234" in capsys.readouterr().out


def test_version_and_every_subcommand_in_help() -> None:
    done = cli("--version")
    assert (
        done.returncode == 0 and done.stdout.startswith("trainer-conformance ") and done.stdout.split()[1][0].isdigit()
    )
    helped = cli("--help").stdout
    assert all(command in helped for command in ("run", "gate", "list", "pack"))
    assert TOKEN_ENV in helped and TOKEN_ENV in cli("run", "--help").stdout, "the token's variable, in full"
    for command in ("gate", "list", "pack"):
        done = cli(command, "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"usage: trainer-conformance {command}")


def test_the_token_comes_from_the_environment_so_ps_does_not_show_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    assert parser().parse_args(["run", "--base-url", "http://x"]).token == "s3cret"
    assert parser().parse_args(["run", "--base-url", "http://x", "--token", "other"]).token == "other"


def test_console_script_lists_every_check() -> None:
    done = cli("list")
    assert done.returncode == 0
    assert "sse.rate" in done.stdout and "mocks.zero_learning_rate" in done.stdout and "fuzz.positive" in done.stdout


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    os.close(read)
    closed = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["list"]) == CLOSED_PIPE
    finally:
        monkeypatch.undo()
        closed.close()
    piped = subprocess.run(
        f"'{sys.executable}' -m trainer_conformance list | head -1", shell=True, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert piped.stdout.startswith("health.liveness") and piped.stderr == ""
