"""What the suite observes of the target, gathered once and shared by the checks.

First the suite waits (bounded) for the target to say it is ready. The observation phase then starts the runs
itself: the main run with the target's defaults (and the dataset asked for, if any), subscribed to at once so every
event's arrival is timed, polled until it ends; and two small control runs for mock detection (another seed;
learning rate 0 with the MLP), submitted once the main run's SSE rate window has closed, and watched by
`observe_controls` while the checks that need only the main run already run. Everything a check downloads later
(metrics pages, checkpoints, evidence files) is cached here, so two checks never fetch a thing twice.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .contract import Contract
from .failures import CheckFailure, CheckSkipped, TargetUnreachable
from .folder import VerifyFolder
from .inference import Checkpoint, CheckpointError, open_checkpoint
from .probes import Exchange, RecordingClient
from .profile import DEFAULT_PROFILE
from .progress import Progress
from .published import PublishedManifest
from .stream import STALL_S, ReceivedEvent, StreamRecording, read_event_stream

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
#: SSE rate requirement: this many events carrying new training state within this many seconds of subscribing.
RATE_EVENTS, RATE_WINDOW_S = 10, 10.0
MAIN_POLL_S, CONTROL_POLL_S, READY_POLL_S = 0.25, 0.25, 0.25
#: What a target may answer to a request that starts a run (RFC 9110: 201 created, 202 accepted), with Location.
CREATED = (200, 201, 202)
#: Answers that mean "not now": a control run refused with one while the main run trains is asked again after.
BUSY = (429, 503)
#: Control runs are small: three checkpoints, evaluated on 500 test images.
CONTROL_SETTINGS: dict[str, Any] = {"steps": 60, "log_every": 10, "checkpoint_every": 20, "eval_samples": 500}
CONTROL_VARIANTS: dict[str, dict[str, Any]] = {
    "seed": {"seed": 1},
    "zero_lr": {"model": "mlp", "learning_rate": 0.0},
}
DATASET_PREFERENCE = ("mnist", "fashion-mnist", "cifar10")
#: How long to wait for /readyz by default: a reference server probes its device for 1-2 s after it listens.
DEFAULT_READY_TIMEOUT_S = 60.0


@dataclass
class Options:
    """What the user asked for on the command line."""

    base_url: str
    dataset: str | None = None
    timeout: float = 300.0
    token: str | None = None
    profile: str = DEFAULT_PROFILE
    #: Seconds to wait for /readyz to say ready before checking.
    ready_timeout: float = DEFAULT_READY_TIMEOUT_S
    #: With --fuzz: each fuzz phase's time budget in seconds (None: fuzz checks only when --check names them, or
    #: with fuzz_examples alone).
    fuzz_seconds: float | None = None
    #: With --fuzz: examples per operation in each fuzz phase (None: MAX_EXAMPLES); alone, without fuzz_seconds,
    #: each phase is one pass bounded by examples instead of time.
    fuzz_examples: int | None = None
    #: Extra fields for the main run's request. Empty by default: the SSE rate requirement is defined for the
    #: target's defaults, and the gate accepts only reports whose main run asked for nothing but a dataset.
    main_request: dict[str, Any] = field(default_factory=dict)


@dataclass
class Readiness:
    """How long the suite waited for the target to be ready before checking (recorded in the report)."""

    timeout_s: float
    waited_s: float = 0.0
    probes: int = 0
    ready: bool = False
    last_status: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The report's `readiness` entry."""
        return {"timeout_s": self.timeout_s, "waited_s": self.waited_s, "probes": self.probes, "ready": self.ready,
                "last_status": self.last_status}  # fmt: skip


@dataclass
class Poll:
    """One status poll of a run."""

    at: float
    exchange: Exchange
    body: dict[str, Any] | None

    @property
    def status(self) -> str | None:
        """The polled status, when the body had one."""
        return self.body.get("status") if self.body else None


@dataclass
class RunObservation:
    """One run the suite started, as it saw it."""

    role: str
    request: dict[str, Any]
    create: Exchange
    body: dict[str, Any] | None = None
    polls: list[Poll] = field(default_factory=list)
    stream: StreamRecording | None = None
    finished: bool = False
    timed_out: bool = False
    started_mono: float = 0.0
    finished_mono: float | None = None
    cancel: Exchange | None = None

    @property
    def run_id(self) -> str | None:
        """The run id from the create response, when there was one."""
        value = (self.body or {}).get("run_id")
        return value if isinstance(value, str) and value else None

    @property
    def final(self) -> dict[str, Any] | None:
        """The last status body seen."""
        for poll in reversed(self.polls):
            if poll.body is not None:
                return poll.body
        return self.body

    @property
    def status(self) -> str | None:
        """The last status seen."""
        return (self.final or {}).get("status")

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config from the last status body."""
        value = (self.final or {}).get("config")
        return value if isinstance(value, dict) else {}

    @property
    def folder(self) -> str:
        """The sub-folder name for this run's downloads: role and run id."""
        return f"{self.role}-{self.run_id or 'none'}"


@dataclass
class MetricsHistory:
    """Every page of a run's metrics, and their concatenation."""

    pages: list[Exchange]
    bodies: list[Any]
    metrics: list[dict[str, Any]]
    evals: list[dict[str, Any]]


@dataclass
class DownloadedCheckpoint:
    """One checkpoint as downloaded, saved under checkpoints/, and what opening it said."""

    name: str
    exchange: Exchange
    path: str
    sha256: str
    bytes: int
    checkpoint: Checkpoint | None
    error: str | None
    results: dict[str, Any] = field(default_factory=dict)


class Session:
    """Observations and downloads shared by every check."""

    def __init__(
        self,
        options: Options,
        client: RecordingClient,
        folder: VerifyFolder,
        contract: Contract,
        manifest: PublishedManifest | None,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.options = options
        self.progress = progress or Progress()
        self.readiness: Readiness | None = None
        self.client = client
        self.folder = folder
        self.contract = contract
        self.manifest = manifest
        self.health: dict[str, Exchange] = {}
        self.datasets: Exchange | None = None
        self.runs: dict[str, RunObservation] = {}
        self.replay: StreamRecording | None = None
        self.replay_after: int | None = None
        self.notes: list[str] = []
        self._metrics: dict[str, MetricsHistory] = {}
        self._checkpoint_lists: dict[str, Exchange] = {}
        self._checkpoints: dict[tuple[str, str], DownloadedCheckpoint] = {}
        self._evidence: dict[tuple[str, str], Exchange] = {}
        self.extra_runs: list[str] = []

    # ---- observation -------------------------------------------------------------------------------------------

    def wait_until_ready(self) -> Readiness:
        """Poll /readyz until the target says it is ready, for at most `options.ready_timeout` seconds.

        A target that answers anything but "not ready" (503, or 200 with status not_ready) is not waited for: a
        missing or broken readiness endpoint is health.readiness's to judge. The last answer is what that check
        judges; every answer is in probes/.
        """
        readiness = Readiness(timeout_s=self.options.ready_timeout)
        started = time.monotonic()
        while True:
            self.progress.status("health", "waiting for /readyz" if readiness.probes else "GET /readyz")
            readiness.probes += 1
            try:
                exchange = self.client.request("GET", "/readyz")
            except TargetUnreachable as exc:
                self.notes.append(f"readiness: {exc}")
                exchange = None
            if exchange is not None:
                self.health["/readyz"] = exchange
                readiness.last_status = exchange.status
                if not _not_ready(exchange):
                    readiness.ready = exchange.status == 200
                    break
            if time.monotonic() - started + READY_POLL_S > self.options.ready_timeout:
                break
            time.sleep(READY_POLL_S)
        readiness.waited_s = round(time.monotonic() - started, 3)
        if readiness.probes > 1:
            self.notes.append(
                f"waited {readiness.waited_s:.1f} s ({readiness.probes} probes of /readyz) for the target to be ready"
                + ("" if readiness.ready else f"; still not ready after --ready-timeout {readiness.timeout_s:g} s")
            )
        self.readiness = readiness
        return readiness

    def observe_main(self, needs: frozenset[str]) -> None:
        """Start the main run, read its stream, poll it to its end; submit the control runs (when needed) as soon as
        the SSE rate window has closed, so they train beside the main run where the target allows, or wait in its
        queue; then reconnect to the main run's stream with Last-Event-ID (when needed)."""
        if not needs & {"main", "controls", "replay"}:
            return
        self.datasets = self.client.request("GET", "/api/datasets")
        request: dict[str, Any] = {"dataset": self.options.dataset} if self.options.dataset else {}
        request.update(self.options.main_request)
        main = self._start("main", request)
        ended = threading.Event()
        deadline = main.started_mono + self.options.timeout
        reader: threading.Thread | None = None
        if main.run_id:
            main.stream = StreamRecording(name="main", subscribed_wall=time.time())
            reader = threading.Thread(target=self._read_main_stream, args=(main, deadline + 3, ended), daemon=True)
            reader.start()
        controls = "controls" in needs
        while main.run_id and not main.finished and time.monotonic() < deadline:
            self._poll(main)
            if controls and not self.runs.keys() & CONTROL_VARIANTS.keys() and _window_closed(main):
                self._start_controls(main)
            if main.finished:
                break
            if ended.is_set():
                time.sleep(MAIN_POLL_S)  # the stream is over (its end, or it failed): poll at the usual pace
            else:
                ended.wait(MAIN_POLL_S)  # the `end` event wakes the poll loop at once
        if main.run_id and not main.finished:
            main.timed_out = True
            main.cancel = self._try("POST", f"/api/training/runs/{quote(main.run_id)}/cancel")
        self.progress.status("main run", self._describe(main), milestone=True)
        if controls:
            self._start_controls(main)  # the ones not yet submitted, or refused while the main run was training
        if reader is not None:
            reader.join(max(0.0, deadline + 3 + STALL_S - time.monotonic()))
        self.progress.done("main run")
        if "replay" in needs and main.finished and main.stream and main.stream.events:
            middle = main.stream.events[len(main.stream.events) // 2].sse.id
            if middle.isdigit():
                self.replay_after = int(middle)
                self.replay = read_event_stream(
                    self.client,
                    self.folder,
                    "replay",
                    "/api/events/training",
                    params={"run_id": main.run_id},
                    headers={"Last-Event-ID": middle},
                    deadline=time.monotonic() + 60,
                )

    def observe_controls(self) -> None:
        """Wait for the control runs that observe_main submitted to end (cancelling any past --timeout)."""
        waiting = [run for run in self.runs.values() if run.role in CONTROL_VARIANTS and run.run_id]
        deadline = time.monotonic() + self.options.timeout
        while any(not run.finished for run in waiting) and time.monotonic() < deadline:
            for run in waiting:
                if not run.finished:
                    self._poll(run)
            self.progress.status("control runs", ", ".join(self._describe(r) for r in waiting))
            if any(not run.finished for run in waiting):
                time.sleep(CONTROL_POLL_S)
        for run in waiting:
            if not run.finished:
                run.timed_out = True
                run.cancel = self._try("POST", f"/api/training/runs/{quote(str(run.run_id))}/cancel")
        if waiting:
            self.progress.status("control runs", ", ".join(self._describe(r) for r in waiting), milestone=True)
            self.progress.done("control runs")

    def _start(self, role: str, request: dict[str, Any]) -> RunObservation:
        started = time.monotonic()
        exchange = self.client.request("POST", "/api/training/runs", json_body=request)
        observation = RunObservation(role=role, request=request, create=exchange, started_mono=started)
        if exchange.status in CREATED:
            try:
                body = exchange.json()
            except CheckFailure:
                body = None
            observation.body = body if isinstance(body, dict) else None
        self.runs[role] = observation
        if observation.status in TERMINAL:
            observation.finished = True
        return observation

    def _start_controls(self, main: RunObservation) -> None:
        # A target that refuses more work while the main run trains (429, 503) is asked again once it has ended.
        dataset = main.config.get("dataset") or self.options.dataset
        for role, variant in CONTROL_VARIANTS.items():
            earlier = self.runs.get(role)
            if earlier is not None and (earlier.run_id or earlier.create.status not in BUSY or not main.finished):
                continue
            request = {**({"dataset": dataset} if dataset else {}), **CONTROL_SETTINGS, **variant}
            if earlier is not None:
                self.notes.append(f"the {role} control run was refused ({earlier.create.status}) while the main run "
                                  "trained; asked again after it ended")  # fmt: skip
            self._start(role, request)

    def _read_main_stream(self, main: RunObservation, deadline: float, ended: threading.Event) -> None:
        assert main.run_id is not None and main.stream is not None
        total = (main.body or {}).get("config", {}).get("steps") if isinstance(main.body, dict) else None
        step: list[Any] = [None]

        def seen(event: ReceivedEvent) -> None:
            data = event.payload.get("data") if isinstance(event.payload, dict) else None
            if isinstance(data, dict) and isinstance(data.get("step"), int):
                step[0] = data["step"]
            of = f"/{total}" if isinstance(total, int) else ""
            where = f", step {step[0]}{of}" if step[0] is not None else ""
            assert main.stream is not None
            self.progress.status("main run", f"{main.run_id} streaming: {len(main.stream.events)} events{where}")
            if event.sse.event == "end":
                ended.set()

        try:
            read_event_stream(
                self.client,
                self.folder,
                "main",
                "/api/events/training",
                params={"run_id": main.run_id},
                deadline=deadline,
                recording=main.stream,
                on_event=seen,
            )
        finally:
            ended.set()

    @staticmethod
    def _describe(run: RunObservation) -> str:
        step = ((run.final or {}).get("progress") or {}).get("step")
        total = run.config.get("steps")
        where = f" at step {step}/{total}" if isinstance(step, int) and isinstance(total, int) else ""
        return f"{run.role} {run.status or 'not started'}{where}"

    def _poll(self, run: RunObservation) -> None:
        assert run.run_id is not None
        exchange = self._try("GET", f"/api/training/runs/{quote(run.run_id)}")
        if exchange is None:
            return
        body: Any = None
        if exchange.status == 200:
            try:
                body = exchange.json()
            except CheckFailure:
                body = None
        poll = Poll(
            at=time.monotonic() - run.started_mono, exchange=exchange, body=body if isinstance(body, dict) else None
        )
        run.polls.append(poll)
        if poll.status in TERMINAL:
            run.finished = True
            run.finished_mono = time.monotonic()
        if run.role == "main" and not (run.stream and run.stream.events):
            self.progress.status("main run", self._describe(run))  # the stream reports progress when it has any

    def _try(self, method: str, path: str) -> Exchange | None:
        # Polls and clean-up must not end the observation phase when the target hiccups once; the recorded
        # exchange (with its error) stays in probes/ for the checks to judge.
        try:
            return self.client.request(method, path)
        except TargetUnreachable as exc:
            self.notes.append(str(exc))
            return None

    # ---- what checks use ---------------------------------------------------------------------------------------

    def run(self, role: str = "main", *, finished: bool = True) -> RunObservation:
        """The observed run `role`; skips the calling check when it was not started (or, by default, not finished)."""
        observed = self.runs.get(role)
        if observed is None or observed.run_id is None:
            raise CheckSkipped(f"the {role} run was not started (see runs.create)")
        if finished and not observed.finished:
            raise CheckSkipped(f"the {role} run did not finish (see runs.finishes)")
        return observed

    def main_stream(self, *, finished: bool = False) -> tuple[RunObservation, StreamRecording]:
        """The main run and its SSE recording; skips the calling check when the stream was not read."""
        main = self.run("main", finished=finished)
        if main.stream is None:
            raise CheckSkipped("the main run's stream was not read")
        return main, main.stream

    def metrics(self, run: RunObservation, limit: int = 100) -> MetricsHistory:
        """Every page of a run's metrics, following `next_after_step` (cached)."""
        assert run.run_id is not None
        if run.run_id not in self._metrics:
            history = MetricsHistory([], [], [], [])
            after: Any = None
            for _ in range(1000):
                params: dict[str, Any] = {"limit": limit}
                if after is not None:
                    params["after_step"] = after
                page = self.client.request("GET", f"/api/training/runs/{quote(run.run_id)}/metrics", params=params)
                history.pages.append(page)
                if page.status != 200:
                    break
                body = page.json()
                history.bodies.append(body)
                if not isinstance(body, dict):
                    break
                history.metrics += [m for m in body.get("metrics", []) if isinstance(m, dict)]
                seen = {e.get("step") for e in history.evals}
                history.evals += [e for e in body.get("evals", []) if isinstance(e, dict) and e.get("step") not in seen]
                following = body.get("next_after_step")
                if following is None or following == after or not body.get("metrics"):
                    break
                after = following
            self._metrics[run.run_id] = history
        return self._metrics[run.run_id]

    def checkpoint_list(self, run: RunObservation) -> Exchange:
        """GET the run's checkpoint list (cached)."""
        assert run.run_id is not None
        if run.run_id not in self._checkpoint_lists:
            path = f"/api/training/runs/{quote(run.run_id)}/checkpoints"
            self._checkpoint_lists[run.run_id] = self.client.request("GET", path)
        return self._checkpoint_lists[run.run_id]

    def listed_checkpoints(self, run: RunObservation) -> list[dict[str, Any]]:
        """The checkpoint entries of the list (sorted by step); a list that is unusable fails the calling check."""
        exchange = self.checkpoint_list(run)
        if exchange.status != 200:
            raise CheckFailure("Checkpoint list unavailable", f"answered {exchange.status}", [exchange.probe])
        body = exchange.json()
        entries = body.get("checkpoints") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
            raise CheckFailure("Checkpoint list unusable", "no `checkpoints` array of named entries", [exchange.probe])
        return sorted(entries, key=lambda e: (e.get("step", 0), e["name"]))

    def checkpoint(self, run: RunObservation, name: str) -> DownloadedCheckpoint:
        """Download one checkpoint, save it under checkpoints/<role>-<run_id>/, open it (cached)."""
        assert run.run_id is not None
        key = (run.run_id, name)
        if key not in self._checkpoints:
            path = f"/api/training/runs/{quote(run.run_id)}/checkpoints/{quote(name)}"
            exchange = self.client.request("GET", path, headers={"Accept": "application/octet-stream"})
            relative = f"checkpoints/{run.folder}/{_safe_name(name)}"
            checkpoint, error = None, None
            if exchange.status == 200:
                self.folder.write_bytes(relative, exchange.body)
                try:
                    checkpoint = open_checkpoint(self.folder.path(relative))
                except CheckpointError as exc:
                    error = str(exc)
            else:
                error = f"download answered {exchange.status}"
            self._checkpoints[key] = DownloadedCheckpoint(
                name=name,
                exchange=exchange,
                path=relative if exchange.status == 200 else exchange.probe,
                sha256=hashlib.sha256(exchange.body).hexdigest(),
                bytes=len(exchange.body),
                checkpoint=checkpoint,
                error=error,
            )
        return self._checkpoints[key]

    def checkpoint_downloads(self, run: RunObservation) -> list[tuple[dict[str, Any], DownloadedCheckpoint]]:
        """Every listed checkpoint of `run` with its download, in step order."""
        return [(entry, self.checkpoint(run, entry["name"])) for entry in self.listed_checkpoints(run)]

    def downloaded_checkpoints(self) -> dict[tuple[str, str], DownloadedCheckpoint]:
        """Every checkpoint downloaded so far, by (run_id, name)."""
        return dict(self._checkpoints)

    def evidence_file(self, run: RunObservation, name: str | None = None) -> Exchange:
        """GET the run's evidence manifest (`name` None) or one evidence file (cached)."""
        assert run.run_id is not None
        key = (run.run_id, name or "")
        if key not in self._evidence:
            path = f"/api/training/runs/{quote(run.run_id)}/evidence"
            if name:
                path += "/" + quote(name)
            exchange = self.client.request("GET", path)
            if name and exchange.status == 200 and not name.endswith(".safetensors"):
                # Keep the target's evidence beside the verdict; checkpoints are already under checkpoints/.
                self.folder.write_bytes(f"training/{run.folder}/{_safe_relative(name)}", exchange.body)
            self._evidence[key] = exchange
        return self._evidence[key]

    def default_dataset(self) -> str | None:
        """The dataset a run without one should get: the target's first verified one, MNIST preferred."""
        if self.datasets is None or self.datasets.status != 200:
            return None
        body = self.datasets.json()
        verified = {d.get("name") for d in body.get("datasets", []) if isinstance(d, dict) and d.get("verified")}
        return next((name for name in DATASET_PREFERENCE if name in verified), None)


def _not_ready(exchange: Exchange) -> bool:
    if exchange.status == 503:
        return True
    if exchange.status != 200:
        return False
    try:
        body = exchange.json()
    except CheckFailure:
        return False
    return isinstance(body, dict) and body.get("status") == "not_ready"


def _window_closed(main: RunObservation) -> bool:
    """True once the main run's SSE rate window is over: RATE_WINDOW_S after its stream said running. Nothing
    started after that can change what sse.rate counts. A stream that has not said so keeps the window open (the
    control runs then wait for the main run's end)."""
    stream = main.stream
    if stream is None or not stream.events:
        return False
    opened = stream.running_since()
    return opened > 0.0 and time.time() - stream.subscribed_wall > opened + RATE_WINDOW_S


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "unnamed"


def _safe_relative(name: str) -> str:
    parts = [_safe_name(p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "unnamed"
