"""A run's lifecycle: its states, the one table of allowed transitions, and the view folded from its events.

A run's state is never stored on its own: it is what the run's event log says. `Run.apply` folds one event into the
view, and it is the same function whether the event was just appended or read back from metrics.jsonl at start-up,
so a restarted server sees exactly what a running one saw.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import routes
from .schemas import default_contract


class RunStatus(StrEnum):
    """A run's lifecycle state."""

    QUEUED = "queued"  # accepted; waiting for a slot, or its trainer is still loading
    RUNNING = "running"  # the trainer reported `started`
    SUCCEEDED = "succeeded"  # the trainer reported `finished` and exited 0
    FAILED = "failed"  # the trainer reported `failed`, crashed, or broke the protocol
    CANCELLED = "cancelled"  # a client cancelled it and the trainer stopped
    INTERRUPTED = "interrupted"  # the server stopped while it was queued or running


#: The one table of allowed transitions; a terminal state has none.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.INTERRUPTED: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: The one way out of an ended state: POST .../resume reopens these (to `queued`) when the run has a checkpoint.
RESUMABLE = frozenset({RunStatus.INTERRUPTED, RunStatus.FAILED})


class InvalidTransition(Exception):
    """A transition the table does not allow: a server bug, never a client's."""


def check_transition(current: RunStatus, new: RunStatus) -> None:
    """Raise InvalidTransition unless TRANSITIONS allows current -> new."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"{current} -> {new} is not an allowed transition")


#: What a run id may look like, as the contract says (schemas/common.schema.json); ids also name evidence folders,
#: so nothing else may reach the file system as one.
RUN_ID_PATTERN = re.compile(default_contract().documents["common.schema.json"]["$defs"]["run_id"]["pattern"])


def new_run_id() -> str:
    """An opaque run id: `run-` and 20 lowercase hex digits (80 random bits); it matches RUN_ID_PATTERN."""
    return "run-" + secrets.token_hex(10)


#: Request fields that label a run for people (lists, the dashboard) and are not part of its training config.
LABEL_FIELDS = ("name", "tags")
METRIC_FIELDS = ("step", "epoch", "loss", "accuracy", "learning_rate", "samples_per_second")
CHECKPOINT_FIELDS = ("step", "name", "eval_loss", "eval_accuracy", "eval_samples", "sha256", "bytes")


@dataclass
class Run:
    """The view of one run, folded from its events."""

    run_id: str
    config: dict[str, Any]
    created_at: str
    seq: int
    idempotency_key: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.QUEUED
    started_at: str | None = None
    finished_at: str | None = None
    step: int = 0
    device: str | None = None
    #: Every metric and evaluation of the view, or None while compacted (an ended run whose log left memory: fold the
    #: log again with `restore` before paging through them).
    metrics: list[dict[str, Any]] | None = field(default_factory=list)
    evals: list[dict[str, Any]] | None = field(default_factory=list)
    latest_metric: dict[str, Any] | None = None
    latest_eval: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    resumed_from: str | None = None  # the checkpoint name the current attempt continues from
    placement: dict[str, Any] | None = None  # where the current attempt's trainer runs
    trainer_seq: int = 0  # the last trainer message of the current attempt that an event records
    auto_resume: bool = False
    auto_resumes: int = 0  # automatic resumes so far

    @property
    def total_steps(self) -> int:
        """Steps the run trains in all (from its resolved config)."""
        return int(self.config["steps"])

    @property
    def terminal(self) -> bool:
        """True once the run has ended."""
        return self.status in TERMINAL

    @property
    def final(self) -> bool:
        """True once the run has ended for good: nothing can follow its last `end` (only an interrupted or failed
        run with a checkpoint can be resumed)."""
        return self.terminal and not (self.status in RESUMABLE and self.checkpoints)

    @property
    def name(self) -> str | None:
        """The name the request gave, if any."""
        name = self.request.get("name")
        return str(name) if name is not None else None

    @property
    def tags(self) -> list[str]:
        """The tags the request gave (none: empty)."""
        return [str(t) for t in self.request.get("tags", [])]

    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one event into the view (live and at recovery alike)."""
        data = event["data"]
        kind = event["type"]
        if isinstance(data.get("trainer_seq"), int):
            self.trainer_seq = max(self.trainer_seq, data["trainer_seq"])
        if kind == "status":
            if data.get("resumed_from") and self.status in TERMINAL:
                self._reopen(int(data.get("step", 0)), str(data["resumed_from"]))
                self.auto_resumes += bool(data.get("auto_resume"))
            self.status = RunStatus(data["status"])
            if self.status is RunStatus.RUNNING:
                self.started_at = self.started_at or event["time"]  # a resumed run keeps its first start
                self.device = data.get("device", self.device)
                self.placement = data.get("placement", self.placement)
                self.step = max(self.step, int(data.get("step", 0)))
        elif kind == "metric":
            self.latest_metric = {k: data[k] for k in METRIC_FIELDS if k in data} | {"time": event["time"]}
            if self.metrics is not None:
                self.metrics.append(self.latest_metric)
            self.step = max(self.step, int(data["step"]))
        elif kind == "checkpoint":
            record = {k: data[k] for k in CHECKPOINT_FIELDS if k in data}
            self.latest_eval = {
                "step": data["step"],
                "eval_loss": data["eval_loss"],
                "eval_accuracy": data["eval_accuracy"],
                **({"eval_samples": data["eval_samples"]} if "eval_samples" in data else {}),
                "checkpoint": data["name"],
                "time": event["time"],
            }
            if self.evals is not None:
                self.evals.append(self.latest_eval)
            self.checkpoints.append(record | {"created_at": data.get("created_at", event["time"])})
            self.step = max(self.step, int(data["step"]))
        elif kind == "end":
            self.status = RunStatus(data["status"])
            self.finished_at = event["time"]
            self.error = data.get("error")
            self.step = max(self.step, int(data.get("step", 0)))

    def _reopen(self, step: int, checkpoint: str) -> None:
        """A resume: the view goes back to the checkpoint it continues from. Metrics logged after that checkpoint
        by the attempt that ended stay in the log but leave the view, since the resumed attempt logs those steps
        again."""
        self.resumed_from = checkpoint
        self.finished_at = None
        self.error = None
        self.trainer_seq = 0
        self.placement = None
        self.step = step
        if self.metrics is None or self.evals is None:
            raise RuntimeError(f"run {self.run_id} is compacted: restore its history before reopening it")
        self.metrics = [m for m in self.metrics if m["step"] <= step]
        self.evals = [e for e in self.evals if e["step"] <= step]
        self.latest_metric = self.metrics[-1] if self.metrics else None
        self.latest_eval = self.evals[-1] if self.evals else None
        self.checkpoints = [c for c in self.checkpoints if c["step"] <= step]

    @property
    def compacted(self) -> bool:
        """True while the view holds no per-step history (see `compact`)."""
        return self.metrics is None or self.evals is None

    def compact(self) -> None:
        """Drop the per-step history of an ended run (its log keeps it): what a run list or body shows stays."""
        self.metrics = self.evals = None

    def restore(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Rebuild the per-step history from the run's whole log."""
        scratch = Run(run_id=self.run_id, config=self.config, created_at=self.created_at, seq=self.seq)
        for event in events:
            scratch.apply(event)
        self.metrics, self.evals = scratch.metrics, scratch.evals

    def links(self) -> dict[str, str]:
        """Where a client goes next (relative URLs)."""
        return {
            "self": routes.url("run", run_id=self.run_id),
            "metrics": routes.url("run_metrics", run_id=self.run_id),
            "events": routes.url("events", query={"run_id": self.run_id}),
            "checkpoints": routes.url("run_checkpoints", run_id=self.run_id),
            "evidence": routes.url("run_evidence", run_id=self.run_id),
            "cancel": routes.url("run_cancel", run_id=self.run_id),
            "resume": routes.url("run_resume", run_id=self.run_id),
        }

    def checkpoint_json(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One checkpoint as checkpoint.schema.json, with its download URL."""
        return dict(record) | {"url": routes.url("run_checkpoint", run_id=self.run_id, name=str(record["name"]))}

    def to_json(self) -> dict[str, Any]:
        """The run as run.schema.json."""
        total = self.total_steps
        return {
            "run_id": self.run_id,
            "name": self.name,
            "tags": self.tags,
            "status": str(self.status),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "config": self.config,
            "progress": {"step": self.step, "total_steps": total, "fraction": min(1.0, self.step / total)},
            "latest_metrics": self.latest_metric,
            "latest_eval": self.latest_eval,
            "checkpoints": [self.checkpoint_json(c) for c in self.checkpoints],
            "device": self.device,
            "placement": self.placement,
            "auto_resume": self.auto_resume,
            "error": self.error,
            "idempotency_key": self.idempotency_key,
            "links": self.links(),
        }

    def metrics_page(self, after_step: int | None, limit: int) -> dict[str, Any]:
        """metrics.schema.json: records with step > after_step, covering at most `limit` distinct steps (the view must
        not be compacted)."""
        if self.metrics is None or self.evals is None:
            raise RuntimeError(f"run {self.run_id} is compacted: restore its history first")
        floor = -1 if after_step is None else after_step
        steps = sorted(
            {m["step"] for m in self.metrics if m["step"] > floor}
            | {e["step"] for e in self.evals if e["step"] > floor}
        )
        page_steps = steps[:limit]
        ceiling = page_steps[-1] if page_steps else floor
        more = len(steps) > limit
        return {
            "run_id": self.run_id,
            "metrics": [m for m in self.metrics if floor < m["step"] <= ceiling],
            "evals": [e for e in self.evals if floor < e["step"] <= ceiling],
            "next_after_step": ceiling if more else None,
        }
