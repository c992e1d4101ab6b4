"""A short real run on the real Fashion-MNIST, read through the process protocol, then its checkpoints and a resume."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from trainer_harness import Run, cross_entropy, numpy_logits, run_trainer, shared_run, spec
from trainer_tinygrad.config import config_hash
from trainer_tinygrad.datasets import DatasetCache, load_dataset

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trainer-fashion-run")]

# The whole test set (10,000 images): on 1,000 the evaluation loss of the last checkpoints is within noise.
CONFIG = spec(steps=300, checkpoint_every=75, log_every=25, eval_samples=None)


@pytest.fixture(scope="session")
def run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("run")
    result = shared_run(base, "fashion-run", lambda folder: run_trainer(CONFIG, folder / "out", data_dir))
    assert result.terminal["event"] == "finished", result.stderr[-3000:]
    return result


def checkpoint_arrays(event: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safetensors.safe_open(event["path"], framework="np") as f:
        meta = f.metadata()
    return safetensors.numpy.load_file(event["path"]), meta


def test_run_speaks_the_protocol(run: Run) -> None:
    started = run.events[0]
    assert started["event"] == "started"
    assert started["model"] == "mlp" and started["dataset"] == "fashion-mnist"
    assert started["total_steps"] == 300 and started["start_step"] == 0
    assert started["parameters"] == 784 * 128 + 128 + 128 * 10 + 10
    assert started["device"] and started["tinygrad_version"] == "0.14.0"
    assert started["provenance"]["name"] == "fashion-mnist"
    assert [m["step"] for m in run.of("metric")] == list(range(25, 301, 25))
    assert [c["step"] for c in run.of("checkpoint")] == [75, 150, 225, 300]
    assert run.terminal == {"event": "finished", "step": 300, "time": run.terminal["time"]}
    for m in run.of("metric"):
        assert 0 <= m["accuracy"] <= 1 and m["loss"] > 0 and m["samples_per_second"] > 0
        assert m["learning_rate"] == 1e-3 and m["epoch"] == pytest.approx(m["step"] * 128 / 60_000)


def test_eval_loss_falls_over_every_checkpoint(run: Run) -> None:
    losses = [c["eval_loss"] for c in run.of("checkpoint")]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert run.of("checkpoint")[-1]["eval_accuracy"] > 0.7
    assert all(c["eval_samples"] == 10_000 for c in run.of("checkpoint"))


def test_checkpoints_are_whole_files_that_open_with_safetensors(run: Run) -> None:
    files = sorted(p.name for p in run.out.iterdir())
    assert files == [c["name"] for c in run.of("checkpoint")], "no temporary or extra files"
    payload_hashes = {f["name"]: f["payload_sha256"] for f in run.events[0]["provenance"]["files"]}
    for event in run.of("checkpoint"):
        data = Path(event["path"]).read_bytes()
        assert event["path"] == str(run.out.resolve() / event["name"])
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (event["sha256"], event["bytes"])
        arrays, meta = checkpoint_arrays(event)
        assert meta["format"] == "trainer-tinygrad/1" and meta["step"] == str(event["step"])
        assert (meta["model"], meta["dataset"], meta["run_id"]) == ("mlp", "fashion-mnist", "test-run-0001")
        assert json.loads(meta["config"]) == CONFIG and meta["config_hash"] == config_hash(CONFIG)
        assert json.loads(meta["dataset_sha256"]) == payload_hashes
        assert meta["tinygrad_version"] == "0.14.0"
        assert arrays["model.l1.weight"].shape == (128, 784) and arrays["model.l2.bias"].shape == (10,)
        assert all(a.dtype == np.float32 for a in arrays.values())
        # Adam's whole state, so a resume continues exactly.
        assert {"optim.b1_t", "optim.b2_t", "optim.m.l1.weight", "optim.v.l2.bias"} <= set(arrays)
        assert arrays["optim.b1_t"][0] == pytest.approx(0.9 ** event["step"], rel=1e-4)


def test_checkpoint_reloads_into_the_model_with_the_same_eval_loss(run: Run, data_dir: Path) -> None:
    from trainer_tinygrad.checkpoints import read, restore
    from trainer_tinygrad.models import build_model
    from trainer_tinygrad.steps import Evaluator

    data = load_dataset("fashion-mnist", DatasetCache(data_dir))
    event = run.of("checkpoint")[1]
    arrays, _ = read(Path(event["path"]))
    model = build_model("mlp", (1, 28, 28), 10)
    restore(model, None, arrays)
    result = Evaluator(model, data.x_test, data.y_test)()
    assert (result.loss, result.accuracy, result.samples) == (event["eval_loss"], event["eval_accuracy"], 10_000)


def test_numpy_forward_from_the_checkpoint_alone_gives_the_eval_loss(run: Run, data_dir: Path) -> None:
    data = load_dataset("fashion-mnist", DatasetCache(data_dir))
    event = run.of("checkpoint")[-1]
    arrays, meta = checkpoint_arrays(event)
    logits = numpy_logits(arrays, json.loads(meta["architecture"]), data.x_test)
    loss, accuracy = cross_entropy(logits, data.y_test)
    assert loss == pytest.approx(event["eval_loss"], abs=1e-5)
    assert accuracy == pytest.approx(event["eval_accuracy"], abs=0.0011)  # a near-tie may flip one image


def test_resume_carries_on_numbering_and_matches_the_uninterrupted_run(
    run: Run, data_dir: Path, tmp_path: Path
) -> None:
    at_150 = run.of("checkpoint")[1]
    resumed = run_trainer(CONFIG, tmp_path / "resumed", data_dir, resume=Path(at_150["path"]))
    assert resumed.terminal["event"] == "finished", resumed.stderr[-3000:]
    assert resumed.events[0]["start_step"] == 150 and resumed.events[0]["total_steps"] == 300
    assert [m["step"] for m in resumed.of("metric")] == list(range(175, 301, 25))
    assert [c["step"] for c in resumed.of("checkpoint")] == [225, 300]
    losses = [at_150["eval_loss"]] + [c["eval_loss"] for c in resumed.of("checkpoint")]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    # Same batches (seeded by step) and the whole optimizer state: bit-identical to never having stopped.
    for straight, again in zip(run.of("checkpoint")[2:], resumed.of("checkpoint"), strict=True):
        a, b = checkpoint_arrays(straight)[0], checkpoint_arrays(again)[0]
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        assert straight["eval_loss"] == again["eval_loss"]
