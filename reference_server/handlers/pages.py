"""The dashboard's pages and static files: not JSON API answers, so not the JSON handlers' shape, but held to the
same request policy (header size, methods, query parameters) and carrying the headers every answer carries.

Pages get the strict Content-Security-Policy (dashboard.py) and `Cache-Control: no-store` like every API answer.
Static files are served from memory as read and checked at start (assets.py), with their SHA-256 as ETag and
`Cache-Control: no-cache`: a browser revalidates each time and gets a 304 while the server's files are unchanged.
Both are public: they hold no data, and the sign-in form must reach a signed-out browser.
"""

from __future__ import annotations

from ..assets import Assets
from ..dashboard import HTML_HEADERS, PAGE_CSP, SHELL, Page
from ..errors import InvalidParameter, NotFound, RunNotFound
from ..lifecycle import RUN_ID_PATTERN
from .base import BaseHandler


class PageHandler(BaseHandler):
    """One dashboard page (the route table says which)."""

    public = True

    def initialize(self, page: Page, html: bytes) -> None:
        """Dependencies from the route table: the page and its HTML (rendered once, at start)."""
        self.page = page
        self.html = html
        self.query_parameters = page.query

    async def get(self, run_id: str | None = None) -> None:
        """The page's HTML; a run's page only for something shaped like a run id (its script asks for the run)."""
        if run_id is not None and not RUN_ID_PATTERN.match(run_id):
            raise RunNotFound(f"{run_id[:80]!r} is not a run id; the runs are listed at /")
        problem = self.page.check_query(self.request.query_arguments)
        if problem:
            raise InvalidParameter(f"{problem} (on {self.request.path})")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", PAGE_CSP)
        for name, value in HTML_HEADERS.items():
            self.set_header(name, value)
        self.finish(self.html)


class AssetHandler(BaseHandler):
    """GET /static/{asset}: a script, stylesheet or vendored file of the dashboard."""

    public = True

    def initialize(self, assets: Assets) -> None:
        """Dependencies from the route table."""
        self.assets = assets

    async def get(self, asset: str) -> None:
        """The file, or 304 when the browser's copy is current."""
        found = self.assets.get(asset)
        if found is None or found.path == SHELL:
            raise NotFound(f"no static file {asset[:120]!r}")
        self.set_header("Content-Type", found.content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("ETag", f'"{found.sha256}"')
        self.set_header("X-Checksum-SHA256", found.sha256)
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(found.data)
