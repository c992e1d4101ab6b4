"""Where trainers run: the seam between a run's supervisor and its training process.

The supervisor never touches a process, a node or a file of the trainer's: it asks an `Executor` to start a trainer
for a run (from its config, and from a verified checkpoint when the run resumes), then reads the trainer's protocol
messages, asks for each checkpoint's bytes, and terminates, kills or waits for it. The local executor runs a child
process on this host (`local.py`); the Ray executor runs it on any node of a Ray cluster (`ray.py`), where it keeps
training while the server restarts.

Each message a trainer yields carries `seq`, its number within the attempt (1, 2, ...). A trainer that outlives the
server is found again with `reattach` and replays its messages after the last one the run's log recorded, so the log
continues with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol


class TrainerStartError(Exception):
    """The trainer could not be started; the message says why (the run fails with `trainer_start_failed`)."""


class TrainerLost(Exception):
    """The trainer is gone with the machine it ran on (a lost node, an unreachable cluster): the run is
    `interrupted` (`node_lost`) and may resume from its last checkpoint elsewhere."""


@dataclass(frozen=True)
class ResumePoint:
    """The verified checkpoint a resumed run continues from."""

    name: str
    path: Path
    sha256: str
    bytes: int
    step: int


@dataclass(frozen=True)
class Launch:
    """What a trainer is started with: the run, its resolved config, and where it resumes from."""

    run_id: str
    config: Mapping[str, Any]
    resume: ResumePoint | None = None


class Trainer(Protocol):
    """One running trainer, as its supervisor sees it."""

    run_id: str
    terminated: bool

    @property
    def placement(self) -> dict[str, Any]:
        """Where it runs (executor, host, and what else the executor knows), for provenance and the run body."""
        ...

    @property
    def returncode(self) -> int | None:
        """Exit status once it ended (negative: killed by that signal); None while it runs."""
        ...

    def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Its protocol messages, in order, each with its `seq`, until its output ends; TrainerLost when the trainer
        is gone with its machine."""
        ...

    def checkpoint_opener(self, message: Mapping[str, Any]) -> Callable[[], BinaryIO]:
        """How to read the bytes of the checkpoint a `checkpoint` message reports (called in a worker thread)."""
        ...

    def terminate(self) -> None:
        """Ask it to stop after its current step (it reports `cancelled`)."""
        ...

    def kill(self) -> None:
        """Stop it now."""
        ...

    async def wait(self) -> int | None:
        """Wait until it has ended; its exit status."""
        ...

    def log_text(self) -> str:
        """Its log (the kept tail), for trainer.log."""
        ...

    def last_log(self, lines: int = 5) -> str:
        """The last few log lines, for an error message."""
        ...

    async def cleanup(self) -> None:
        """Remove its scratch space once it has ended."""
        ...


class Executor(Protocol):
    """Starts trainers."""

    name: str
    #: True when trainers go on without the server (they are not stopped at shutdown, and `reattach` finds them).
    detaches: bool

    def unavailable(self) -> str | None:
        """Why no trainer can be started now (an unreachable cluster), or None."""
        ...

    async def start(self, launch: Launch) -> Trainer:
        """Start a trainer for one attempt of a run; TrainerStartError when it cannot."""
        ...

    async def reattach(self, launch: Launch, after_seq: int) -> Trainer | None:
        """The trainer of a run that was active when the server last stopped, if it still exists, replaying its
        messages after `after_seq`; None when it is gone."""
        ...

    def forget(self, run_id: str) -> None:
        """Drop what is left of a trainer that is gone for good (its scratch space)."""
        ...

    async def probe(self) -> dict[str, Any]:
        """Whether trainers can run: {"ok": bool, "device"?, "tinygrad_version"?, "reason"?}."""
        ...

    async def close(self) -> None:
        """Release what the executor holds (it starts no trainer afterwards)."""
        ...
