"""The dashboard: which page each route serves, and the policies its HTML goes out with.

Pages are one static HTML shell (static/shell.html), each with its own script and no data: every number on a page
comes from the JSON API through its script, under the API's access control. So a page is the same bytes for everyone
and is served without a credential, which is what lets a signed-out browser reach the sign-in form. No page has an
inline script or style, so their Content-Security-Policy can be `default-src 'self'`.

Evidence pages (report.html of a run, of a verification) are different: they are self-contained files meant to open
from disk, with their scripts and styles inline. Served by this server they run in a CSP sandbox: an opaque origin
that holds no cookie and cannot read the API as the signed-in user, whatever a run's name or a report's text holds.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from .assets import Assets
from .lifecycle import RUN_ID_PATTERN
from .schemas import default_contract
from .verification import COMMIT_PATTERN

#: The dashboard's pages: strict, same-origin only, never framed (clickjacking), no plugins, no <base> rewriting.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Evidence pages served from the evidence folders: their own inline code only, in a sandbox, with no network.
EVIDENCE_PAGE_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; frame-ancestors 'none'"
)
#: Headers every HTML answer carries beside its CSP.
HTML_HEADERS = {"X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}


#: The one HTML file of every page: `{title}` and `{script}` are filled in per page (no template language).
SHELL = "shell.html"


#: What each query parameter of a page must look like (as the API's own parameters of the same name).
_COMMON = default_contract().documents["common.schema.json"]["$defs"]
QUERY_PATTERNS = {
    "status": re.compile(f"^(?:{'|'.join(_COMMON['run_status']['enum'])})$"),
    "tag": re.compile(_COMMON["run_tag"]["pattern"]),
    "run": RUN_ID_PATTERN,
    "commit": COMMIT_PATTERN,
}


@dataclass(frozen=True)
class Page:
    """One dashboard page: its title, its script under static/js/, and the query parameters the script reads."""

    title: str
    script: str
    query: frozenset[str] = frozenset()

    def check_query(self, arguments: dict[str, list[bytes]]) -> str | None:
        """What is wrong with a request's query (its unknown parameters are refused before this), or None."""
        for name in self.query:
            for raw in arguments.get(name, []):
                value = raw.decode("utf-8", errors="replace")
                if not QUERY_PATTERNS[name].match(value):
                    return f"{name}={value[:60]!r} is not a valid {name}"
        return None

    def render(self, assets: Assets) -> bytes:
        """The page's HTML: the shell with its title and script."""
        shell = assets[SHELL].text()
        return (
            shell.replace("{title}", html.escape(self.title)).replace("{script}", f"/static/js/{self.script}").encode()
        )


#: Route name -> page (the paths are in routes.PATHS).
PAGES: dict[str, Page] = {
    "dashboard": Page("Runs", "runs.js", frozenset({"status", "tag"})),
    "dashboard_run": Page("Run", "run.js"),
    "dashboard_compare": Page("Compare runs", "compare.js", frozenset({"run"})),
    "dashboard_start": Page("Start a run", "start.js"),
    "dashboard_verification": Page("Verification", "verification.js", frozenset({"commit"})),
}
