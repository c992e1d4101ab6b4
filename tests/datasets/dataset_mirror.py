"""A loopback HTTP mirror with misbehaviours (HTML with 200, truncation, 404, resets, drops, Range) for fetch tests."""

from __future__ import annotations

import re
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
HTML_PAGE = b"<!DOCTYPE html><html><head><title>503</title></head><body>Service temporarily unavailable</body></html>"


@dataclass
class Route:
    """How the mirror answers one path.

    kind: ok | html (200 + an HTML page) | truncated (200, first half, honest length) | wrong (200, other bytes of
    the same length) | reset (TCP RST before any response) | drop (sends headers and half the body, then closes;
    `drops` times, then behaves as ok). `ranges`: whether ok/drop honour a Range header.
    """

    kind: str
    body: bytes = b""
    ranges: bool = True
    drops: int = 1


class Mirror:
    """A loopback HTTP server on an ephemeral port serving `routes`; `log` holds (path, Range header) per request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str | None]] = []
        self.sent: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.mirror = self  # type: ignore[attr-defined]
        # A reset connection is the point of some tests, not a server error worth printing.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def base(self, prefix: str) -> str:
        """The base URL of a mirror directory on this server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{prefix}/"

    def serve(self, prefix: str, name: str, route: Route) -> None:
        """Answer GET /prefix/name with `route`."""
        self.routes[f"/{prefix}/{name}"] = route

    def requests(self, prefix: str) -> list[tuple[str, str | None]]:
        """The requests one mirror directory received."""
        return [r for r in self.log if r[0].startswith(f"/{prefix}/")]

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends a TCP RST, the client sees a connection reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream", extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:
        mirror: Mirror = self.server.mirror  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        mirror.log.append((self.path, range_header))
        route = mirror.routes.get(self.path)
        if route is None:
            self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
            return
        body = route.body
        if route.kind == "html":
            self._send(200, HTML_PAGE, "text/html")
        elif route.kind == "truncated":
            self._send(200, body[: len(body) // 2])
        elif route.kind == "wrong":
            self._send(200, bytes(255 - b for b in body))
        elif route.kind == "reset":
            self._reset()
        elif route.kind in ("ok", "drop"):
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if route.ranges and match:
                start = int(match.group(1))
            status = 206 if start else 200
            extra = {"Accept-Ranges": "bytes"} if route.ranges else {}
            if start:
                extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            part = body[start:]
            if route.kind == "drop" and route.drops > 0:
                route.drops -= 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(part)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                mirror.sent[self.path] = mirror.sent.get(self.path, 0) + len(part) // 2
                # FIN, not RST: the client gets every byte sent, then a body shorter than Content-Length.
                self.connection.shutdown(socket.SHUT_WR)
                self.close_connection = True
                return
            self._send(status, part, extra=extra)
            mirror.sent[self.path] = mirror.sent.get(self.path, 0) + len(part)
