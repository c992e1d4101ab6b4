"""Access control as a browser meets it, with TRAINER_API_TOKEN and TRAINER_PROTECT_READS set: nothing readable
before sign-in, everything after (the event stream included, on the HttpOnly cookie alone), and a POST from a page
on another port of the same host (same site, so SameSite lets the cookie ride along) refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_harness import SERVER_ARGS, Browser, expected_points
from selenium.webdriver.common.by import By
from server_harness import SCRIPTED, ServerProcess, start_run, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser-resilience")]

TOKEN = "chromium-0123456789-abcdefghijk"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("guarded-web")
    env: dict[str, str | None] = {"TRAINER_API_TOKEN": TOKEN, "TRAINER_PROTECT_READS": "1"} | SCRIPTED
    server = ServerProcess.in_folder(root, data_dir, SERVER_ARGS, env=env)
    yield server.start()
    assert server.stop() == 0, server.log()[-3000:]


@pytest.fixture(scope="module")
def api(guarded: ServerProcess) -> Iterator[httpx.Client]:
    with guarded.client(headers=BEARER) as client:
        yield client


@pytest.fixture(scope="module")
def finished(api: httpx.Client) -> dict[str, Any]:
    run = start_run(api, steps=100, log_every=5, checkpoint_every=50, eval_samples=500)  # looked at once finished
    return wait_for(api, run["run_id"], {"succeeded", "failed"}, timeout=300)


def sign_in(browser: Browser, server: ServerProcess) -> None:
    browser.get(f"{server.url}/")
    browser.wait("return document.getElementById('token')", what="the sign-in form").send_keys(TOKEN)
    browser.driver.find_element(By.ID, "sign-in-submit").click()
    browser.wait("return window.dashboard.session && window.dashboard.session.signed_in", what="signed in")


def test_nothing_is_readable_before_sign_in_and_everything_after(
    browser: Browser, guarded: ServerProcess, finished: dict[str, Any]
) -> None:
    run_id = finished["run_id"]
    for path in ("/", f"/runs/{run_id}", "/verification"):
        browser.get(f"{guarded.url}{path}")
        browser.wait("return document.getElementById('sign-in')", what=f"the sign-in form on {path}")
        assert run_id not in browser.js("return document.body.innerText")
        assert run_id not in browser.driver.page_source.replace(f"/runs/{run_id}", "")  # only the address has it
    refused = {r.status for r in browser.requests_to(lambda r: "/api/" in r.url and "/api/session" not in r.url)}
    assert refused == {401}

    sign_in(browser, guarded)
    assert browser.js("return document.cookie") == ""  # HttpOnly: no script can read the credential
    browser.wait(f"return document.querySelector('tr[data-run-id=\"{run_id}\"]')", what="the run in the table")
    browser.get(f"{guarded.url}/runs/{run_id}")
    browser.wait("return window.dashboard.page && window.dashboard.page.ended", what="the run's stream (cookie only)")
    assert browser.js("return window.dashboard.charts.points()") == expected_points(
        guarded.evidence_dir / "training" / run_id
    )
    browser.get(f"{guarded.url}/verification")
    browser.wait("return document.getElementById('reports')", what="the verification list")
    assert not browser.js("return document.getElementById('sign-in')")

    browser.get(f"{guarded.url}/")
    browser.wait("return document.getElementById('sign-out')").click()
    browser.wait("return document.getElementById('sign-in')", what="the sign-in form after signing out")


class _Attacker(BaseHTTPRequestHandler):
    """Serves one page that tries two state changes on the dashboard's server: a form POST (what a cross-site
    attack without CORS can send) and a no-cors fetch with credentials."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: object) -> None:
        pass


def attack_page(target: str, run_id: str) -> bytes:
    return f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}/api/training/runs" enctype="text/plain">
<input name='{{"steps": 5, "x": "' value='"}}'></form>
<script>
fetch("{target}/api/training/runs/{run_id}/resume", {{method: "POST", mode: "no-cors", credentials: "include"}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>""".encode()


def test_a_post_from_a_page_on_another_port_is_refused_though_the_cookie_rides_along(
    browser: Browser, guarded: ServerProcess, api: httpx.Client, finished: dict[str, Any]
) -> None:
    sign_in(browser, guarded)
    before = api.get("/api/training/runs", params={"limit": 100}).json()["runs"]
    # The dashboard's own page may change state: its POST is authorized (then refused only for its bad body).
    own = browser.driver.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/training/runs', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: '{\"steps\": 0}'}).then(r => done(r.status));"
    )
    assert own == 422

    _Attacker.page = attack_page(guarded.url, finished["run_id"])
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        browser.wait("return location.href.includes('/api/training/runs')", what="the form's POST to be answered")
        answer = browser.js("return document.body.innerText")
    finally:
        attacker.shutdown()
        attacker.server_close()
    assert '"code":"cross_site_request"' in answer.replace(" ", "")
    posts = browser.requests_to(lambda r: r.method == "POST" and "/api/training/" in r.url)
    assert [(r.url.removeprefix(guarded.url), r.status) for r in posts[:1]] == [("/api/training/runs", 422)]
    attempts = {(r.url.removeprefix(guarded.url), r.status) for r in posts[1:]}  # the other page's two
    assert attempts == {(f"/api/training/runs/{finished['run_id']}/resume", 403), ("/api/training/runs", 403)}
    assert api.get("/api/training/runs", params={"limit": 100}).json()["runs"] == before  # nothing started
    assert guarded.log().count(" 403 POST /api/training/runs") >= 2
