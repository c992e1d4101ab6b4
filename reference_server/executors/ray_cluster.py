"""The Ray executor: each run's trainer on any node of a Ray cluster with the resources it asks for.

Ray places a detached actor per run (`ray_host.TrainerHost`, named `trainer-<run_id>` in the namespace
`trainer-tinygrad`) on a node with `--ray-cpus-per-run` CPUs free, and one GPU when the trainers' device (`DEV`) is a
GPU. The actor starts the trainer there (`--trainer-command` when given, which must then exist at that path on
every node; by default the node's own `python -m trainer_tinygrad`); the server long-polls it for protocol messages
(SSE stays live through Ray), asks it for each checkpoint's bytes (they travel through Ray's object store, and the
server still checks their SHA-256 before they enter the evidence), and sends SIGTERM, then SIGKILL after the grace
period, when a run is cancelled. No file system is shared: a resumed run's checkpoint travels to its node the same way.

When a node dies, every call to its actor fails (Ray notices a dead node within its health-check period): the run is
`interrupted` with `node_lost` and may resume by itself on another node. When the server stops, the actors go on;
the next server finds each one by its run's name and continues from the message after the last one the run's log
recorded, so the log has no gap and no duplicate.

Ray is an optional dependency (`pip install 'trainer-tinygrad-server[ray]'`): it is imported only here, and only
when this executor is chosen. Its blocking calls (connecting, `ray.get`, `ray.put`, `ray.kill`) run on worker
threads; actor calls are awaited on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from . import Launch, TrainerLost, TrainerStartError, ray_host

log = logging.getLogger(__name__)

NAMESPACE = "trainer-tinygrad"
#: Seconds a poll waits for a message on the node; the server's own wait adds this much slack before it asks again.
POLL_S = 1.0
#: A node that answers none of our calls for this long is taken for lost even before Ray declares it dead.
UNRESPONSIVE_S = 120.0
#: Seconds to reach the head's port, then to connect to the cluster.
HEAD_PROBE_S = 3.0
CONNECT_S = 60.0
#: tinygrad devices that are GPUs: a run on one asks Ray for a GPU.
GPU_DEVICES = frozenset({"CUDA", "NV", "AMD", "HIP", "METAL", "GPU", "CL", "QCOM", "WEBGPU"})
#: What a trainer on a node inherits from the server's environment.
PASSED_ENV = ("DEV", "CACHEDB", "BEAM", "NUM_CPU_THREADS")


def actor_name(run_id: str) -> str:
    """The name of a run's actor (detached actors are found again by name)."""
    return f"trainer-{run_id}"


def _ray() -> Any:
    import ray  # an optional dependency: imported only when this executor is used

    return ray


@contextlib.contextmanager
def _lost_on_ray_errors(run_id: str, timeout: float | None) -> Iterator[None]:
    """A call to a run's actor that times out, or finds the actor or its node gone, has lost the trainer
    (Ray's GetTimeoutError is a TimeoutError too)."""
    try:
        yield
    except TimeoutError as exc:
        raise TrainerLost(f"the node of run {run_id}'s trainer answered nothing for {timeout} s") from exc
    except _ray().exceptions.RayActorError as exc:
        raise TrainerLost(f"the trainer's node or actor is gone: {_first_line(exc)}") from exc


class RayTrainer:
    """A trainer hosted by a `TrainerHost` actor, seen from the server."""

    def __init__(self, run_id: str, actor: Any, after_seq: int = 0) -> None:
        self.run_id = run_id
        self.actor = actor
        self.terminated = False
        self._cursor = after_seq
        self._returncode: int | None = None
        self._placement: dict[str, Any] = {"executor": "ray"}
        self._placed = False
        self._log = ""

    @property
    def placement(self) -> dict[str, Any]:
        """The node id, hostname and pid the actor reported."""
        return self._placement

    @property
    def returncode(self) -> int | None:
        """The trainer's exit status once its last message was read."""
        return self._returncode

    async def _call(self, method: Any, *args: Any, timeout: float | None = UNRESPONSIVE_S) -> Any:
        # asyncio.timeout, not asyncio.wait_for: Python 3.11's wait_for returns its future's result when the future
        # completes as a cancel arrives, and the server's shutdown cancels the supervision in the middle of polls.
        with _lost_on_ray_errors(self.run_id, timeout):
            async with asyncio.timeout(timeout):
                return await method.remote(*args)

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Each protocol message after the cursor, as the actor hands them out, until the trainer has ended. The
        first call waits, without a deadline, until Ray has placed the actor on a node with room for it."""
        self._placement = await self._call(self.actor.placement, timeout=None)
        self._placed = True
        while True:
            batch = await self._call(self.actor.poll, self._cursor, POLL_S, timeout=POLL_S + UNRESPONSIVE_S)
            for message in batch["messages"]:
                self._cursor = int(message["seq"])
                yield message
            if batch["done"]:
                self._returncode = batch["returncode"]
                with contextlib.suppress(TrainerLost):
                    self._log = await self._call(self.actor.log_text, timeout=30)
                return

    def checkpoint_opener(self, message: Mapping[str, Any]) -> Callable[[], BinaryIO]:
        """The checkpoint's bytes, fetched from the actor through the object store (called on a worker thread).

        A node that dies between the trainer's `checkpoint` message and this fetch loses the run's trainer, not the
        checkpoint's integrity: TrainerLost, so the run ends `interrupted` (`node_lost`) and may resume from its last
        adopted checkpoint, as when the node dies between polls."""
        name, run_id, actor = str(message["name"]), self.run_id, self.actor

        def fetch() -> BinaryIO:
            with _lost_on_ray_errors(run_id, UNRESPONSIVE_S):
                return io.BytesIO(_ray().get(actor.checkpoint.remote(name), timeout=UNRESPONSIVE_S))

        return fetch

    def terminate(self) -> None:
        """SIGTERM on the node (the trainer stops after its current step); an actor still waiting for a node is
        simply removed."""
        self.terminated = True
        if self._placed:
            self.actor.terminate.remote()
        else:
            _kill_actor(self.actor)

    def kill(self) -> None:
        """SIGKILL on the node; the actor goes too."""
        self.actor.kill.remote()

    async def wait(self) -> int | None:
        """The exit status (known once `messages` has ended)."""
        return self._returncode

    def log_text(self) -> str:
        """The trainer's log as the actor kept it."""
        return self._log

    def last_log(self, lines: int = 5) -> str:
        """The last few log lines, for an error message."""
        return " | ".join(line for line in self._log.splitlines()[-lines:] if line.strip())

    async def cleanup(self) -> None:
        """Remove the scratch folder on the node and the actor itself (the run has ended)."""
        with contextlib.suppress(TrainerLost):
            await self._call(self.actor.close, timeout=30)
        await asyncio.get_running_loop().run_in_executor(None, _kill_actor, self.actor)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _kill_actor(actor: Any) -> None:
    with contextlib.suppress(Exception):
        _ray().kill(actor, no_restart=True)


class RayExecutor:
    """Trainers on a Ray cluster; they go on when the server stops."""

    name = "ray"
    detaches = True

    def __init__(
        self,
        address: str | None,
        *,
        data_dir: Path | None,
        env: Mapping[str, str],
        cpus_per_run: float = 1.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.address = address or "auto"
        self.data_dir = data_dir
        #: The trainer command, run on the node (None: the node's interpreter's `-m trainer_tinygrad`).
        self.command = list(command) if command else None
        self.env = {k: env[k] for k in PASSED_ENV if k in env}
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = 1 if self.env.get("DEV", "").split(":")[0].upper() in GPU_DEVICES else 0
        self.connected = False
        self._problem: str | None = f"not connected to the Ray cluster at {self.address} yet"

    # ----- the cluster -----
    async def connect(self) -> bool:
        """Connect to the cluster (on a worker thread); False, with the reason kept for readiness, when it cannot.
        The head's port is tried first with a short timeout: `ray.init` itself waits minutes for a head that is not
        there, and the server must start (and say why it is not ready) without one."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._probe_head)
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, self._connect), CONNECT_S)
        except Exception as exc:
            self._problem = f"the Ray cluster at {self.address} is unreachable: {_first_line(exc)}"
            log.error("%s", self._problem)
            return False
        self.connected, self._problem = True, None
        return True

    def _probe_head(self) -> None:
        if self.address == "auto":
            return  # Ray finds the cluster `ray start` left on this host, or fails at once
        host, _, port = self.address.rpartition(":")
        with socket.create_connection((host.strip("[]"), int(port)), timeout=HEAD_PROBE_S):
            pass

    def _connect(self) -> None:
        ray = _ray()
        ray.cloudpickle.register_pickle_by_value(ray_host)  # workers need the trainer and Ray, not this server
        ray.init(
            address=self.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
            ignore_reinit_error=True,
        )
        alive = [n for n in ray.nodes() if n.get("Alive")]
        log.info("connected to the Ray cluster at %s: %d node(s) alive", self.address, len(alive))

    def unavailable(self) -> str | None:
        """Why no run can start now, or None."""
        if self._problem is None and not _ray().is_initialized():
            self._problem = "the connection to the Ray cluster was lost"
        return self._problem

    # ----- trainers -----
    async def start(self, launch: Launch) -> RayTrainer:
        """Create the run's detached actor; Ray places it on a node with the resources it asks for (the run stays
        `queued` until a node has them)."""
        if self.unavailable():
            raise TrainerStartError(str(self.unavailable()))
        loop = asyncio.get_running_loop()
        try:
            actor = await loop.run_in_executor(None, self._create, launch)
        except Exception as exc:
            raise TrainerStartError(f"Ray could not start the trainer: {_first_line(exc)}") from exc
        return RayTrainer(launch.run_id, actor)

    def _create(self, launch: Launch) -> Any:
        ray = _ray()
        with contextlib.suppress(ValueError):  # an actor left by an earlier attempt of the run: it is done
            ray.kill(ray.get_actor(actor_name(launch.run_id), namespace=NAMESPACE), no_restart=True)
            time.sleep(0.5)
        resume_name = launch.resume.name if launch.resume else None
        resume_bytes = launch.resume.path.read_bytes() if launch.resume else None
        host = ray.remote(ray_host.TrainerHost).options(
            name=actor_name(launch.run_id),
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_restarts=0,
            max_concurrency=8,
        )
        data_dir = str(self.data_dir) if self.data_dir else None
        return host.remote(
            launch.run_id,
            dict(launch.config),
            self.env,
            data_dir,
            resume_name=resume_name,
            resume_bytes=resume_bytes,
            command=self.command,
        )

    async def reattach(self, launch: Launch, after_seq: int) -> RayTrainer | None:
        """The run's actor, if the cluster still has it."""
        if not self.connected:
            return None
        loop = asyncio.get_running_loop()
        try:
            actor = await loop.run_in_executor(None, lambda: _ray().get_actor(actor_name(launch.run_id), NAMESPACE))
        except ValueError:
            return None
        return RayTrainer(launch.run_id, actor, after_seq)

    def forget(self, run_id: str) -> None:
        """Nothing on this host to remove: scratch space lives on the nodes, with their actors."""

    async def probe(self) -> dict[str, Any]:
        """The device a trainer opens on a node of the cluster (a task that asks for no CPU, so a busy cluster
        still answers), and how many nodes are alive."""
        if not self.connected and not await self.connect():
            return {"ok": False, "reason": self._problem}
        ray = _ray()
        task = ray.remote(ray_host.probe_device).options(num_cpus=0)
        try:
            report: dict[str, Any] = await asyncio.wait_for(task.remote(self.env, self.command), 180)
            nodes = await asyncio.get_running_loop().run_in_executor(None, ray.nodes)
        except Exception as exc:
            return {"ok": False, "reason": f"the Ray cluster did not run the device probe: {exc}"}
        alive = sum(1 for n in nodes if n.get("Alive"))
        if report.get("ok"):
            report["device"] = f"{report.get('device')} on {alive} Ray node(s)"
        return report

    async def close(self) -> None:
        """Disconnect from the cluster (the detached actors go on)."""
        if self.connected:
            await asyncio.get_running_loop().run_in_executor(None, _ray().shutdown)
            self.connected = False
