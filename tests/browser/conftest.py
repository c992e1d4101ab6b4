"""Fixtures of the browser tests: a Chromium per test (stopped, with a screenshot saved under build/screenshots/,
by the fixture that started it) and a reference server whose SSE retry is short, so reconnects show within a test."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_harness import SERVER_ARGS, Browser, installed
from server_harness import REPO, ServerProcess

SCREENSHOTS = REPO / "build" / "screenshots"

BrowserFactory = Callable[[], Browser]


@pytest.fixture
def browsers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrowserFactory]:
    """Start Chromiums for one test; each is stopped afterwards, its last page saved as a screenshot."""
    missing = installed()
    if missing:
        pytest.fail(
            f"{missing} not installed: `make setup` installs chromium and chromium-driver (scripts/system-deps.sh)"
        )
    started: list[Browser] = []

    def start() -> Browser:
        index = len(started)
        browser = Browser.start(tmp_path / f"profile-{index}", tmp_path / f"chromedriver-{index}.log")
        started.append(browser)
        return browser

    yield start
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    for index, browser in enumerate(started):
        try:
            browser.screenshot(SCREENSHOTS / f"{name}{f'-{index}' if index else ''}.png")
        finally:
            browser.quit()


@pytest.fixture
def browser(browsers: BrowserFactory) -> Browser:
    """One Chromium for the test."""
    return browsers()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    """A reference server shared by a module's browser tests."""
    root = tmp_path_factory.mktemp("web")
    server = ServerProcess.in_folder(root, data_dir, SERVER_ARGS)
    yield server.start()
    assert server.stop() == 0, server.log()[-3000:]
