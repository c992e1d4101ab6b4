"""Server configuration: command-line flags over environment variables over defaults, resolved once.

Defaults live in one place, the `Settings` dataclass. `OPTIONS` says, for each setting, its flag, its environment
variable, its bounds and what it means; the `--help` text and the checks are generated from the two together, so a
default is written once. Every bad value is refused at start-up with exit status 2 and a message naming the setting:
NaN, infinities, out-of-range numbers, words where numbers belong.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .access import parse_origin
from .provenance import SERVICE_VERSION


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with, and the one home of every default."""

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
    write_timeout_s: float = 30.0
    max_sse_subscribers: int = 500
    event_cache_runs: int = 32
    heartbeat_s: float = 5.0
    sse_retry_ms: int = 3000
    cancel_grace_s: float = 30.0
    shutdown_drain_s: float = 10.0
    min_free_bytes: int = 64 << 20
    trainer_nice: int = 10
    trainer_command: str | None = None  # None: this interpreter's (on Ray: the node's) `-m trainer_tinygrad`
    executor: str = "local"
    ray_address: str | None = None
    ray_cpus_per_run: float = 1.0
    auto_resume: bool = False
    max_auto_resumes: int = 3
    api_token: str | None = None
    protect_reads: bool = False
    cors_origins: tuple[str, ...] = ()  # none: CORS is off
    log_level: str = "INFO"

    def resolved_work_dir(self) -> Path:
        """Where trainers write before the evidence writer adopts their checkpoints (never under evidence/)."""
        return self.work_dir or Path(tempfile.gettempdir()) / "trainer-tinygrad-work"


@dataclass(frozen=True)
class Option:
    """How one setting is given: its flag (None: environment only), its variable, its bounds, what it means."""

    name: str
    env: str
    help: str
    flag: bool = True
    minimum: float | None = None
    maximum: float | None = None
    shown_default: str | None = None  # when the dataclass default is computed elsewhere (None)
    choices: tuple[str, ...] = ()
    repeatable: bool = False  # a list: the flag is given once per value (named in the singular)

    @property
    def flag_name(self) -> str:
        """The command-line flag: `--max-body-bytes`; a repeatable list's is singular (`--cors-origin`)."""
        name = self.name.removesuffix("s") if self.repeatable else self.name
        return "--" + name.replace("_", "-")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXECUTORS = ("local", "ray")

OPTIONS: tuple[Option, ...] = (
    Option("host", "TRAINER_HOST", "address to listen on"),
    Option("port", "TRAINER_PORT", "port; 0 picks a free one", minimum=0, maximum=65535),
    Option("evidence_dir", "TRAINER_EVIDENCE_DIR", "evidence root; runs live in <dir>/training/<run_id>/"),
    Option("data_dir", "TRAINER_DATA_DIR", "dataset cache", shown_default="~/.cache/trainer-tinygrad/datasets"),
    Option("work_dir", "TRAINER_WORK_DIR", "trainers' scratch space", shown_default="$TMPDIR/trainer-tinygrad-work"),
    Option("max_concurrent_runs", "TRAINER_MAX_CONCURRENT_RUNS", "runs training at once", minimum=1, maximum=1024),
    Option("max_queued_runs", "TRAINER_MAX_QUEUED_RUNS", "runs waiting beyond that; more get 429", minimum=1),
    Option(
        "max_body_bytes", "TRAINER_MAX_BODY_BYTES", "largest request body; more get 413", minimum=1, maximum=8 << 20
    ),
    Option("max_header_bytes", "TRAINER_MAX_HEADER_BYTES", "request line and headers; more get 431", minimum=1024),
    Option(
        "header_timeout_s",
        "TRAINER_HEADER_TIMEOUT_S",
        "seconds to send the headers (and keep-alive idle)",
        minimum=0.001,
    ),
    Option("body_timeout_s", "TRAINER_BODY_TIMEOUT_S", "seconds to send the body", minimum=0.001),
    Option(
        "write_timeout_s",
        "TRAINER_WRITE_TIMEOUT_S",
        "seconds a stream or download client may leave sent data unread before it is dropped",
        minimum=0.001,
    ),
    Option(
        "max_sse_subscribers", "TRAINER_MAX_SSE_SUBSCRIBERS", "event-stream clients at once; more get 503", minimum=1
    ),
    Option(
        "event_cache_runs",
        "TRAINER_EVENT_CACHE_RUNS",
        "ended runs whose event logs stay in memory (others are read back from disk when asked for)",
        minimum=0,
    ),
    Option("heartbeat_s", "TRAINER_SSE_HEARTBEAT_S", "seconds without events before an SSE comment line", minimum=0.01),
    Option("sse_retry_ms", "TRAINER_SSE_RETRY_MS", "the SSE retry: a client's reconnect delay", minimum=0),
    Option("cancel_grace_s", "TRAINER_CANCEL_GRACE_S", "SIGTERM-to-SIGKILL grace for a trainer", minimum=0.001),
    Option(
        "shutdown_drain_s",
        "TRAINER_SHUTDOWN_DRAIN_S",
        "on SIGTERM, seconds open streams get to deliver each run's last events",
        minimum=0,
    ),
    Option(
        "min_free_bytes",
        "TRAINER_MIN_FREE_BYTES",
        "/readyz is not ready below this much free space on the evidence disk (or twice the largest checkpoint)",
        minimum=0,
    ),
    Option(
        "trainer_nice",
        "TRAINER_NICE",
        "how much lower the trainers' CPU priority is than the server's",
        minimum=0,
        maximum=19,
    ),
    Option(
        "trainer_command",
        "TRAINER_COMMAND",
        "the command that runs the training function; `train ...` or `device` is appended (with --executor ray it"
        " runs on the node, so it must exist at that path on every Ray node; unset there: the node's Python)",
        shown_default="this Python's -m trainer_tinygrad",
    ),
    Option("executor", "TRAINER_EXECUTOR", "where trainers run: local (child processes) or ray", choices=EXECUTORS),
    Option(
        "ray_address",
        "TRAINER_RAY_ADDRESS",
        "the Ray cluster's address, HOST:PORT (with --executor ray; unset: the cluster `ray start` left on this host)",
    ),
    Option("ray_cpus_per_run", "TRAINER_RAY_CPUS_PER_RUN", "CPUs Ray reserves for each run's trainer", minimum=0.01),
    Option("auto_resume", "TRAINER_AUTO_RESUME", "a run whose node is lost resumes by itself (a run's own default)"),
    Option("max_auto_resumes", "TRAINER_MAX_AUTO_RESUMES", "automatic resumes a run may have", minimum=0, maximum=100),
    Option(
        "api_token",
        "TRAINER_API_TOKEN",
        "mutating endpoints need `Authorization: Bearer <token>` (16+ chars)",
        flag=False,
    ),
    Option(
        "protect_reads", "TRAINER_PROTECT_READS", "1: reads need the token too (needs TRAINER_API_TOKEN)", flag=False
    ),
    Option(
        "cors_origins",
        "TRAINER_CORS_ORIGINS",
        "an origin (scheme://host[:port]) whose pages may call the API from a browser; repeat the flag for more "
        "(the variable: separated by commas); CORS stays off when none is named",
        shown_default="none",
        repeatable=True,
    ),
    Option("log_level", "TRAINER_LOG_LEVEL", f"server log level: {', '.join(LOG_LEVELS)}"),
)

#: Variables read outside the settings table, named in --help so every one is documented in one place.
OTHER_VARIABLES = {
    "MOCKS_DISABLED": "must be 1 (or unset): this server has no mocks and refuses any other value",
    "TRAINER_COMMIT": "commit reported in X-Commit-SHA and evidence (7-40 hex digits; default `git rev-parse HEAD`)",
    "DEV": "tinygrad's device for the trainers (CPU here; CUDA or another where one exists; unset: the probed one)",
    "CACHEDB": "tinygrad's compiled-kernel cache, shared by every trainer (default ~/.cache/tinygrad/cache.db)",
}

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}
_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(Settings)}


def _kind(name: str) -> str:
    kind = _TYPES[name]
    if kind.startswith("tuple"):
        return "origins"
    if "Path" in kind:
        return "path"
    for simple in ("bool", "int", "float"):
        if kind == simple:
            return simple
    return "str"


def _shown_default(option: Option) -> str:
    if option.shown_default is not None:
        return option.shown_default
    default = _DEFAULTS[option.name]
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "1" if default else "0"
    return str(default)


def _convert(option: Option, raw: str) -> Any:
    """One raw value (flag or variable) as its setting's type, within its bounds; ValueError saying why not."""
    kind = _kind(option.name)
    text = raw.strip()
    if kind == "path":
        if not text:
            raise ValueError("an empty path")
        return Path(text)
    if kind == "bool":
        if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError("not 1/0, true/false or yes/no")
        return text.lower() in ("1", "true", "yes")
    if kind == "str":
        if option.choices and text not in option.choices:
            raise ValueError(f"not one of {', '.join(option.choices)}")
        return text
    if kind == "origins":
        return parse_origin(text)
    try:
        value: float = int(text, 10) if kind == "int" else float(text)
    except ValueError:
        raise ValueError(f"not {'an integer' if kind == 'int' else 'a number'}") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    if option.minimum is not None and value < option.minimum:
        raise ValueError(f"below the minimum of {option.minimum:g}")
    if option.maximum is not None and value > option.maximum:
        raise ValueError(f"above the maximum of {option.maximum:g}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m reference_server`, generated from OPTIONS and the Settings defaults."""
    others = "\n".join(f"  {name:<27} {meaning}" for name, meaning in OTHER_VARIABLES.items())
    env_only = "\n".join(f"  {o.env:<27} {o.help} [default {_shown_default(o)}]" for o in OPTIONS if not o.flag)
    p = argparse.ArgumentParser(
        prog="python -m reference_server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="trainer-tinygrad reference server: training runs over REST and SSE, with evidence per run.\n"
        "Each flag can also be set by the environment variable named in its help; the flag wins, then the\n"
        "variable, then the default.\n\n"
        "  python -m reference_server [flags]                      serve\n"
        "  python -m reference_server verify-evidence RUN_DIR...   check run folders against their manifests\n"
        "                                                          (see: verify-evidence --help)",
        epilog=f"environment only:\n{env_only}\n\nalso read:\n{others}",
    )
    p.add_argument("--version", action="version", version=f"trainer-server {SERVICE_VERSION}")
    for option in OPTIONS:
        if not option.flag:
            continue

        def convert(raw: str, option: Option = option) -> Any:
            try:
                return _convert(option, raw)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None

        described = f"{option.help} [{option.env}, default {_shown_default(option)}]"
        if _kind(option.name) == "bool":
            p.add_argument(option.flag_name, action=argparse.BooleanOptionalAction, default=None, help=described)
            continue
        p.add_argument(
            option.flag_name,
            dest=option.name,
            type=convert,
            action="append" if option.repeatable else "store",
            metavar="|".join(option.choices)
            or {"str": "TEXT", "origins": "ORIGIN"}.get(_kind(option.name), _kind(option.name).upper()),
            help=described,
        )
    return p


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then environment, then defaults; ConfigError naming the setting when a value cannot
    work (argparse exits 2 itself for a bad flag)."""
    env = os.environ if env is None else env
    args = vars(parser().parse_args(argv))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        given = args.get(option.name) if option.flag else None
        if given is not None:
            values[option.name] = tuple(dict.fromkeys(given)) if option.repeatable else given
        elif env.get(option.env, "").strip():
            try:
                raw = env[option.env]
                values[option.name] = (
                    tuple(dict.fromkeys(_convert(option, part) for part in raw.split(",") if part.strip()))
                    if option.repeatable
                    else _convert(option, raw)
                )
            except ValueError as exc:
                raise ConfigError(f"{option.env}={env[option.env]!r} is not valid for {option.name}: {exc}") from None
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.api_token is not None and len(s.api_token) < 16:
        raise ConfigError("TRAINER_API_TOKEN must be at least 16 characters")
    if s.protect_reads and not s.api_token:
        raise ConfigError(
            "TRAINER_PROTECT_READS=1 needs TRAINER_API_TOKEN: without a token nothing could read, so the server "
            "refuses to start rather than leave reads open"
        )
    if s.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"TRAINER_LOG_LEVEL={s.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if s.executor == "local" and s.ray_address:
        raise ConfigError("TRAINER_RAY_ADDRESS is set but the executor is local; add --executor ray")


def log_level(settings: Settings) -> int:
    """The logging level the settings name."""
    level: int = logging.getLevelNamesMapping()[settings.log_level.upper()]
    return level


#: The environment variable of each setting.
ENV: dict[str, str] = {o.name: o.env for o in OPTIONS}
