"""Starting the server: MOCKS_DISABLED, configuration errors, and never importing tinygrad."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_harness import REPO, ServerFactory

from reference_server.provenance import ServiceProvenance
from reference_server.settings import OPTIONS, OTHER_VARIABLES, ConfigError, Settings, load, parser


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    argv = [sys.executable, "-m", "reference_server", "--port", "0", "--evidence-dir", str(tmp_path / "ev"), *args]
    return subprocess.run(argv, env=base | env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


@pytest.mark.parametrize("value", ["0", "false", "", "yes", "true"])
def test_refuses_to_start_unless_mocks_disabled_is_1(tmp_path: Path, value: str) -> None:
    done = _run([], {"MOCKS_DISABLED": value}, tmp_path)
    assert done.returncode != 0
    assert "MOCKS_DISABLED" in done.stderr
    assert not (tmp_path / "ev").exists()  # refused before touching anything


def test_starts_when_mocks_disabled_is_absent(server_factory: ServerFactory) -> None:
    server = server_factory(env={"MOCKS_DISABLED": None}, wait_ready=False)
    with server.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["mocks"] is False
        assert health.headers["X-Mocks"] == "false"


def test_bad_configuration_exits_with_a_message(tmp_path: Path) -> None:
    done = _run(["--max-concurrent-runs", "0"], {"MOCKS_DISABLED": "1"}, tmp_path)
    assert done.returncode == 2 and "--max-concurrent-runs" in done.stderr and "Traceback" not in done.stderr
    done = _run([], {"MOCKS_DISABLED": "1", "TRAINER_COMMIT": "not-a-commit"}, tmp_path)
    assert done.returncode == 2 and "TRAINER_COMMIT" in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRAINER_SSE_HEARTBEAT_S", "nan"),
        ("TRAINER_CANCEL_GRACE_S", "nan"),
        ("TRAINER_HEADER_TIMEOUT_S", "inf"),
        ("TRAINER_WRITE_TIMEOUT_S", "-1"),
        ("TRAINER_MAX_BODY_BYTES", "0"),
        ("TRAINER_MAX_SSE_SUBSCRIBERS", "1e3"),
        ("TRAINER_NICE", "20"),
        ("TRAINER_LOG_LEVEL", "verbose"),
        ("TRAINER_PROTECT_READS", "maybe"),
    ],
)
def test_every_bad_setting_exits_2_naming_it_without_a_traceback(variable: str, value: str, tmp_path: Path) -> None:
    done = _run([], {"MOCKS_DISABLED": "1", variable: value}, tmp_path)
    assert done.returncode == 2 and variable in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "ev").exists()


def test_protected_reads_without_a_token_refuse_to_start(tmp_path: Path) -> None:
    done = _run([], {"MOCKS_DISABLED": "1", "TRAINER_PROTECT_READS": "1"}, tmp_path)
    assert done.returncode == 2 and "TRAINER_API_TOKEN" in done.stderr


def test_a_commit_id_is_accepted_in_either_case() -> None:
    upper = ServiceProvenance.detect({"TRAINER_COMMIT": "ABCDEF0123456789"})
    assert upper.commit == "abcdef0123456789"


def test_help_and_the_readme_name_every_setting_with_its_one_default() -> None:
    text = parser().format_help()
    readme = (REPO / "README.md").read_text()
    rows = {
        cells[1].strip("` "): cells
        for line in readme.splitlines()
        if line.startswith("| ") and len(cells := [c.strip() for c in line.strip("|").split("|")]) == 4
    }
    for option in OPTIONS:
        assert option.env in text, option.env
        assert option.env in rows, f"README's configuration table lacks {option.env}"
        default = rows[option.env][2].strip("`")
        shown = option.shown_default or str(getattr(Settings(), option.name))
        shown = {"None": "unset", "False": "0", "True": "1"}.get(shown, shown)
        assert default == shown or float(default) == float(shown), (option.env, default, shown)
        if option.flag:
            assert option.flag_name in text and rows[option.env][0] == f"`{option.flag_name}`"
    for variable in OTHER_VARIABLES:
        assert variable in text and variable in rows
    assert "verify-evidence" in text


def test_flags_win_over_environment_over_defaults() -> None:
    env = {"TRAINER_PORT": "9001", "TRAINER_MAX_CONCURRENT_RUNS": "2", "TRAINER_EVIDENCE_DIR": "/tmp/e"}
    settings = load(["--port", "9002"], env)
    assert (settings.port, settings.max_concurrent_runs, str(settings.evidence_dir)) == (9002, 2, "/tmp/e")
    assert load([], {}).max_concurrent_runs == 1
    with pytest.raises(ConfigError, match="TRAINER_PORT"):
        load([], {"TRAINER_PORT": "eighty"})
    with pytest.raises(ConfigError, match="TRAINER_API_TOKEN"):
        load([], {"TRAINER_API_TOKEN": "short"})


def test_commit_header_follows_trainer_commit(server_factory: ServerFactory) -> None:
    server = server_factory(env={"TRAINER_COMMIT": "0123456789abcdef0123456789abcdef01234567"}, wait_ready=False)
    with server.client() as client:
        assert client.get("/healthz").headers["X-Commit-SHA"] == "0123456789abcdef0123456789abcdef01234567"
        assert client.get("/healthz").json()["commit"] == "0123456789abcdef0123456789abcdef01234567"


def test_importing_the_server_never_imports_tinygrad() -> None:
    code = (
        "import sys, reference_server, reference_server.app, reference_server.__main__, reference_server.handlers\n"
        "from reference_server.app import Service\n"
        "loaded = sorted(m for m in sys.modules if m == 'tinygrad' or m.startswith('tinygrad.'))\n"
        "print(loaded); sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_taken_port_exits_at_once_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = _run(["--host", "127.0.0.1", "--port", str(port)], {"MOCKS_DISABLED": "1"}, tmp_path)
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 30
    assert not (tmp_path / "ev").exists(), "nothing is touched before the port is taken"


def test_the_console_script_answers_version() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("trainer-server")), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and re.fullmatch(r"trainer-server \S+\n", done.stdout), done
