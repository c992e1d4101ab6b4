"""Headless Chromium driven by Selenium, with what the browser tests read back from it: console messages, every
network request with its answer, and values from the page's own state (`window.dashboard`)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from reference_server.lifecycle import Run

#: Server flags of the browser tests: a browser's EventSource reconnects after `retry` ms, here 300 instead of 3000.
SERVER_ARGS = ["--sse-retry-ms", "300", "--heartbeat-s", "1"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: How Chromium runs here: headless, as root, and with none of its own traffic (the network is closed).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def installed() -> str | None:
    """None when Chromium and ChromeDriver are installed; else what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    return ", ".join(missing) or None


@dataclass
class Request:
    """One network request the browser made, and how it ended."""

    id: str
    url: str
    method: str
    kind: str  # Document, Script, Fetch, EventSource, ...
    sent: float  # monotonic, when the browser logged it
    status: int | None = None
    failed: str | None = None
    canceled: bool = False


class Chromium:
    """One headless Chromium and its driver, shared by the browser tests of a pytest process.

    Each test gets a `Browser` of its own: a window in a fresh WebDriver BiDi user context, which has its own cookies,
    storage and cache, as a new profile would. A Chromium start costs ~2.1 core-s and a user context ~0.6 (window,
    page and close included; measured 2026-12-02), and each of 13 tests used to start a Chromium of its own.
    """

    def __init__(self, profile: Path, log: Path) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        options.enable_bidi = True  # user contexts are a BiDi command; the classic commands and logs still work
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.home = self.driver.current_window_handle  # stays blank; the driver returns to it between tests

    def alive(self) -> bool:
        """Whether the browser still answers its driver."""
        try:
            self.driver.switch_to.window(self.home)
        except WebDriverException:
            return False
        return True

    def open(self) -> Browser:
        """A window in a new user context, focused; what the browser logged before it is dropped."""
        context = self.driver.browser.create_user_context()
        window = self.driver.browsing_context.create(type="window", user_context=context)
        self.driver.switch_to.window(window)
        for kind in ("browser", "performance"):
            self.driver.get_log(kind)
        return Browser(self.driver, context=context)

    def close(self, browser: Browser) -> None:
        """Close a test's window and its user context (its pages, streams, cookies and storage with it)."""
        try:
            self.driver.close()
        finally:
            self.driver.switch_to.window(self.home)
            self.driver.browser.remove_user_context(browser.context)

    def quit(self) -> None:
        """Stop the browser and its driver."""
        self.driver.quit()


@dataclass
class Browser:
    """One test's window of the shared Chromium (`Chromium.open`), in a user context of its own."""

    driver: WebDriver
    context: str
    console: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[str, Request] = field(default_factory=dict)

    def get(self, url: str) -> None:
        """Open a page (returns once it has loaded)."""
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        """`return <script>`'s value in the page."""
        return self.driver.execute_script(script, *args)

    def wait(self, script: str, timeout: float = 60.0, what: str = "") -> Any:
        """Poll `return <script>` until it is truthy; its value. TimeoutError naming `what` after `timeout` s.

        A script that throws counts as not yet: right after a click that navigates, it can run in the new page before
        the page's module has set `window.dashboard` (a fresh-clone run caught that). The last error is in the
        TimeoutError, so a script that always throws still fails, only later.
        """
        deadline = time.monotonic() + timeout
        thrown = ""
        while True:
            try:
                value = self.js(script)
            except JavascriptException as e:
                value, thrown = None, e.msg or str(e)
            if value:
                return value
            if time.monotonic() > deadline:
                self.collect()
                errors = [e["message"] for e in self.console if e["level"] == "SEVERE"]
                raise TimeoutError(
                    f"after {timeout} s still not: {what or script} (script error: {thrown or 'none'};"
                    f" console errors: {errors[:5]})"
                )
            time.sleep(0.1)

    def collect(self) -> None:
        """Move what Chromium has logged since the last call into `console` and `requests`."""
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message.get("method", ""), message.get("params", {})
            if method == "Network.requestWillBeSent":
                request = params["request"]
                if not request["url"].startswith(("http:", "https:", "file:")):
                    continue  # Chromium's own pages (chrome://...) and data: URLs: not the page's traffic
                self.requests[params["requestId"]] = Request(
                    params["requestId"], request["url"], request["method"], params.get("type", ""), time.monotonic()
                )
            elif method == "Network.responseReceived" and params["requestId"] in self.requests:
                self.requests[params["requestId"]].status = params["response"]["status"]
            elif method == "Network.loadingFailed" and params["requestId"] in self.requests:
                failed = self.requests[params["requestId"]]
                failed.failed, failed.canceled = params.get("errorText", "failed"), bool(params.get("canceled"))

    def console_errors(self) -> list[str]:
        """Console messages at error level so far."""
        self.collect()
        return [e["message"] for e in self.console if e["level"] == "SEVERE"]

    def failed_requests(self) -> list[str]:
        """Requests answered 4xx/5xx, or failed other than by being cancelled (a page left while it streamed)."""
        self.collect()
        return [
            f"{r.method} {r.url}: {r.status or r.failed}"
            for r in self.requests.values()
            if (r.status is not None and r.status >= 400) or (r.failed and not r.canceled)
        ]

    def requests_to(self, predicate: Callable[[Request], bool]) -> list[Request]:
        """The requests so far that match, in the order they were sent."""
        self.collect()
        return sorted((r for r in self.requests.values() if predicate(r)), key=lambda r: r.sent)

    def screenshot(self, path: Path) -> None:
        """Save what the window shows (the whole page's height, up to 4000 px)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        height = min(int(self.js("return document.documentElement.scrollHeight") or 1000), 4000)
        self.driver.set_window_size(1400, max(height, 700))
        self.driver.save_screenshot(str(path))


def free_port() -> int:
    """A port nothing listens on right now (for a server that must come back on the same one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CuttingProxy:
    """A TCP relay on 127.0.0.1 in front of a server; `cut()` drops every open connection at once, as a network
    failure would, and the relay keeps accepting new ones (so a client that reconnects gets through)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.cuts = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self.listener.close()
        self.cut()
        self._thread.join(5)

    def cut(self) -> int:
        """Close every relayed connection; how many there were."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.cuts += 1
        return len(sockets)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def expected_points(run_dir: Path) -> dict[str, list[list[list[float]]]]:
    """What a run's charts must show once it has ended: its metrics.jsonl folded as the server folds it (a resume
    drops the steps logged after the checkpoint it continues from), as [step, value] pairs per series."""
    config = json.loads((run_dir / "config.json").read_text())
    run = Run(config["run_id"], config["config"], config["created_at"], 0)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        run.apply(json.loads(line))
    metrics, evals = run.metrics, run.evals
    return {
        "loss": [[[m["step"], m["loss"]] for m in metrics], [[e["step"], e["eval_loss"]] for e in evals]],
        "accuracy": [[[m["step"], m["accuracy"]] for m in metrics], [[e["step"], e["eval_accuracy"]] for e in evals]],
        "throughput": [[[m["step"], m["samples_per_second"]] for m in metrics if "samples_per_second" in m]],
    }
