"""Seeds make runs repeatable; a zero learning rate changes nothing; SIGTERM stops cleanly between steps."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from trainer_harness import parse_events, run_trainer, spec, trainer_command

pytestmark = pytest.mark.slow

SHORT = {"steps": 20, "log_every": 5, "checkpoint_every": 20, "eval_samples": 100}


def test_same_seed_gives_identical_losses_and_another_seed_differs(data_dir: Path, tmp_path: Path) -> None:
    runs = [run_trainer(spec(**SHORT, seed=s), tmp_path / f"run{i}", data_dir) for i, s in enumerate((7, 7, 8))]
    losses = [[m["loss"] for m in r.of("metric")] for r in runs]
    assert len(losses[0]) == 4
    assert losses[0] == losses[1]
    assert losses[2][0] != losses[0][0] and losses[2] != losses[0]
    assert runs[0].of("checkpoint")[0]["eval_loss"] == runs[1].of("checkpoint")[0]["eval_loss"]


def test_learning_rate_zero_leaves_the_weights_as_initialised(data_dir: Path, tmp_path: Path) -> None:
    from trainer_tinygrad.models import state_tensors
    from trainer_tinygrad.train import initial_model

    config = spec(**SHORT, learning_rate=0.0, seed=3)
    run = run_trainer(config, tmp_path / "out", data_dir)
    arrays = safetensors.numpy.load_file(run.of("checkpoint")[0]["path"])
    initial = {f"model.{k}": v.numpy() for k, v in state_tensors(initial_model(config, (1, 28, 28), 10)).items()}
    assert initial.keys() == {k for k in arrays if k.startswith("model.")}
    for name, value in initial.items():
        assert np.array_equal(arrays[name], value), name
    # The steps did run: gradients reached Adam's moments, only the zero rate kept them from the weights.
    assert np.abs(arrays["optim.m.l1.weight"]).max() > 0


def test_sigterm_finishes_the_step_and_reports_cancelled(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = spec(steps=1_000_000, log_every=10, checkpoint_every=40, eval_samples=100)
    proc = subprocess.Popen(
        trainer_command(out, data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(config))
    proc.stdin.close()
    lines = []
    for line in proc.stdout:  # stop it once it has written a checkpoint and is training again
        lines.append(line)
        if json.loads(line)["event"] == "metric" and json.loads(line)["step"] == 50:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=60) == 3, proc.stderr.read() if proc.stderr else ""
    events = parse_events("".join(lines))
    assert events[-1]["event"] == "cancelled" and [e["event"] for e in events].count("cancelled") == 1
    assert 50 <= events[-1]["step"] < 1_000_000
    checkpoints = [e for e in events if e["event"] == "checkpoint"]
    assert sorted(p.name for p in out.iterdir()) == [c["name"] for c in checkpoints], "no partial or .tmp files"
    for c in checkpoints:
        assert safetensors.numpy.load_file(c["path"])["model.l1.weight"].shape == (128, 784)
