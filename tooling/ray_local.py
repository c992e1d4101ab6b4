"""A local Ray cluster of real nodes, started with `ray start` and stopped by the pids of its own processes.

Each node is a `ray start` with its own `--temp-dir`, so every process of a node (GCS, raylet, agents, workers, and
the trainers its actors start) is found again as the raylet's process tree or by that folder in its command line;
stopping or "losing" a node kills exactly those processes and nothing else on the machine (`ray stop` would kill
every Ray on the host).

Ray advertises the address its nodes reach each other on; on a host with a network interface it turns
`127.0.0.1` into that interface's address. To keep every Ray process on loopback, run the cluster (and everything
that talks to it) in a network namespace whose only interface is `lo`: `scripts/loopback-only CMD` does that, and
`on_loopback_only()` tells whether we are in one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Node failure noticed within about a second and a half instead of Ray's default of tens of seconds.
HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def on_loopback_only() -> bool:
    """True in a network namespace whose only interface is loopback (see scripts/loopback-only)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (proc / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                tree.setdefault(ppid, []).append(int(proc.name))
    return tree


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


@dataclass
class RayNode:
    """One `ray start` of the cluster."""

    temp_dir: Path
    cpus: float
    head: bool

    def pids(self) -> list[int]:
        """Every live process of this node: those naming its temp dir, and all their descendants."""
        roots = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and str(self.temp_dir) in _cmdline(int(p.name))
        ]
        tree, found, todo = _children(), set(), list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(tree.get(pid, []))
        return sorted(found)

    def commands(self) -> dict[int, str]:
        """Every live process of this node, with its command line (Ray's workers show their actor's class in it)."""
        return {pid: _cmdline(pid) for pid in self.pids()}

    def node_id(self) -> str | None:
        """Ray's id of this node (from its raylet's command line), once it runs."""
        for pid in self.pids():
            words = _cmdline(pid).split()
            if words and words[0].endswith("raylet/raylet"):
                for word in words:
                    if word.startswith("--node_id="):
                        return word.removeprefix("--node_id=")
        return None

    def kill(self) -> list[int]:
        """SIGKILL every process of the node at once (what losing the machine looks like to the cluster).

        Every one is stopped (SIGSTOP) before any is killed: killed one by one, a process of the node could see
        another die and report it before its own turn (an actor telling the server that its trainer exited -9,
        which fails the run instead of losing the node). pids wrap around (32768 here), so no kill order by pid
        would do."""
        pids = self.pids()
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        return pids


@dataclass
class LocalRayCluster:
    """A head and worker nodes on this host, on loopback."""

    port: int
    env: dict[str, str]
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The head's GCS address, as `--ray-address` takes it."""
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, node_cpus: list[float], env: dict[str, str] | None = None) -> LocalRayCluster:
        """A head with node_cpus[0] CPUs and one more node per further entry."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | HEALTH_CHECKS | (env or {})
        cluster = cls(port=free_port(), env=base)
        try:
            for i, cpus in enumerate(node_cpus):
                cluster.add_node(cpus, head=i == 0)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_node(self, cpus: float, head: bool = False) -> RayNode:
        """`ray start` one more node (the head when `head`), bound to 127.0.0.1."""
        node = RayNode(Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")), cpus, head)
        argv = [_ray_cli(), "start", f"--num-cpus={cpus}", "--object-store-memory=100000000", "--disable-usage-stats"]
        argv += [f"--temp-dir={node.temp_dir}"]
        if head:
            argv += ["--head", f"--port={self.port}", "--include-dashboard=false", "--node-ip-address=127.0.0.1"]
        else:
            argv += [f"--address={self.address}"]
        self.nodes.append(node)
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"`ray start` failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return node

    def replace(self, node: RayNode) -> RayNode:
        """Kill a worker node (if it still runs) and `ray start` a fresh one with the same CPUs in its place.

        The new node's `ray start` takes a few seconds, longer than the cluster takes to notice the old one gone
        (HEALTH_CHECKS), so nothing is placed on the old node once this returns.
        """
        if node.head:
            raise ValueError("the head holds the cluster: replacing it is a new cluster")
        node.kill()
        self.nodes.remove(node)
        shutil.rmtree(node.temp_dir, ignore_errors=True)
        return self.add_node(node.cpus)

    def stop(self) -> None:
        """Kill every process of every node, head last, and remove their temp dirs."""
        for node in reversed(self.nodes):
            node.kill()
        deadline = time.monotonic() + 10
        while any(node.pids() for node in self.nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        self.nodes.clear()
