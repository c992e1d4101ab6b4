"""Starting the server: MOCKS_DISABLED, configuration errors, and never importing tinygrad."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import REPO, ServerFactory

from reference_server.settings import ConfigError, load


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
