"""What the suite observes of the target, gathered once and shared by the checks.

The observation phase starts the runs itself: the main run with the target's defaults (and the dataset asked
for, if any), subscribed to at once so every event's arrival is timed, polled until it ends; then two small
control runs for mock detection (another seed; learning rate 0 with the MLP). Everything a check downloads
later (metrics pages, checkpoints, evidence files) is cached here, so two checks never fetch a thing twice.
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
from .published import PublishedManifest
from .stream import STALL_S, StreamRecording, read_event_stream

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
#: SSE rate requirement: this many events carrying new training state within this many seconds of subscribing.
RATE_EVENTS, RATE_WINDOW_S = 10, 10.0
MAIN_POLL_S, CONTROL_POLL_S = 0.25, 0.5
#: Control runs are small: three checkpoints, evaluated on 500 test images.
CONTROL_SETTINGS: dict[str, Any] = {"steps": 60, "log_every": 10, "checkpoint_every": 20, "eval_samples": 500}
CONTROL_VARIANTS: dict[str, dict[str, Any]] = {
    "seed": {"seed": 1},
    "zero_lr": {"model": "mlp", "learning_rate": 0.0},
}
DATASET_PREFERENCE = ("mnist", "fashion-mnist", "cifar10")


@dataclass
class Options:
    """What the user asked for on the command line."""

    base_url: str
    dataset: str | None = None
    timeout: float = 300.0
    token: str | None = None
    #: Extra fields for the main run's request. Empty by default: the SSE rate requirement is defined for the
    #: target's defaults, and the gate accepts only reports whose main run asked for nothing but a dataset.
    main_request: dict[str, Any] = field(default_factory=dict)


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
    ) -> None:
        self.options = options
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

    def observe(self, needs: frozenset[str]) -> None:
        """Start and watch the runs the selected checks need."""
        if not needs & {"main", "controls", "replay"}:
            return
        self.datasets = self.client.request("GET", "/api/datasets")
        request: dict[str, Any] = {"dataset": self.options.dataset} if self.options.dataset else {}
        request.update(self.options.main_request)
        main = self._start("main", request)
        reader: threading.Thread | None = None
        deadline = main.started_mono + self.options.timeout
        if main.run_id:
            reader = threading.Thread(target=self._read_main_stream, args=(main, deadline + 3), daemon=True)
            reader.start()
        while main.run_id and not main.finished and time.monotonic() < deadline:
            self._poll(main)
            if not main.finished:
                time.sleep(MAIN_POLL_S)
        if main.run_id and not main.finished:
            main.timed_out = True
            main.cancel = self._try("POST", f"/api/training/runs/{quote(main.run_id)}/cancel")
        # Only now: a control run training beside the main run would slow it inside the SSE rate window.
        if "controls" in needs:
            self._start_controls(main)
        for role in CONTROL_VARIANTS:
            if role in self.runs:
                self._wait(self.runs[role])
        if reader is not None:
            reader.join(max(0.0, deadline + 3 + STALL_S - time.monotonic()))
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

    def _start(self, role: str, request: dict[str, Any]) -> RunObservation:
        started = time.monotonic()
        exchange = self.client.request("POST", "/api/training/runs", json_body=request)
        observation = RunObservation(role=role, request=request, create=exchange, started_mono=started)
        if exchange.status == 200:
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
        dataset = main.config.get("dataset") or self.options.dataset
        for role, variant in CONTROL_VARIANTS.items():
            request = {**({"dataset": dataset} if dataset else {}), **CONTROL_SETTINGS, **variant}
            self._start(role, request)

    def _read_main_stream(self, main: RunObservation, deadline: float) -> None:
        assert main.run_id is not None
        main.stream = read_event_stream(
            self.client,
            self.folder,
            "main",
            "/api/events/training",
            params={"run_id": main.run_id},
            deadline=deadline,
        )

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

    def _wait(self, run: RunObservation) -> None:
        if not run.run_id:
            return
        deadline = time.monotonic() + self.options.timeout
        while not run.finished and time.monotonic() < deadline:
            self._poll(run)
            if not run.finished:
                time.sleep(CONTROL_POLL_S)
        if not run.finished:
            run.timed_out = True
            run.cancel = self._try("POST", f"/api/training/runs/{quote(run.run_id)}/cancel")

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


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "unnamed"


def _safe_relative(name: str) -> str:
    parts = [_safe_name(p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "unnamed"
