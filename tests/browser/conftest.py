"""Fixtures of the browser tests: one Chromium per pytest process, a window of it in a user context of its own per test
(closed, with a screenshot saved under build/screenshots/, by the fixture that opened it), and a reference server
whose SSE retry is short, so reconnects show within a test."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import SERVER_ARGS, Browser, Chromium, installed
from selenium.common.exceptions import WebDriverException
from server_harness import REPO, ServerProcess

SCREENSHOTS = REPO / "build" / "screenshots"


@pytest.fixture(scope="session")
def _chromium() -> Iterator[list[Chromium]]:
    """The process's Chromium (started by the first test that asks for one, again if one stopped answering)."""
    started: list[Chromium] = []
    yield started
    for chromium in started:
        with contextlib.suppress(WebDriverException):  # one that stopped answering may be gone already
            chromium.quit()


@pytest.fixture
def chromium(_chromium: list[Chromium], tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """The process's Chromium, answering its driver."""
    missing = installed()
    if missing:
        pytest.fail(
            f"{missing} not installed: `make setup` installs chromium and chromium-driver (scripts/system-deps.sh)"
        )
    if not _chromium or not _chromium[-1].alive():
        folder = tmp_path_factory.mktemp("chromium")
        _chromium.append(Chromium(folder / "profile", folder / "chromedriver.log"))
    return _chromium[-1]


@pytest.fixture
def browser(request: pytest.FixtureRequest, chromium: Chromium) -> Iterator[Browser]:
    """A window of its own for the test, in a fresh user context: no cookie, storage or cache of another test."""
    browser = chromium.open()
    yield browser
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    try:
        browser.screenshot(SCREENSHOTS / f"{name}.png")
    finally:
        chromium.close(browser)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    """A reference server shared by a module's browser tests."""
    root = tmp_path_factory.mktemp("web")
    server = ServerProcess.in_folder(root, data_dir, SERVER_ARGS)
    yield server.start()
    assert server.stop() == 0, server.log()[-3000:]
