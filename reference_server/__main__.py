"""`python -m reference_server --host H --port P --evidence-dir DIR [--data-dir DIR] [--max-concurrent-runs N]`,
or `python -m reference_server verify-evidence RUN_DIR...` to check run folders against their manifests.

Refuses to start unless MOCKS_DISABLED is "1" (it is set to "1" when absent): this service has no mock paths, and
a deployment that asks for any other value has misunderstood what it is running.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .app import Service
from .assets import AssetError
from .evidence import EvidenceError, FolderLocked
from .evidence.audit import main as verify_main
from .provenance import ServiceProvenance
from .settings import ConfigError, Settings, load, log_level

log = logging.getLogger("reference_server")

#: Bodies are limited by the handlers (413, default 64 KiB); this bounds what Tornado reads before they see it.
_CONNECTION_BODY_LIMIT = 8 << 20
#: Headers are limited by the handlers (431 problem+json, --max-header-bytes); past this hard limit Tornado itself
#: closes the connection without an answer, so memory per connection stays bounded.
_CONNECTION_HEADER_FLOOR = 256 << 10


def connection_header_limit(max_header_bytes: int) -> int:
    """What Tornado reads of a request's headers before it gives up on the connection."""
    return max(_CONNECTION_HEADER_FLOOR, 4 * max_header_bytes)


def check_mocks_disabled(env: dict[str, str] | os._Environ[str]) -> str | None:
    """Set MOCKS_DISABLED=1 when absent; the refusal message when it holds anything else."""
    value = env.setdefault("MOCKS_DISABLED", "1")
    if value != "1":
        return f"MOCKS_DISABLED={value!r}: this service has no mocks and only runs with MOCKS_DISABLED=1 (or unset)"
    return None


async def serve(settings: Settings) -> int:
    """Run the server until SIGINT or SIGTERM; the exit status."""
    identity = ServiceProvenance.detect()
    try:
        # Bind first: a taken port must fail at once, before anything starts or any file is touched.
        bound = bind_sockets(settings.port, settings.host)
    except OSError as exc:
        print(f"reference_server: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        service = Service.build(settings, identity)
    except (ConfigError, AssetError) as exc:  # AssetError: a dashboard file is not the bytes it was shipped as
        for sock in bound:
            sock.close()
        print(f"reference_server: {exc}", file=sys.stderr)
        return 2
    try:
        report = await service.start()
    except (FolderLocked, EvidenceError) as exc:
        for sock in bound:
            sock.close()
        print(f"reference_server: {exc}", file=sys.stderr)
        return 2
    # What start-up built (modules, the contract's validators, the recovered runs) lives as long as the server: moved
    # out of the collector's generations, a full collection no longer walks it, which took ~15 ms of a stalled event
    # loop each time (an API answer waited that long). Frozen objects are still freed when their last reference goes.
    gc.freeze()
    if report.reattached:
        log.info(
            "%d run(s) trained on without the server; following them again: %s",
            len(report.reattached),
            ", ".join(report.reattached),
        )
    if report.interrupted:
        log.warning(
            "%d run(s) were active when the server last stopped; now interrupted: %s",
            len(report.interrupted),
            ", ".join(report.interrupted),
        )
    for run_id, problem in report.damaged.items():
        log.error("run %s is listed as damaged: %s", run_id, problem)
    server = HTTPServer(
        service.application(),
        max_body_size=_CONNECTION_BODY_LIMIT,
        max_header_size=connection_header_limit(settings.max_header_bytes),
        # Tornado times the whole header read (not each byte), so a client trickling bytes is cut off too.
        idle_connection_timeout=settings.header_timeout_s,
        body_timeout=settings.body_timeout_s,
    )
    server.add_sockets(bound)
    host, port = bound[0].getsockname()[:2]
    log.info(
        "reference_server %s (commit %s) listening on http://%s:%d evidence=%s data=%s executor=%s",
        identity.versions["service"],
        identity.commit,
        host if ":" not in host else f"[{host}]",
        port,
        settings.evidence_dir,
        service.catalog.root,
        service.executor.name,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: no new work; ending active runs as interrupted")
    server.stop()
    await service.stop()
    await server.close_all_connections()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`trainer-server`); `verify-evidence DIR...` checks run folders instead of serving."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["verify-evidence"]:
        return verify_main(args[1:])
    refusal = check_mocks_disabled(os.environ)
    if refusal:
        print(f"reference_server: {refusal}", file=sys.stderr)
        return 2
    try:
        settings = load(args)
    except ConfigError as exc:
        print(f"reference_server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level(settings), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(settings))
    except ValueError as exc:  # TRAINER_COMMIT that is not a commit
        print(f"reference_server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
