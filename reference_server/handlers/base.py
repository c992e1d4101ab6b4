"""The one base handler: contract headers, JSON in and out, access control, and one `write_error` that turns
every failure into RFC 9457 problem+json."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httputil import HTTPServerRequest
from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler
from trainer_tinygrad.files import sha256_fd

from .. import access
from ..errors import (
    BY_STATUS,
    ApiError,
    CrossSiteRequest,
    Forbidden,
    HeadersTooLarge,
    InvalidJson,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    OriginNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from ..schemas import Contract, field_errors

log = logging.getLogger("reference_server.http")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
JSON_TYPE = "application/json; charset=utf-8"
PROBLEM_TYPE = "application/problem+json; charset=utf-8"
_CHUNK = 64 * 1024
#: Kernel send buffers of long responses. Loopback and LAN sockets autotune theirs up to 4 MiB, which would let a
#: client that never reads park megabytes in the kernel before the write deadline could notice it; capped, a stalled
#: client blocks our flush after a few hundred KiB and is dropped. Event streams carry small events; downloads get
#: more room (512 KiB in flight: 10 MB/s at a 50 ms round trip).
STREAM_SEND_BUFFER = 64 * 1024
DOWNLOAD_SEND_BUFFER = 256 * 1024
_HANDLED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: What `OPTIONS *` answers: every method some path of this server takes.
SERVER_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"


@dataclass(frozen=True)
class Policy:
    """What every request is held to: identity headers, size limits, optional bearer token (and the sign-in cookie
    that stands for it), the origins CORS lets in, and how long a client may leave sent data unread (from Settings,
    where the defaults live)."""

    commit: str
    max_body_bytes: int
    max_header_bytes: int
    api_token: str | None
    protect_reads: bool
    write_timeout_s: float
    cors_origins: frozenset[str] = frozenset()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf, which no schema bound should have to catch and no JSON output can carry.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of the range of a double")
    return value


def header_bytes(request: HTTPServerRequest) -> int:
    """Size of the request line and headers as sent (field lines with their separators)."""
    line = len(request.method or "") + len(request.uri or "") + len(request.version or "") + 4
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers.get_all())


class BaseHandler(RequestHandler):
    """Every handler's parent. Subclasses get `policy` from the application and add their own dependencies
    through `initialize(**kwargs)` from the route table.

    Bodies are read whole before `prepare` (Tornado's connection limit is far above ours), so every refusal,
    413 included, is answered on an intact connection; a body past the connection limit gets Tornado's 400."""

    #: Reachable without a token even when reads are protected (health probes, metrics, the API document).
    public = False
    #: The query parameters this endpoint reads; any other is refused (a misspelt `?limt=5` must not be ignored).
    query_parameters: frozenset[str] = frozenset()

    @property
    def policy(self) -> Policy:
        """The application's request policy."""
        policy: Policy = self.application.settings["policy"]
        return policy

    @property
    def request_id(self) -> str:
        """The client's X-Request-ID when well-formed, else a new one (stable for the request)."""
        rid: str | None = getattr(self, "_request_id", None)
        if rid is None:
            given = self.request.headers.get("X-Request-ID", "")
            rid = given if REQUEST_ID.match(given) else "req-" + secrets.token_hex(12)
            self._request_id = rid
        return rid

    def set_default_headers(self) -> None:
        """The headers every response carries (schemas/headers.json `all`), plus no-store."""
        self.set_header("X-Request-ID", self.request_id)
        self.set_header("X-Phase", "stage1")
        self.set_header("X-Mocks", "false")
        self.set_header("X-Commit-SHA", self.policy.commit)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.clear_header("Server")
        for name, value in access.cors_headers(self.request.headers.get("Origin"), self.policy.cors_origins).items():
            self.set_header(name, value)

    def compute_etag(self) -> str | None:
        """No ETags: every JSON answer is no-store, and a file's digest is in its own headers."""
        return None

    async def prepare(self) -> None:
        """Header size, method, where a state-changing request came from, access control and body size, before any
        handler method runs. A CORS preflight is answered here."""
        self.check_header_size()
        if self.request.method == "OPTIONS":
            self._options()
            return
        if self.request.method not in self.SUPPORTED_METHODS or not self._implements(self.request.method):
            raise MethodNotAllowed(
                f"{self.request.method} is not allowed on {self.request.path}; allowed: {', '.join(self._allowed())}",
                headers={"Allow": ", ".join(self._allowed())},
            )
        refusal = access.cross_site_refusal(
            self.request.method or "", self.request.headers, self.request.host, self.policy.cors_origins
        )
        if refusal:
            raise CrossSiteRequest(f"{refusal}; state changes are accepted only from this server's own pages")
        self._authorize()
        size = len(self.request.body)
        if size > self.policy.max_body_bytes:
            raise PayloadTooLarge(f"request body of {size} bytes is over the {self.policy.max_body_bytes}-byte limit")
        unknown = sorted(set(self.request.query_arguments) - self.query_parameters)
        if unknown:
            known = ", ".join(sorted(self.query_parameters)) or "none"
            raise InvalidParameter(
                f"unknown query parameter {unknown[0][:60]!r} on {self.request.path}; this endpoint takes: {known}"
            )

    def check_header_size(self) -> None:
        """431 when the request line and headers are over --max-header-bytes (Tornado's own, higher, limit closes
        the connection without an answer)."""
        size = header_bytes(self.request)
        if size > self.policy.max_header_bytes:
            raise HeadersTooLarge(
                f"request line and headers of {size} bytes are over the {self.policy.max_header_bytes}-byte limit"
            )

    def _implements(self, method: str) -> bool:
        return getattr(type(self), method.lower()) is not getattr(RequestHandler, method.lower())

    def _allowed(self) -> list[str]:
        allowed = [m for m in _HANDLED_METHODS if m not in ("HEAD", "OPTIONS") and self._implements(m)]
        if "GET" in allowed:  # HEAD wherever GET is (BaseHandler.head), and nowhere else
            allowed.insert(allowed.index("GET") + 1, "HEAD")
        return [*allowed, "OPTIONS"]  # every path answers OPTIONS

    async def head(self, *args: str, **kwargs: str) -> None:
        """HEAD wherever GET is: Tornado drops the body and keeps the headers."""
        if not self._implements("GET"):
            raise MethodNotAllowed(f"HEAD is not allowed on {self.request.path}")
        pending = self.get(*args, **kwargs)
        if pending is not None:
            await pending

    def _options(self) -> None:
        """OPTIONS: 204 with `Allow` (every method of this path). A CORS preflight from an origin named with
        --cors-origin also gets what it may send; from another origin 403; without --cors-origin it gets no CORS
        headers, so the browser refuses the cross-origin request itself."""
        allowed = self._allowed()
        self.set_header("Allow", ", ".join(allowed))
        origin = self.request.headers.get("Origin")
        wanted = self.request.headers.get("Access-Control-Request-Method")
        if self.policy.cors_origins and origin is not None and wanted is not None:
            if origin.lower() not in self.policy.cors_origins:
                raise OriginNotAllowed(
                    f"origin {origin[:100]!r} is not one the server was started with (--cors-origin)"
                )
            if wanted not in allowed:
                raise MethodNotAllowed(
                    f"{wanted[:20]} is not allowed on {self.request.path}; allowed: {', '.join(allowed)}",
                    headers={"Allow": ", ".join(allowed)},
                )
            for name, value in access.preflight_headers(allowed).items():
                self.set_header(name, value)
        self.set_status(204)
        self.finish()

    def signed_in(self) -> bool:
        """True when the request carries a valid, unexpired sign-in cookie (only when a token is configured)."""
        if not self.policy.api_token:
            return False
        value = self.get_signed_cookie(access.SESSION_COOKIE, max_age_days=access.SESSION_HOURS / 24)
        return value is not None and hmac.compare_digest(value, access.SESSION_VALUE.encode())

    def _authorize(self) -> None:
        token = self.policy.api_token
        if not token or self.public:
            return
        if self.request.method not in access.STATE_CHANGING and not self.policy.protect_reads:
            return
        header = self.request.headers.get("Authorization")
        # The cookie stands for the token; a request that also sends a bearer token is judged by that token.
        if header is None and self.signed_in():
            return
        scheme, _, given = (header or "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="trainer-tinygrad"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized(
                "this endpoint needs `Authorization: Bearer <TRAINER_API_TOKEN>` (in a browser: sign in on the "
                "dashboard, which sets a cookie that stands for it)",
                headers=challenge,
            )
        if not access.token_matches(given.strip(), token):
            raise Forbidden("the bearer token is not the one this server was started with", headers=challenge)

    # ----- JSON in -----
    def json_body(self, schema: str, contract: Contract) -> dict[str, Any]:
        """The request body as a JSON object valid against `schema`; no body at all is `{}` (blank space is not JSON).

        400 for bytes that are not JSON, 415 for a body that does not say it is JSON, 422 naming each field that
        breaks the schema."""
        if not self.request.body:
            return {}
        value = self.parse_json_body()
        errors = contract.errors(schema, value)
        if errors:
            fields = field_errors(errors)
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in fields[:5])
            raise ValidationFailed(f"the body does not match {schema}: {summary}", errors=fields)
        if not isinstance(value, dict):
            raise ValidationFailed(
                "the body must be a JSON object", errors=[{"field": "(body)", "message": "not an object"}]
            )
        return value

    def parse_json_body(self) -> Any:
        """The (non-empty) body parsed as JSON: 415 unless it says it is JSON, 400 unless it is JSON with finite
        numbers and sane nesting."""
        body = self.request.body
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise UnsupportedMediaType(
                f"send the body as application/json (got {media or 'no Content-Type'})",
                headers={"Accept-Post": "application/json"},
            )
        try:
            return json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidJson(f"the body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            # Nesting deep enough to exhaust the parser's stack: no request of this API nests more than twice.
            raise InvalidJson("the body is not valid JSON for this API: nested too deeply") from exc

    def int_argument(self, name: str, default: int | None, low: int, high: int) -> int | None:
        """An integer query argument within [low, high]; 400 naming it otherwise."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        # [0-9], not \\d: a full-width five is a digit to `re` and to int(), and no client means it as one.
        if not re.fullmatch(r"-?[0-9]{1,18}", raw.strip()) or not low <= int(raw) <= high:
            raise InvalidParameter(f"query parameter {name}={raw!r} must be an integer from {low} to {high}")
        return int(raw)

    # ----- JSON out -----
    def write_json(self, document: Any, status: int = 200) -> None:
        """Send a JSON document (never NaN) and finish."""
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps(document, allow_nan=False, separators=(",", ":")))

    def limit_send_buffer(self, size: int) -> None:
        """Cap this connection's kernel send buffer (see STREAM_SEND_BUFFER)."""
        stream = getattr(self.request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    async def flush_or_drop(self) -> bool:
        """Flush what was written; False when the client is gone, or has left sent data unread for longer than the
        write deadline: then its connection is closed, freeing its slot and file descriptor."""
        try:
            await asyncio.wait_for(self.flush(), self.policy.write_timeout_s)
        except StreamClosedError:
            return False
        except TimeoutError:
            log.info(
                "%s %s: the client left data unread for %.0f s; dropped",
                self.request.method,
                self.request.path,
                self.policy.write_timeout_s,
            )
            stream = getattr(self.request.connection, "stream", None)
            if stream is not None:
                stream.close()
            return False
        return True

    async def send_file(
        self, path: Path, content_type: str, sha256: str | None = None, download_name: str | None = None
    ) -> None:
        """Stream a file in chunks, with Digest (RFC 3230, base64) and X-Checksum-SHA256 (hex) of the bytes sent.

        The file is opened once and its size read then: a file that only grows (metrics.jsonl while its run trains)
        is sent and hashed up to that size, so the digest always matches the body. Without a known `sha256` the
        snapshot is hashed first, off the event loop. Memory per download is one chunk, whatever the file's size."""
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if sha256 is None:
                digest, _ = await asyncio.get_running_loop().run_in_executor(
                    None, sha256_fd, handle.fileno(), size, _CHUNK
                )
            else:
                digest = sha256
            self.set_header("Content-Type", content_type)
            self.set_header("X-Checksum-SHA256", digest)
            self.set_header("Digest", "sha-256=" + base64.b64encode(bytes.fromhex(digest)).decode())
            self.set_header("Content-Length", str(size))
            if download_name:
                self.set_header("Content-Disposition", f'attachment; filename="{download_name}"')
            if self.request.method == "HEAD":
                return
            self.limit_send_buffer(DOWNLOAD_SEND_BUFFER)
            sent = 0
            while sent < size:
                chunk = os.pread(handle.fileno(), min(_CHUNK, size - sent), sent)
                if not chunk:
                    break  # the file shrank under us: the connection ends short and the client sees it
                sent += len(chunk)
                self.write(chunk)
                if not await self.flush_or_drop():
                    return

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as problem+json (schemas/problem.schema.json)."""
        error = self._as_api_error(status_code, kwargs.get("exc_info"))
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        if error.retry_after is not None:
            self.set_header("Retry-After", str(error.retry_after))
        self.set_header("Content-Type", PROBLEM_TYPE)
        self.finish(json.dumps(error.problem(self.request.path, self.request_id), allow_nan=False))

    def _as_api_error(self, status_code: int, exc_info: Any) -> ApiError:
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, HTTPError) and exc.status_code in BY_STATUS:
            cls = BY_STATUS[exc.status_code]
            if cls is MethodNotAllowed:
                return MethodNotAllowed(
                    f"{self.request.method} is not allowed on {self.request.path}",
                    headers={"Allow": ", ".join(self._allowed())},
                )
            return cls(exc.log_message or exc.reason or cls.title)
        if status_code in BY_STATUS and exc is None:
            return BY_STATUS[status_code](BY_STATUS[status_code].title)
        return ApiError(f"the server failed handling this request (request id {self.request_id}); see its log")

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Client errors are answers, not incidents: only unexpected ones get a traceback."""
        if isinstance(value, ApiError):
            log.debug("%s %s -> %s %s", self.request.method, self.request.path, value.status, value.code)
            return
        if isinstance(value, HTTPError) and value.status_code < 500:
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    """Every path the route table does not know."""

    async def prepare(self) -> None:
        """404 before the method is even looked at; `OPTIONS *` (the server as a whole) answers 204 with the methods
        some path of the server takes."""
        self.check_header_size()
        if self.request.method == "OPTIONS" and self.request.uri == "*":
            self.set_header("Allow", SERVER_METHODS)
            self.set_status(204)
            self.finish()
            return
        raise NotFound(f"no such endpoint: {self.request.path}; the API is described at /openapi.json")
