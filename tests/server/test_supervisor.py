"""The run supervisor in-process: a server that stops leaves a detaching executor's trainer training, even when the
shutdown's cancel never reached the supervision (Python 3.11's asyncio.wait_for swallows a cancel that arrives as
its future completes, and a live run's messages complete futures all the time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from reference_server.supervisor import RunSupervisor


class EndlessTrainer:
    """A trainer on a node whose metrics never pause: one message per event-loop turn, counted as they are read."""

    terminated = False

    def __init__(self) -> None:
        self.read = 0

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            self.read += 1
            yield {"event": "metric", "step": self.read, "seq": self.read, "loss": 1.0}
            await asyncio.sleep(0)

    async def wait(self) -> int:  # pragma: no cover - reached only if supervision read the trainer to its end
        raise AssertionError("a detached supervisor waited for the trainer")


class Untouched:
    """A journal or store the detached supervision must not use: any call fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the detached supervision used {name}")


def test_a_detached_supervision_ends_at_the_next_message_even_if_the_cancel_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trainer = EndlessTrainer()
    supervisor = RunSupervisor(
        cast(Any, SimpleNamespace(run_id="run-0123456789abcdef0123")),
        cast(Any, None),
        journal=cast(Any, Untouched()),
        store=cast(Any, Untouched()),
        executor=cast(Any, SimpleNamespace(name="ray", detaches=True)),
        provenance=lambda *_: {},
        cancel_grace_s=1.0,
        stopping=lambda: True,
        attached=cast(Any, trainer),
    )
    supervisor.detach()  # and no cancel at all, as if wait_for had swallowed it
    caplog.set_level("INFO", logger="reference_server.supervisor")
    asyncio.run(asyncio.wait_for(supervisor.supervise(), timeout=10))
    assert trainer.read == 1
    assert "left training without this server (ray executor)" in caplog.text
