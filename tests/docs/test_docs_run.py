"""The documents' runnable blocks, run as written: in order, one bash session per document, from a folder that looks
like the repository root, against a live reference server (`$S`), each block within its time limit. A block that
fails, or a request the server refuses, fails the document; so does a doc that drifts from the code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from doc_blocks import DOCUMENTS, REPO, blocks
from doc_session import BashSession, BlockFailed
from server_harness import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("docs")]

RUNNABLE = {document: [b for b in blocks(document) if b.runnable] for document in DOCUMENTS}


def evidence_listing() -> set[Path]:
    """What the repository's own evidence/ holds (two levels under phase1/verify and training)."""
    root = REPO / "evidence"
    return {p.relative_to(root) for pattern in ("*", "*/*", "*/*/*", "*/*/*/*") for p in root.glob(pattern)}


@pytest.mark.parametrize(
    "document", [d for d, runnable in RUNNABLE.items() if runnable], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_runnable_blocks_run_as_written(
    document: Path, docs_root: Path, newcomer_env: dict[str, str], docs_server: ServerProcess, tmp_path: Path
) -> None:
    before = evidence_listing()
    session = BashSession(docs_root, newcomer_env, tmp_path / "blocks")
    timings = []
    try:
        for block in RUNNABLE[document]:
            start = time.monotonic()
            try:
                session.run(block.code, block.timeout_s, block.where)
            except BlockFailed as failed:
                pytest.fail(f"{failed}\n--- the server's log, last lines ---\n{docs_server.log()[-2000:]}")
            timings.append(f"{block.where} {time.monotonic() - start:.1f} s")
    finally:
        session.close()
    print("\n".join(timings))
    assert evidence_listing() == before, "the documents' commands wrote into the repository's evidence/"


def test_the_newcomer_shell_has_no_console_script_on_path(
    docs_root: Path, newcomer_env: dict[str, str], tmp_path: Path
) -> None:
    session = BashSession(docs_root, newcomer_env, tmp_path / "blocks")
    try:
        printed = session.run(
            "for c in trainer-conformance trainer-datasets trainer-server trainer-train; do\n"
            '  command -v "$c" || echo "$c: not on PATH"\n'
            "done\n"
            ".venv/bin/trainer-conformance --version\n"
            "test -d evidence && ! test -L evidence\n",
            30,
            "the newcomer's shell",
        )
    finally:
        session.close()
    assert printed.splitlines()[:4] == [f"{c}: not on PATH" for c in ("trainer-conformance", "trainer-datasets",
                                                                       "trainer-server", "trainer-train")]  # fmt: skip
    assert printed.splitlines()[4].startswith("trainer-conformance ")


def test_a_failing_command_fails_its_block_and_variables_carry_over(tmp_path: Path) -> None:
    session = BashSession(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "blocks")
    try:
        assert session.run("RUN=run-1\nprintf 'no newline'", 10, "first") == "no newline"
        assert session.run('echo "$RUN"', 10, "second") == "run-1\n"
        with pytest.raises(BlockFailed, match=r"third: failed \(the shell exited with 1\)[\s\S]*before"):
            session.run("echo before\nfalse\necho after\n", 10, "third")
    finally:
        session.close()


def test_an_unset_variable_or_a_failing_pipe_fails_its_block(tmp_path: Path) -> None:
    for code in ('echo "$NOT_SET"\n', "false | cat\n"):
        session = BashSession(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "blocks")
        try:
            with pytest.raises(BlockFailed, match="failed"):
                session.run(code, 10, "block")
        finally:
            session.close()


def test_a_block_past_its_time_limit_fails_and_leaves_nothing_running(tmp_path: Path) -> None:
    session = BashSession(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "blocks")
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(BlockFailed, match="slow: still running after 1 s"):
        session.run(f"sleep 60 &\necho $! > {pid_file}\nsleep 60\n", 1, "slow")
    assert time.monotonic() - start < 10
    child = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    deadline = time.monotonic() + 5
    while child.exists() and time.monotonic() < deadline:
        try:
            if child.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break  # killed, waiting to be reaped by init
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        assert not child.exists(), "the block's background child outlived the session"


def test_a_block_cannot_read_the_session_input(tmp_path: Path) -> None:
    session = BashSession(tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "blocks")
    try:
        assert session.run("cat\necho read-nothing\n", 10, "reader") == "read-nothing\n"
    finally:
        session.close()
