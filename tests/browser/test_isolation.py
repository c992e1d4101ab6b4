"""The browser tests share one Chromium per pytest process (tests/browser/conftest.py): what one test's pages leave
(cookies, local and session storage, windows) must not reach the next test's window."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from browser_harness import Chromium

pytestmark = pytest.mark.xdist_group("browser-live")

#: /set leaves a cookie and both storages; /read leaves nothing.
SETS = b"<script>localStorage.setItem('left', 'behind'); sessionStorage.setItem('left', 'behind')</script>"
STATE = "return [document.cookie, localStorage.getItem('left'), sessionStorage.getItem('left')]"


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = SETS if self.path == "/set" else b"<p>nothing set here</p>"
        self.send_response(200)
        if self.path == "/set":
            self.send_header("Set-Cookie", "left=behind; Path=/")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    """An origin on 127.0.0.1 serving /set and /read."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_one_tests_cookies_storage_and_window_are_gone_for_the_next(chromium: Chromium, site: str) -> None:
    first = chromium.open()
    windows = len(chromium.driver.window_handles)
    try:
        first.get(f"{site}/set")
        first.get(f"{site}/read")
        assert first.js(STATE) == ["left=behind", "behind", "behind"]  # what /set left, read back in its context
    finally:
        chromium.close(first)
    assert len(chromium.driver.window_handles) == windows - 1
    second = chromium.open()
    try:
        second.get(f"{site}/read")
        assert second.js(STATE) == ["", None, None]
        assert second.driver.get_cookies() == []
    finally:
        chromium.close(second)
