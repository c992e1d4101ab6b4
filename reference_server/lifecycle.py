"""A run's lifecycle: its states, the one table of allowed transitions, and the view folded from its events.

A run's state is never stored on its own: it is what the run's event log says. `Run.apply` folds one event into the
view, and it is the same function whether the event was just appended or read back from metrics.jsonl at start-up,
so a restarted server sees exactly what a running one saw.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
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
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    resumed_from: str | None = None  # the checkpoint name the current attempt continues from

    @property
    def total_steps(self) -> int:
        """Steps the run trains in all (from its resolved config)."""
        return int(self.config["steps"])

    @property
    def terminal(self) -> bool:
        """True once the run has ended."""
        return self.status in TERMINAL

    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one event into the view (live and at recovery alike)."""
        data = event["data"]
        kind = event["type"]
        if kind == "status":
            if data.get("resumed_from") and self.status in TERMINAL:
                self._reopen(int(data.get("step", 0)), str(data["resumed_from"]))
            self.status = RunStatus(data["status"])
            if self.status is RunStatus.RUNNING:
                self.started_at = self.started_at or event["time"]  # a resumed run keeps its first start
                self.device = data.get("device", self.device)
                self.step = max(self.step, int(data.get("step", 0)))
        elif kind == "metric":
            self.metrics.append({k: data[k] for k in METRIC_FIELDS if k in data} | {"time": event["time"]})
            self.step = max(self.step, int(data["step"]))
        elif kind == "checkpoint":
            record = {k: data[k] for k in CHECKPOINT_FIELDS if k in data}
            self.evals.append(
                {
                    "step": data["step"],
                    "eval_loss": data["eval_loss"],
                    "eval_accuracy": data["eval_accuracy"],
                    **({"eval_samples": data["eval_samples"]} if "eval_samples" in data else {}),
                    "checkpoint": data["name"],
                    "time": event["time"],
                }
            )
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
        self.step = step
        self.metrics = [m for m in self.metrics if m["step"] <= step]
        self.evals = [e for e in self.evals if e["step"] <= step]
        self.checkpoints = [c for c in self.checkpoints if c["step"] <= step]

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
            "status": str(self.status),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "config": self.config,
            "progress": {"step": self.step, "total_steps": total, "fraction": min(1.0, self.step / total)},
            "latest_metrics": self.metrics[-1] if self.metrics else None,
            "latest_eval": self.evals[-1] if self.evals else None,
            "checkpoints": [self.checkpoint_json(c) for c in self.checkpoints],
            "device": self.device,
            "error": self.error,
            "idempotency_key": self.idempotency_key,
            "links": self.links(),
        }

    def metrics_page(self, after_step: int | None, limit: int) -> dict[str, Any]:
        """metrics.schema.json: records with step > after_step, covering at most `limit` distinct steps."""
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
