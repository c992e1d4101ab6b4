"""A real reference server in a child process on a free port, and the contract checks the server tests share."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from trainer_conformance.client import tls_context
from trainer_conformance.sse import SSEDecoder

from reference_server.schemas import Contract
from tooling.launcher import LaunchedServer, launch

REPO = Path(__file__).resolve().parents[1]
#: The scripted trainer (tests/scripted_trainer.py), for tests whose subject is the server rather than training: the
#: server runs it through --trainer-command, exactly as it runs `python -m trainer_tinygrad`.
SCRIPTED = {"TRAINER_COMMAND": f"{sys.executable} {Path(__file__).resolve().with_name('scripted_trainer.py')}"}
HEADERS = json.loads((REPO / "schemas" / "headers.json").read_text())
CONTRACT = Contract(REPO / "schemas")


@dataclass
class ServerProcess:
    """`python -m reference_server` on port 0; the URL is read from its log."""

    evidence_dir: Path
    data_dir: Path
    work_dir: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)  # None removes the variable
    proc: subprocess.Popen[bytes] | None = None
    launched: LaunchedServer | None = None
    url: str = ""

    @classmethod
    def in_folder(
        cls,
        root: Path,
        data_dir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str | None] | None = None,
        evidence_dir: Path | None = None,
    ) -> ServerProcess:
        """A server (not started) whose evidence, work folder and log are `root`'s evidence/, work/ and server.log."""
        evidence = evidence_dir or root / "evidence"
        return cls(evidence, data_dir, root / "work", root / "server.log", list(extra_args or []), dict(env or {}))

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServerProcess:
        """Start and wait until it listens (and, by default, until /readyz is 200)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
        env.update({"MOCKS_DISABLED": "1", "DEV": env.get("DEV", "CPU")})
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        args = ["--evidence-dir", str(self.evidence_dir), "--data-dir", str(self.data_dir)]
        args += ["--work-dir", str(self.work_dir), *self.extra_args]
        self.launched = launch(args, log_path=self.log_path, env=env, cwd=REPO, timeout=timeout, wait_ready=wait_ready)
        self.proc, self.url = self.launched.proc, self.launched.url
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def log(self) -> str:
        """Everything the server logged."""
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client on this server, with the suite's TLS settings built once (`tls_context`): httpx builds them
        for every client otherwise (~25 ms of CPU), and a client per poll made half of py-spy's samples of the `py`
        lane's workers (2026-12-02)."""
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), verify=tls_context(), **kwargs)


ServerFactory = Callable[..., ServerProcess]


def verify_partially(server: ServerProcess, commit: str) -> Path:
    """A real, partial verification of `server` by the conformance suite (its health and error checks: about a
    second), written where the dashboard reads reports; the folder."""
    out = server.evidence_dir / "phase1" / "verify"
    argv = [sys.executable, "-m", "trainer_conformance", "--base-url", server.url, "--out", str(out)]
    done = subprocess.run(
        [*argv, "--commit", commit, "--check", "health", "--check", "errors"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out / f"partial-{commit}"  # a subset of the checks: the suite writes it beside the commit's folder


def start_run(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """POST a run; assert 200 and return its JSON."""
    response = client.post("/api/training/runs", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 120.0) -> dict[str, Any]:
    """Poll a run until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/training/runs/{run_id}").json()
        if run["status"] in statuses:
            return dict(run)
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} is still {run['status']} after {timeout} s")


# ----- the contract -----
def check_headers(response: httpx.Response, kind: str) -> None:
    """Every header of headers.json `all` and of block `kind` is present with its value."""
    for block in ("all", kind):
        for name, rule in HEADERS[block].items():
            value = response.headers.get(name)
            assert value is not None, f"{response.request.method} {response.request.url}: no {name} header"
            if isinstance(rule, str):
                assert value == rule, f"{name}: {value!r} != {rule!r}"
            elif "pattern" in rule:
                assert re.fullmatch(rule["pattern"], value), f"{name}: {value!r} !~ {rule['pattern']}"
            else:
                assert value.startswith(rule["startswith"]), f"{name}: {value!r} does not start {rule['startswith']}"


def check_json(response: httpx.Response, schema: str, status: int = 200) -> Any:
    """A JSON answer: status, json headers, body valid against `schema`; returns the body."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    check_headers(response, "json")
    body = response.json()
    errors = CONTRACT.errors(schema, body)
    assert not errors, f"{schema}: {[e.message for e in errors[:3]]}"
    return body


def check_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A problem+json answer with `status` (and `code`)."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    check_headers(response, "problem")
    body = dict(response.json())
    assert not CONTRACT.errors("problem.schema.json", body)
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


# ----- SSE -----
@dataclass
class SseEvent:
    """One dispatched SSE event."""

    id: str | None
    event: str
    data: str
    received: float

    def json(self) -> dict[str, Any]:
        """The data as JSON."""
        return dict(json.loads(self.data))


@dataclass
class SseStream:
    """What a stream delivered: events, comments, retry, and whether the server closed it."""

    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    closed_by_server: bool = False


def parse_sse(
    chunks: Iterator[bytes],
    stream: SseStream,
    until: float | None = None,
    stop: Callable[[SseEvent], bool] | None = None,
) -> SseStream:
    """Decode a stream's bytes with the suite's WHATWG decoder (the project's one SSE parser); stops at EOF, at
    `until` (monotonic), or after an event for which `stop` is true.

    A chunk that arrives after `until` is not read: the wait for it blocks past the deadline, and counting it would
    make "N comments in S seconds" count one heartbeat more than S seconds hold (7 in 6 heartbeats once)."""
    decoder = SSEDecoder()
    for chunk in chunks:
        if until is not None and time.monotonic() > until:
            return stream
        seen = len(decoder.comments)
        for event in decoder.feed(chunk):
            stream.events.append(SseEvent(event.id or None, event.event, event.data, time.monotonic()))
            if stop is not None and stop(stream.events[-1]):
                stream.retry = decoder.retry
                return stream
        stream.comments += [comment.strip() for comment in decoder.comments[seen:]]
        stream.retry = decoder.retry
        if until is not None and time.monotonic() > until:
            return stream
    stream.closed_by_server = True
    return stream


def read_sse(
    client: httpx.Client,
    params: dict[str, str],
    headers: dict[str, str] | None = None,
    *,
    seconds: float | None = None,
    stop: Callable[[SseEvent], bool] | None = None,
    on_open: Callable[[], None] | None = None,
) -> tuple[httpx.Response, SseStream]:
    """Open the event stream and read it to its end (or for `seconds`, or until `stop`); `on_open` is called once
    the answer's headers are in."""
    stream = SseStream()
    with client.stream("GET", "/api/events/training", params=params, headers=headers or {}) as response:
        if on_open is not None:
            on_open()
        if response.status_code != 200:
            response.read()
            return response, stream
        until = time.monotonic() + seconds if seconds else None
        parse_sse(response.iter_raw(), stream, until, stop)
    return response, stream
