"""The local executor gives its trainers the device its probe found, as DEV, where the server's environment has none.

The trainer command here is a small program speaking the protocol's two commands: `device` answers as the probe
expects, `train` writes the DEV it was started with into its run folder and finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from reference_server.executors import Launch
from reference_server.executors.local import LocalExecutor

TRAINER = r"""
import json, os, sys
if sys.argv[1] == "device":
    print(json.dumps({"event": "device", "ok": True, "device": os.environ["ANSWER"], "tinygrad_version": "0"}))
    sys.exit(0 if os.environ["ANSWER"] != "-" else 1)
out = sys.argv[sys.argv.index("--out") + 1]
with open(os.path.join(out, "dev.json"), "w") as f:
    json.dump(os.environ.get("DEV"), f)
print(json.dumps({"event": "finished", "step": 0}))
"""


def started_with(tmp_path: Path, env: dict[str, str], *, probe: bool = True) -> tuple[str | None, dict[str, object]]:
    """Probe (unless not), start one run, wait for it; the DEV its trainer saw, and the probe's answer."""

    async def go() -> tuple[str | None, dict[str, object]]:
        executor = LocalExecutor(tmp_path / "work", None, env=env, command=[sys.executable, "-c", TRAINER])
        answer = await executor.probe() if probe else {}
        trainer = await executor.start(Launch("run-1", {"steps": 1}))
        assert await trainer.wait() == 0, trainer.log_text()
        return json.loads((tmp_path / "work" / "run-1" / "dev.json").read_text()), answer

    return asyncio.run(go())


def environment(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DEV"} | extra


def test_without_dev_the_trainers_get_the_probed_device(tmp_path: Path) -> None:
    dev, answer = started_with(tmp_path, environment(ANSWER="CPU"))
    assert answer["ok"] is True
    assert dev == "CPU"


def test_a_dev_the_operator_set_is_kept(tmp_path: Path) -> None:
    dev, _ = started_with(tmp_path, environment(ANSWER="CPU", DEV="CUDA"))
    assert dev == "CUDA"


@pytest.mark.parametrize("answer", ["-", "CPU GPU", ""])
def test_a_failed_probe_or_an_odd_device_name_sets_nothing(tmp_path: Path, answer: str) -> None:
    dev, _ = started_with(tmp_path, environment(ANSWER=answer))
    assert dev is None


def test_before_any_probe_the_environment_is_passed_as_it_is(tmp_path: Path) -> None:
    dev, _ = started_with(tmp_path, environment(ANSWER="CPU"), probe=False)
    assert dev is None
