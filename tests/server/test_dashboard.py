"""The dashboard over HTTP: pages with their strict CSP and no inline code, static files as vendored and checked,
the verification reports read from the evidence folder and never outside it. What the pages do in a browser is in
tests/browser/."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from server_harness import REPO, ServerProcess, check_headers, check_json, check_problem, verify_partially

from reference_server import routes
from reference_server.assets import STATIC, AssetError, Assets
from reference_server.dashboard import EVIDENCE_PAGE_CSP, PAGE_CSP, PAGES

pytestmark = pytest.mark.xdist_group("server-dashboard")

PAGE_PATHS = ["/", "/runs/run-0123456789abcdef0123", "/compare", "/start", "/verification"]


class _Markup(HTMLParser):
    """What a page loads, and any inline code it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self._in_script = True
            if found.get("src"):
                self.loads.append(str(found["src"]))
        if tag == "link" and found.get("rel") == "stylesheet":
            self.loads.append(str(found["href"]))
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {name}=" for name, _ in attrs if name == "style" or name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


@pytest.mark.parametrize("path", PAGE_PATHS)
def test_every_page_is_html_with_a_strict_csp_and_no_inline_code(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/html; charset=utf-8"
    check_headers(response, "all")
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    assert "default-src 'self'" in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP and "unsafe" not in PAGE_CSP
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    markup = _Markup()
    markup.feed(response.text)
    assert markup.inline == []
    assert markup.loads and all(src.startswith("/static/") for src in markup.loads)
    for src in markup.loads:
        assert client.get(src).status_code == 200, src
    assert client.head(path).status_code == 200


def test_pages_refuse_what_they_do_not_read(client: httpx.Client) -> None:
    check_problem(client.get("/runs/not.a.run"), 404, "run_not_found")
    check_problem(client.get("/", params={"stauts": "running"}), 400, "invalid_parameter")
    for path, query in (
        ("/", {"tag": ""}),
        ("/", {"status": "done"}),
        ("/compare", {"run": "x"}),
        ("/verification", {"commit": ".."}),
    ):
        check_problem(client.get(path, params=query), 400, "invalid_parameter")
    assert client.get("/", params={"status": "running", "tag": "x"}).status_code == 200
    assert client.get("/compare", params=[("run", "run-a0000000"), ("run", "run-b0000000")]).status_code == 200
    check_problem(client.post("/", json={}), 405, "method_not_allowed")


def test_static_files_are_served_as_read_with_their_hash_as_etag(client: httpx.Client) -> None:
    assets = Assets()
    for path, asset in assets.files.items():
        if path == "shell.html":
            check_problem(client.get(f"/static/{path}"), 404)  # pages only at their routes, with their CSP
            continue
        response = client.get(f"/static/{path}")
        assert response.status_code == 200, path
        check_headers(response, "all")
        assert response.content == (STATIC / path).read_bytes()
        assert response.headers["Content-Type"] == asset.content_type
        assert response.headers["ETag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
        assert response.headers["Cache-Control"] == "no-cache"
        again = client.get(f"/static/{path}", headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304 and not again.content
    assert client.get("/static/js/charts.js").headers["Content-Type"] == "text/javascript; charset=utf-8"
    for bad in ("nope.js", "../app.py", "%2e%2e/app.py", ".hidden", "js/../../app.py", "vendor/uplot/"):
        assert client.get(f"/static/{bad}").status_code == 404, bad


def test_the_vendored_uplot_is_the_recorded_npm_release(tmp_path: Path) -> None:
    record = json.loads((STATIC / "vendor/uplot/VENDOR.json").read_text())
    assert record["package"] == "uplot" and re.fullmatch(r"\d+\.\d+\.\d+", record["version"])
    assert record["integrity"].startswith("sha512-") and record["license"] == "MIT"
    for name, entry in record["files"].items():
        data = (STATIC / "vendor/uplot" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"], name
    assert "MIT License" in (STATIC / "vendor/uplot/LICENSE").read_text()
    # A changed vendored file stops the server from starting (it would serve and inline it).
    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy)
    with (copy / "vendor/uplot/uPlot.iife.min.js").open("ab") as handle:
        handle.write(b"\n;")
    with pytest.raises(AssetError, match=r"uPlot\.iife\.min\.js"):
        Assets(copy)


def test_page_scripts_never_parse_strings_as_html_or_code() -> None:
    for path in (STATIC / "js").glob("*.js"):
        text = path.read_text()
        for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert risky not in text, f"{path.name} uses {risky}"


def test_every_page_route_is_a_page_and_documented() -> None:
    document = json.loads((REPO / "schemas" / "openapi.json").read_text())
    (asset,) = document["paths"]["/static/{asset}"]["parameters"]
    assert asset["schema"]["enum"] == sorted(p for p in Assets().files if p != "shell.html")
    for name in PAGES:
        assert name in routes.PATHS and routes.PATHS[name] in document["paths"]
        assert "text/html" in document["paths"][routes.PATHS[name]]["get"]["responses"]["200"]["content"]


# ----- verification reports -----
@pytest.fixture(scope="module")
def verified(server: ServerProcess) -> str:
    """A real (partial) verification of this server by the conformance suite: its health and error checks."""
    return verify_partially(server, "abc1234").name


def test_verification_reports_are_listed_and_served_from_the_evidence_folder(
    client: httpx.Client, server: ServerProcess, verified: str
) -> None:
    folder = server.evidence_dir / "phase1" / "verify" / verified
    broken = folder.parent / "broken0"
    broken.mkdir(exist_ok=True)
    (broken / "report.json").write_text('{"verdict": "passed"}')
    (folder.parent / ".abc1234.partial-x").mkdir(exist_ok=True)  # a folder the suite is still building
    listing = check_json(client.get("/api/verifications"), "verification-list.schema.json")
    (entry,) = [r for r in listing["reports"] if r["commit"] == verified]
    assert entry["verdict"] == "passed" and entry["summary"]["total"] >= 3
    assert entry["links"]["html"] == f"/api/verifications/{verified}/files/report.html"
    assert [u["commit"] for u in listing["unreadable"]] == ["broken0"]
    report = check_json(client.get(entry["links"]["self"]), "verification-report.schema.json")
    assert report == json.loads((folder / "report.json").read_text())
    check_problem(client.get("/api/verifications/broken0"), 409, "verification_unreadable")
    check_problem(client.get("/api/verifications/nothing-here"), 404, "verification_not_found")

    page = client.get(entry["links"]["html"])
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == EVIDENCE_PAGE_CSP
    assert page.content == (folder / "report.html").read_bytes()
    assert page.headers["X-Checksum-SHA256"] == hashlib.sha256(page.content).hexdigest()
    for check in report["checks"]:
        assert check["id"] in page.text
    md = client.get(entry["links"]["discrepancies"])
    assert md.status_code == 200 and md.headers["Content-Type"] == "text/markdown; charset=utf-8"
    probe = next(p for p in (folder / "probes").rglob("*") if p.is_file())
    relative = probe.relative_to(folder).as_posix()
    assert client.get(f"/api/verifications/{verified}/files/{relative}").content == probe.read_bytes()


def test_a_verification_file_is_never_read_outside_its_folder(
    client: httpx.Client, server: ServerProcess, verified: str
) -> None:
    folder = server.evidence_dir / "phase1" / "verify" / verified
    (folder / "outside").symlink_to(server.evidence_dir / "training")
    (folder / "leak.json").symlink_to(server.log_path)
    for bad in (
        "%2e%2e/broken0/report.json",
        "%2e%2e/%2e%2e/training",
        "..%2F..%2Fserver.log",
        ".hidden",
        "leak.json",
        "outside/x",
        "probes/%2e%2e/report.json",
        "nope.md",
    ):
        check_problem(client.get(f"/api/verifications/{verified}/files/{bad}"), 404)
    check_problem(client.get("/api/verifications/..%2Ftraining/files/x"), 404)
