"""The Ray executor's trainer handle, driven in this process against a real local cluster: what a dead actor looks
like from each call the supervisor makes. Its trainer is the scripted one (tests/scripted_trainer.py, through the
executor's trainer command): the subject is the actor's death, not training."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

import pytest
from server_harness import SCRIPTED
from trainer_tinygrad.config import resolve_config

from reference_server.executors import Launch, TrainerLost
from reference_server.executors.ray_cluster import RayExecutor
from tooling.ray_local import LocalRayCluster


def test_a_checkpoint_fetched_from_a_dead_actor_is_a_lost_trainer_not_a_server_error(
    ray_cluster: LocalRayCluster, data_dir: Path
) -> None:
    """A node can die between a trainer's `checkpoint` message and the server fetching the bytes (a fresh-clone CI
    run saw it): the run must end `interrupted` (`node_lost`), which the supervisor does for TrainerLost only."""
    ray = pytest.importorskip("ray")
    config = resolve_config({"model": "mlp", "steps": 100_000}, "fashion-mnist")

    async def scenario() -> None:
        command = shlex.split(SCRIPTED["TRAINER_COMMAND"])
        executor = RayExecutor(ray_cluster.address, data_dir=data_dir, env=dict(os.environ), command=command)
        assert await executor.connect()
        trainer = await executor.start(Launch(run_id="run-0123456789abcdef0123", config=config))
        messages = trainer.messages()
        first = await asyncio.wait_for(anext(messages), 120)  # placed on a node and training
        assert first["event"] == "started" and first["device"] == "SCRIPTED", first
        ray.kill(trainer.actor, no_restart=True)
        opener = trainer.checkpoint_opener({"name": "step-100.safetensors"})
        with pytest.raises(TrainerLost, match="gone"):
            await asyncio.get_running_loop().run_in_executor(None, opener)
        with pytest.raises(TrainerLost):
            await asyncio.wait_for(anext(messages), 60)

    try:
        asyncio.run(scenario())
    finally:
        ray.shutdown()
