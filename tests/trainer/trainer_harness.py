"""Running the trainer as a real process and reading its protocol; a numpy forward pass built from the README."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from trainer_tinygrad.config import resolve_config

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
TERMINAL = {"finished": 0, "failed": 1, "cancelled": 3}


@dataclass
class Run:
    """A finished trainer process: its protocol events, exit code and log."""

    events: list[dict[str, Any]]
    returncode: int
    stderr: str
    out: Path

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    @property
    def terminal(self) -> dict[str, Any]:
        return self.events[-1]


def shared_run(base: Path, name: str, start: Callable[[Path], Run]) -> Run:
    """Start a run once per test session, even across xdist workers, which each have their own session fixtures.

    `xdist_group` does not keep a module on one worker with pytest 9.2 + xdist 3.8 (seen here), so the first worker
    to get here runs it under a lock and the others read its result.
    """
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:
        return start(base / name)
    root = base.parent.parent / f"shared-{uid}"  # base is <basetemp>/<name>N; basetemp is per worker
    root.mkdir(exist_ok=True)
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"{name}.json"
        if done.exists():
            fields = json.loads(done.read_text())
            return Run(**(fields | {"out": Path(fields["out"])}))
        run = start(root / name)
        done.write_text(json.dumps(asdict(run) | {"out": str(run.out)}))
        return run


def spec(**overrides: Any) -> dict[str, Any]:
    """A resolved config on Fashion-MNIST, as the server would pass it."""
    return resolve_config(overrides, "fashion-mnist")


def trainer_command(out: Path, data_dir: Path, resume: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "trainer_tinygrad", "train", "--config", "-", "--out", str(out)]
    cmd += ["--data-dir", str(data_dir), "--run-id", "test-run-0001"]
    return cmd + (["--resume", str(resume)] if resume else [])


def parse_events(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object with an `event` and an RFC 3339 UTC `time`."""
    events = [json.loads(line) for line in stdout.splitlines()]
    for e in events:
        assert isinstance(e, dict) and isinstance(e.get("event"), str), e
        assert RFC3339_UTC.match(e["time"]), e
    return events


def run_trainer(
    config: Any,
    out: Path,
    data_dir: Path,
    resume: Path | None = None,
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Run:
    """Run `python -m trainer_tinygrad train` to its end; checks the protocol's framing on the way.

    `env`: variables set on top of this process's environment (e.g. a step cache of the test's own)."""
    text = config if isinstance(config, str) else json.dumps(config)
    proc = subprocess.run(
        trainer_command(out, data_dir, resume),
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    events = parse_events(proc.stdout)
    run = Run(events=events, returncode=proc.returncode, stderr=proc.stderr, out=out)
    kinds = [e["event"] for e in events]
    assert sum(k in TERMINAL for k in kinds) == 1 and kinds[-1] in TERMINAL, (kinds, proc.stderr[-3000:])
    assert proc.returncode == (2 if run.terminal.get("code") == "invalid_config" else TERMINAL[kinds[-1]])
    return run


def numpy_logits(arrays: dict[str, np.ndarray], architecture: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """The forward pass exactly as the README's Models section describes it, in float64 numpy."""
    x = images.astype(np.float32) / 255.0
    x = x.astype(np.float64)
    for layer in architecture["layers"]:
        op = layer["op"]
        if op == "flatten":
            x = x.reshape(len(x), -1)
        elif op == "relu":
            x = np.maximum(x, 0.0)
        elif op == "linear":
            x = x @ arrays[layer["weight"]].T + arrays[layer["bias"]]
        elif op == "conv2d":
            w, p, s = arrays[layer["weight"]], layer["padding"], layer["stride"]
            xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            windows = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::s, ::s]
            x = np.einsum("nchwij,ocij->nohw", windows, w) + arrays[layer["bias"]][None, :, None, None]
        elif op == "batchnorm":
            mean, var = arrays[layer["running_mean"]], arrays[layer["running_var"]]
            scale = arrays[layer["weight"]] / np.sqrt(var.astype(np.float64) + layer["eps"])
            x = (x - mean[None, :, None, None]) * scale[None, :, None, None] + arrays[layer["bias"]][
                None, :, None, None
            ]
        elif op == "max_pool2d":
            n, c, h, w_ = x.shape
            x = x[:, :, : h // 2 * 2, : w_ // 2 * 2].reshape(n, c, h // 2, 2, w_ // 2, 2).max(axis=(3, 5))
        else:
            raise AssertionError(f"unknown op {op}")
    return x


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean softmax cross-entropy and accuracy."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels.astype(np.int64)].mean()
    return float(loss), float((logits.argmax(axis=1) == labels).mean())
