"""Who may call the API, and from where: the bearer token, the dashboard's sign-in cookie, the refusal of cross-site
requests that change state, and CORS for the origins an operator names. Decisions over request headers only;
handlers/base.py applies them to every request.

- The token is the one credential. A browser cannot put it in an `Authorization` header of an `EventSource` or of a
  link it follows, so `POST /api/session` trades it (in the body, never a URL) for a cookie that is accepted wherever
  the bearer token is: HttpOnly (no script reads it), SameSite=Strict, Secure when the request came over TLS, and
  signed with a key derived from the token, so changing the token signs every browser out.
- A cookie rides along with requests that other pages make, so every request that changes state (POST, PUT, PATCH,
  DELETE) is checked for where it came from, the way Go 1.25's `net/http.CrossOriginProtection` does: the browser's
  `Sec-Fetch-Site` must say `same-origin` (or `none`: the user typed it); without that header, an `Origin` must name
  this host; a request with neither is not from a browser and passes (curl, the conformance suite). Origins named
  for CORS are trusted too. This also covers pages on the same site but another port, which SameSite alone lets in.
- CORS is off unless `--cors-origin` names origins: then their pages may read answers (and the event stream) and
  send preflighted requests, authenticating with the bearer token. Credentials are not allowed cross-origin
  (`Access-Control-Allow-Credentials` is never sent): the cookie stays the dashboard's own.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

#: The sign-in cookie: its name, what it holds, and how long it is good for.
SESSION_COOKIE = "trainer_session"
SESSION_VALUE = "signed-in-v1"
SESSION_HOURS = 12
#: Methods that change state: only these are checked for their origin.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Request headers a CORS page may send (preflight `Access-Control-Allow-Headers`).
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-ID")
#: Response headers a CORS page may read beyond the CORS-safelisted ones.
CORS_EXPOSED_HEADERS = (
    "X-Request-ID",
    "X-Commit-SHA",
    "X-Phase",
    "X-Mocks",
    "Location",
    "Idempotent-Replayed",
    "Retry-After",
    "X-Checksum-SHA256",
    "Digest",
)
#: How long a browser may cache a preflight's answer, in seconds.
PREFLIGHT_MAX_AGE_S = 600

_ORIGIN = re.compile(r"^https?://(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$")


def session_key(token: str) -> str:
    """The key that signs sign-in cookies: derived from the token, so a new token invalidates every cookie, and the
    token itself never leaves the server."""
    return hmac.new(token.encode("utf-8"), b"trainer-tinygrad sign-in cookie", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    """Constant time: how much of a guess matched must not show in the response time."""
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def parse_origin(text: str) -> str:
    """An origin as a browser sends it (`scheme://host[:port]`, lowercase, no path); ValueError saying why not."""
    value = text.strip().lower()
    if value == "*":
        raise ValueError("`*` is not accepted: name each origin (scheme://host[:port])")
    if not _ORIGIN.match(value):
        raise ValueError(f"{text!r} is not an origin like https://example.org or http://127.0.0.1:3000 (no path)")
    return value


def cross_site_refusal(method: str, headers: Mapping[str, str], host: str, trusted: Collection[str]) -> str | None:
    """Why a state-changing request from another site is refused, or None when it may go on."""
    if method.upper() not in STATE_CHANGING:
        return None
    origin = headers.get("Origin", "")
    fetch_site = headers.get("Sec-Fetch-Site", "")
    if fetch_site:
        if fetch_site in ("same-origin", "none") or origin.lower() in trusted:
            return None
        return f"the browser says this {method} came from another site (Sec-Fetch-Site: {fetch_site[:40]})"
    if not origin:
        return None  # neither header: not a browser, or a browser old enough to send neither on same-origin
    if urlsplit(origin).netloc.lower() == host.lower() or origin.lower() in trusted:
        return None
    return f"this {method} came from {origin[:100]}, not from this server's own pages"


def cors_headers(origin: str | None, allowed: Collection[str]) -> dict[str, str]:
    """The CORS headers of any answer to `origin` (none when CORS is off; only `Vary` for an origin not allowed)."""
    if not allowed:
        return {}
    headers = {"Vary": "Origin"}
    if origin is not None and origin.lower() in allowed:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSED_HEADERS)
    return headers


def preflight_headers(methods: Collection[str]) -> dict[str, str]:
    """What a preflight from an allowed origin is answered with (beside `cors_headers`)."""
    return {
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(CORS_REQUEST_HEADERS),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
    }
