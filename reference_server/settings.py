"""Server configuration: command-line flags over environment variables over defaults, resolved once."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with."""

    host: str = "127.0.0.1"
    port: int = 8080
    evidence_dir: Path = Path("evidence")
    data_dir: Path | None = None  # None: trainer_tinygrad.datasets.default_cache_dir()
    work_dir: Path | None = None  # None: <tmp>/trainer-tinygrad-work
    max_concurrent_runs: int = 1  # 2 cores, and a tinygrad CPU kernel runs on one: one run at a time
    max_queued_runs: int = 16
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 60.0  # also the keep-alive idle limit: Tornado times the header read from its start
    body_timeout_s: float = 60.0
    max_sse_subscribers: int = 500
    heartbeat_s: float = 5.0
    sse_retry_ms: int = 3000
    cancel_grace_s: float = 30.0
    api_token: str | None = None
    protect_reads: bool = False

    def resolved_work_dir(self) -> Path:
        """Where trainers write before the evidence writer adopts their checkpoints (never under evidence/)."""
        return self.work_dir or Path(tempfile.gettempdir()) / "trainer-tinygrad-work"


#: Environment variable for each setting (flags win over them).
ENV = {
    "host": "TRAINER_HOST",
    "port": "TRAINER_PORT",
    "evidence_dir": "TRAINER_EVIDENCE_DIR",
    "data_dir": "TRAINER_DATA_DIR",
    "work_dir": "TRAINER_WORK_DIR",
    "max_concurrent_runs": "TRAINER_MAX_CONCURRENT_RUNS",
    "max_queued_runs": "TRAINER_MAX_QUEUED_RUNS",
    "max_body_bytes": "TRAINER_MAX_BODY_BYTES",
    "max_header_bytes": "TRAINER_MAX_HEADER_BYTES",
    "header_timeout_s": "TRAINER_HEADER_TIMEOUT_S",
    "body_timeout_s": "TRAINER_BODY_TIMEOUT_S",
    "max_sse_subscribers": "TRAINER_MAX_SSE_SUBSCRIBERS",
    "heartbeat_s": "TRAINER_SSE_HEARTBEAT_S",
    "cancel_grace_s": "TRAINER_CANCEL_GRACE_S",
    "api_token": "TRAINER_API_TOKEN",
    "protect_reads": "TRAINER_PROTECT_READS",
}


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m reference_server`."""
    p = argparse.ArgumentParser(
        prog="python -m reference_server",
        description="trainer-tinygrad reference server: training runs over REST and SSE, with evidence per run. "
        "Each flag can also be set by the environment variable named in its help; the flag wins.",
    )
    p.add_argument("--host", help="address to listen on [TRAINER_HOST, default 127.0.0.1]")
    p.add_argument("--port", type=int, help="port; 0 picks a free one [TRAINER_PORT, default 8080]")
    p.add_argument("--evidence-dir", type=Path, help="evidence root [TRAINER_EVIDENCE_DIR, default ./evidence]")
    p.add_argument("--data-dir", type=Path, help="dataset cache [TRAINER_DATA_DIR, default ~/.cache/...]")
    p.add_argument("--work-dir", type=Path, help="trainers' scratch space [TRAINER_WORK_DIR, default $TMPDIR/...]")
    p.add_argument("--max-concurrent-runs", type=int, help="runs training at once [TRAINER_MAX_CONCURRENT_RUNS, 1]")
    p.add_argument("--max-queued-runs", type=int, help="runs waiting beyond that; more get 429 [..._QUEUED_RUNS, 16]")
    p.add_argument("--max-body-bytes", type=int, help="largest request body; more get 413 [..._BODY_BYTES, 65536]")
    p.add_argument(
        "--max-header-bytes", type=int, help="request line + headers; more get 431 [..._HEADER_BYTES, 32768]"
    )
    p.add_argument("--header-timeout-s", type=float, help="seconds to send the headers (and keep-alive idle) [..., 60]")
    p.add_argument("--body-timeout-s", type=float, help="seconds to send the body [TRAINER_BODY_TIMEOUT_S, 60]")
    p.add_argument("--max-sse-subscribers", type=int, help="event-stream clients at once [..., 500]")
    p.add_argument("--heartbeat-s", type=float, help="seconds between SSE comment heartbeats [..., 5]")
    p.add_argument("--cancel-grace-s", type=float, help="SIGTERM-to-SIGKILL grace for a trainer [..., 30]")
    return p


def _flag(raw: str) -> bool:
    if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(raw)
    return raw.lower() in ("1", "true", "yes")


#: How an environment value becomes a setting (str when not listed).
_CONVERT: dict[str, Callable[[str], object]] = {
    "port": int,
    "evidence_dir": Path,
    "data_dir": Path,
    "work_dir": Path,
    "max_concurrent_runs": int,
    "max_queued_runs": int,
    "max_body_bytes": int,
    "max_header_bytes": int,
    "header_timeout_s": float,
    "body_timeout_s": float,
    "max_sse_subscribers": int,
    "heartbeat_s": float,
    "cancel_grace_s": float,
    "protect_reads": _flag,
}


def _coerce(name: str, raw: str) -> object:
    try:
        return _CONVERT.get(name, str)(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV[name]}={raw!r} is not valid for {name}") from exc


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then environment, then defaults; ConfigError when a value cannot work."""
    env = os.environ if env is None else env
    args = vars(parser().parse_args(argv))
    values: dict[str, object] = {}
    for name, var in ENV.items():
        if args.get(name) is not None:
            values[name] = args[name]
        elif env.get(var):
            values[name] = _coerce(name, env[var])
    settings = Settings(**values)  # type: ignore[arg-type]
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"port {s.port} is out of range 0-65535")
    for name in ("max_concurrent_runs", "max_queued_runs", "max_body_bytes", "max_sse_subscribers"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1 (got {getattr(s, name)})")
    if s.max_header_bytes < 1024:
        raise ConfigError(f"max_header_bytes must be at least 1024 (got {s.max_header_bytes})")
    if not (s.header_timeout_s > 0 and s.body_timeout_s > 0):
        raise ConfigError("header_timeout_s and body_timeout_s must be positive")
    if s.heartbeat_s <= 0 or s.cancel_grace_s <= 0:
        raise ConfigError("heartbeat_s and cancel_grace_s must be positive")
    if s.api_token is not None and len(s.api_token) < 16:
        raise ConfigError("TRAINER_API_TOKEN must be at least 16 characters")
