"""Fixtures for running the documents: a folder that looks like the repository root, a live reference server, and
the environment of a newcomer's shell.

The folder holds a symlink to each of the repository's entries (`.venv` included) but an empty `evidence/` of its
own, which is also the server's evidence root: what the documents' commands write (runs, a partial verification)
stays in the test's temporary folder, never in the repository's evidence/; so do their `mktemp` folders (TMPDIR).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from doc_blocks import REPO
from server_harness import ServerProcess

#: Console scripts a newcomer's shell does not have on PATH: the documents must say `.venv/bin/` (or activate).
CONSOLE_SCRIPTS = ("trainer-conformance", "trainer-datasets", "trainer-server", "trainer-train")


@pytest.fixture(scope="module")
def docs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the repository root: symlinks to every entry, its own empty evidence/."""
    root = tmp_path_factory.mktemp("docs") / "repo"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name != "evidence":
            (root / entry.name).symlink_to(entry)
    if not (REPO / ".venv" / "bin" / "python").exists():
        # `make test` has run `make setup`, so .venv is there; a bare `tox -e py` has the same packages in its own env.
        (root / ".venv").unlink(missing_ok=True)
        (root / ".venv").symlink_to(sys.prefix)
    (root / "evidence").mkdir()
    return root


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory, docs_root: Path, data_dir: Path) -> Iterator[ServerProcess]:
    """The reference server the documents' `$S` points at; its evidence root is the stand-in's evidence/."""
    scratch = tmp_path_factory.mktemp("docs-server")
    server = ServerProcess(
        evidence_dir=docs_root / "evidence",
        data_dir=data_dir,
        work_dir=scratch / "work",
        log_path=scratch / "server.log",
    )
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        assert server.stop() == 0, server.log()[-3000:]


@pytest.fixture(scope="module")
def newcomer_env(
    tmp_path_factory: pytest.TempPathFactory, docs_server: ServerProcess, data_dir: Path
) -> dict[str, str]:
    """A shell environment without this test run's virtualenv: no console script on PATH, no TRAINER_* settings;
    `S` is the server and TRAINER_DATA_DIR its dataset cache (the session's verified Fashion-MNIST: the documents'
    dataset commands only re-verify it). curl is told to fail on an HTTP error (`--fail-with-body` in a .curlrc of
    the test's own), so a documented request that the server refuses fails its block as a failed command would."""
    curl_home = tmp_path_factory.mktemp("docs-curl")
    (curl_home / ".curlrc").write_text("--fail-with-body\n--show-error\n")
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MOCKS_DISABLED", "PYTEST_ADDOPTS"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "TOX_", "PYTEST_")) and k not in drop}
    path = [d for d in env.get("PATH", "").split(os.pathsep) if d and not _has_console_script(Path(d))]
    env.update(
        PATH=os.pathsep.join(path),
        S=docs_server.url,
        TRAINER_DATA_DIR=str(data_dir),
        CURL_HOME=str(curl_home),
        TMPDIR=str(tmp_path_factory.mktemp("docs-tmp")),
    )
    return env


def _has_console_script(directory: Path) -> bool:
    return any((directory / name).exists() for name in CONSOLE_SCRIPTS)
