"""The Makefile as the README describes it: `make help` names every target, `make setup` makes the venv with the
interpreter the README says, `make serve` passes a flag only for a variable given on make's command line, so that the
server's own TRAINER_* variables work under it, and `make test`'s two lanes (scripts/test-lanes, run here against a
stub tox) keep their priorities and fail when either lane fails."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from doc_blocks import REPO

pytestmark = pytest.mark.xdist_group("docs")

TARGETS = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)


def make_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_") and k not in ("PORT", "HOST")}
    return {**env, **extra}


def test_make_help_lists_every_target() -> None:
    assert TARGETS is not None
    done = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("make ")}
    assert listed == set(TARGETS.group(1).split())


def serve_flags(args: list[str], env: dict[str, str]) -> list[str]:
    """The flags `make serve` would give the server (a dry run: `make -n` prints the commands, runs none)."""
    done = subprocess.run(
        ["make", "-n", "serve", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    line = next(line for line in done.stdout.replace("\\\n", " ").splitlines() if "-m reference_server" in line)
    return shlex.split(line.split("-m reference_server", 1)[1])


@pytest.mark.parametrize(
    ("args", "env", "flags"),
    [
        ([], {}, []),
        ([], {"TRAINER_PORT": "9000", "PORT": "9001", "HOST": "example"}, []),
        (["PORT=9000"], {}, ["--port", "9000"]),
        (["HOST=127.0.0.2", "EVIDENCE_DIR=/tmp/a b"], {}, ["--host", "127.0.0.2", "--evidence-dir", "/tmp/a b"]),
    ],
)  # fmt: skip
def test_make_serve_passes_a_flag_only_for_a_variable_on_its_command_line(
    args: list[str], env: dict[str, str], flags: list[str]
) -> None:
    assert serve_flags(args, make_env(**env)) == flags


def venv_python(system_python: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> str:
    """The interpreter `make setup` would make .venv with, given the Makefile's SYSTEM_PYTHON."""
    rule = "print-python: ; @echo $(PYTHON)"
    env = {k: v for k, v in make_env().items() if k != "PYTHON"} | (env or {})
    done = subprocess.run(
        ["make", "-s", f"SYSTEM_PYTHON={system_python}", *args, "--eval", rule, "print-python"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_the_venv_is_made_with_the_system_python_when_it_is_recent_and_can_bootstrap_pip(tmp_path: Path) -> None:
    def interpreter(name: str, version: tuple[int, int], has: tuple[str, ...] = ("pip", "ensurepip")) -> str:
        """This Python as the Makefile's `-c` check sees it: reporting `version`, of pip and ensurepip only `has`."""
        preamble = (
            f"import sys, importlib.util as u; sys.version_info = {version!r}; real = u.find_spec; "
            f"u.find_spec = lambda n, *a: (n in {has!r} or None) if n in ('pip', 'ensurepip') else real(n, *a); "
            "exec(sys.argv[1])"
        )
        script = tmp_path / name
        script.write_text(
            f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} -c {shlex.quote(preamble)} "$2"\nexit 2\n'
        )
        script.chmod(0o755)
        return str(script)

    good = interpreter("good", (3, 11))
    assert venv_python(good) == good
    assert venv_python(interpreter("ensurepip-only", (3, 13), ("ensurepip",))) == str(tmp_path / "ensurepip-only")
    assert venv_python(interpreter("pip-only", (3, 11), ("pip",))) == str(tmp_path / "pip-only")
    assert venv_python(interpreter("old", (3, 10))) == "python3"
    assert venv_python(interpreter("bare", (3, 12), ())) == "python3"  # can put no pip into a venv
    assert venv_python(str(tmp_path / "missing")) == "python3"
    assert venv_python(good, ("PYTHON=python3.12",)) == "python3.12"  # make's command line
    assert venv_python(good, env={"PYTHON": "/opt/python3"}) == "/opt/python3"  # the environment


def started_server_url(proc: subprocess.Popen[str], timeout: float = 90.0) -> str:
    """The URL of the `listening on` line `make serve`'s server logs; its output so far if none comes in time."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if found := re.search(r"listening on (http://\S+)", line):
            return found.group(1)
    raise AssertionError("make serve did not start the server:\n" + "".join(seen)[-3000:])


@pytest.mark.parametrize("how", ["make variables", "server variables"])
def test_make_serve_starts_the_server_where_it_is_told(how: str, tmp_path: Path, data_dir: Path) -> None:
    evidence = tmp_path / "elsewhere"
    if how == "make variables":
        command = ["make", "serve", "PORT=0", f"EVIDENCE_DIR={evidence}"]
        env = make_env(TRAINER_DATA_DIR=str(data_dir))
    else:
        command = ["make", "serve"]
        env = make_env(TRAINER_PORT="0", TRAINER_EVIDENCE_DIR=str(evidence), TRAINER_DATA_DIR=str(data_dir))
    env["TRAINER_WORK_DIR"] = str(tmp_path / "work")
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        url = started_server_url(proc)
        assert httpx.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"
        assert (evidence / "training").is_dir(), "the evidence root make was given"
        assert not url.endswith(":8080"), "PORT=0 / TRAINER_PORT=0 picks a free port"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


STUB_TOX = """#!/usr/bin/env bash
# Records how it was called (with its niceness); fails the environments named in $FAIL_ENVS.
echo "$(nice) $*" >> "$CALLS"
case "$*" in *--notest*) [ -z "$FAIL_SETUP" ] || echo "setup: broken (stub)"; exit "${FAIL_SETUP:-0}";; esac
for env in $FAIL_ENVS; do
    case ",$*," in *[,\\ ]"$env"[,\\ ]*) echo "  $env: FAIL code 1 (stub)"; exit 1;; esac
done
echo "  stub: OK (0.01 seconds)"
"""


DECLARATIONS = ("pyproject.toml", "functions/trainer-tinygrad/pyproject.toml", "conformance/pyproject.toml")


def run_lanes(
    tmp_path: Path, fail: str = "", fail_setup: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """scripts/test-lanes in a copy of the repository's layout whose tox is a stub; its result and the stub's calls.
    A second call in the same `tmp_path` runs it again on the same copy (the stub's calls of that run only)."""
    script = tmp_path / "scripts" / "test-lanes"
    if not script.exists():
        script.parent.mkdir()
        script.write_bytes((REPO / "scripts" / "test-lanes").read_bytes())
        script.chmod(0o755)
        for name in DECLARATIONS:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes((REPO / name).read_bytes())
    stub = tmp_path / "stub-tox"
    stub.write_text(STUB_TOX)
    stub.chmod(0o755)
    calls = tmp_path / "calls.log"
    calls.unlink(missing_ok=True)
    warm = tmp_path / "stub-warm"
    warm.write_text('#!/usr/bin/env bash\necho "$(nice) warm" >> "$CALLS"\n')
    warm.chmod(0o755)
    env = {**os.environ, "TOX": str(stub), "WARM": str(warm), "CALLS": str(calls)}
    env |= {"FAIL_ENVS": fail, "FAIL_SETUP": fail_setup}
    done = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done, calls.read_text().splitlines()


def test_make_test_runs_the_clock_reading_lane_at_normal_priority_and_the_rest_niced(tmp_path: Path) -> None:
    done, calls = run_lanes(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # A first run recreates them all (it cannot know what the packages declared when they were made).
    setup, early, late, tests = (
        "0 run --notest --recreate -e ray,py",
        "19 run --recreate -e lint,function,conformance",
        "19 run --recreate -e type,openapi-client",
        "0 run --skip-pkg-install -e ray,py",
    )
    assert sorted(calls) == [setup, tests, early, late, "19 warm"]  # warm: the default steps, not waited for
    assert calls.index("19 warm") < calls.index(early) < calls.index(late)
    # The environments that tox installs this tree into are made after the foreground's, which builds the package:
    # two tox processes would race on .pkg. The others are made beside it.
    assert calls.index(setup) < calls.index(late) and calls.index(setup) < calls.index(tests)
    assert "background lane (lint,function,conformance,type,openapi-client)" in done.stdout


def test_make_test_recreates_the_environments_only_when_a_package_declares_other_dependencies(tmp_path: Path) -> None:
    assert run_lanes(tmp_path)[0].returncode == 0
    done, calls = run_lanes(tmp_path)  # nothing declared differently: the environments are kept
    assert done.returncode == 0 and not [c for c in calls if "--recreate" in c], calls
    declared = tmp_path / "functions" / "trainer-tinygrad" / "pyproject.toml"
    declared.write_text(declared.read_text().replace("dependencies = [", 'dependencies = [\n    "a-new-one>=1",', 1))
    done, calls = run_lanes(tmp_path)  # a new dependency of the training function: both lanes' environments anew
    assert done.returncode == 0
    assert sorted(c for c in calls if "--recreate" in c) == [
        "0 run --notest --recreate -e ray,py",
        "19 run --recreate -e lint,function,conformance",
        "19 run --recreate -e type,openapi-client",
    ]


@pytest.mark.parametrize("fail", ["function", "ray"])
def test_make_test_fails_when_either_lane_fails_and_shows_the_background_log(tmp_path: Path, fail: str) -> None:
    done, calls = run_lanes(tmp_path, fail=fail)
    assert done.returncode != 0
    assert len(calls) == 5, "both lanes ran to their end"
    if fail == "function":
        assert "FAILED; its log" in done.stdout and "function: FAIL code 1 (stub)" in done.stdout
    else:
        assert "ray: FAIL code 1 (stub)" in done.stdout and "FAILED; its log" not in done.stdout


def test_make_test_stops_at_once_when_the_environments_cannot_be_created(tmp_path: Path) -> None:
    done, calls = run_lanes(tmp_path, fail_setup="1")
    assert done.returncode == 1, calls
    # Neither the tests nor the environments made from the package ran; the background lane was stopped.
    assert not [c for c in calls if "--skip-pkg-install" in c or "type" in c], calls
    assert "setup: broken (stub)" in done.stdout and "creating the tox environments failed" in done.stdout
