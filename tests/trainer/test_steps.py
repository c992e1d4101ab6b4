"""Compiled steps: cached across runs without changing a bit, and fed in place without changing a value."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from trainer_harness import Run, run_trainer, shared_run, spec

pytestmark = pytest.mark.slow

SHORT = {"steps": 20, "log_every": 5, "checkpoint_every": 10, "eval_samples": 200, "seed": 5}
#: SHORT's first ten steps as a run of its own: its curve is the first three entries of SHORT's (metric 5, metric 10,
#: checkpoint 10): no schedule or draw in a run's first ten steps depends on how many follow.
FIRST_TEN = {**SHORT, "steps": 10}


def curve(events: list[dict[str, object]]) -> list[object]:
    """Every training and evaluation loss of a run, in order."""
    return [(e["event"], e.get("loss"), e.get("eval_loss")) for e in events if e["event"] in ("metric", "checkpoint")]


@pytest.fixture(scope="session")
def compiled_first(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """SHORT compiled from an empty step cache of its own (`<out>/../steps`), once per session: both tests below
    start from it, and a compile is most of a run's cost."""

    def start(folder: Path) -> Run:
        return run_trainer(spec(**SHORT), folder / "a", data_dir, env={"TRAINER_STEP_CACHE": str(folder / "steps")})

    return shared_run(tmp_path_factory.mktemp("steps"), "short-compiled", start)


def test_a_second_run_loads_its_steps_and_trains_bit_for_bit_like_the_first(
    compiled_first: Run, data_dir: Path, tmp_path: Path
) -> None:
    first, steps = compiled_first, compiled_first.out.parent / "steps"
    second = run_trainer(spec(**SHORT), tmp_path / "b", data_dir, env={"TRAINER_STEP_CACHE": str(steps)})
    # Op by op (tinygrad's debug mode), with the step cache switched off: no compiled step at all, the same curve.
    # (`first` is the run that compiled its steps without loading any.)
    unjitted = run_trainer(spec(**FIRST_TEN), tmp_path / "d", data_dir, env={"JIT": "0", "TRAINER_STEP_CACHE": "off"})
    assert first.events[0]["step_cache_hit"] is False and second.events[0]["step_cache_hit"] is True
    assert first.events[0]["step_cache"] == str(steps) and unjitted.events[0]["step_cache"] is None
    # The training step and the evaluation (beside them, with DEV=CPU, the device's own programs: device_programs.py)
    assert len(list(steps.glob("train-*.pkl"))) == len(list(steps.glob("eval-*.pkl"))) == 1
    assert curve(first.events) == curve(second.events)
    assert len(curve(first.events)) == 6
    assert curve(first.events)[:3] == curve(unjitted.events)


def test_a_cached_step_serves_any_learning_rate_and_an_unreadable_one_is_compiled_again(
    compiled_first: Run, data_dir: Path, tmp_path: Path
) -> None:
    first, steps = compiled_first, tmp_path / "steps"
    shutil.copytree(compiled_first.out.parent / "steps", steps)  # a copy: the other test reads the original
    env = {"TRAINER_STEP_CACHE": str(steps)}
    # The learning rate is an input of the cached step, not a constant inside it: another rate really applies.
    slow = run_trainer(spec(**SHORT, learning_rate=1e-5), tmp_path / "b", data_dir, env=env)
    assert slow.events[0]["step_cache_hit"] is True
    for pickled in steps.glob("*.pkl"):
        pickled.write_bytes(pickled.read_bytes()[:100])  # a truncated file, as a full disk could leave
    # Compiled afresh at 1e-5: the reference for the cached step's curve at that rate, too.
    fresh = run_trainer(spec(**SHORT, learning_rate=1e-5), tmp_path / "c", data_dir, env=env)
    assert fresh.terminal["event"] == "finished" and fresh.events[0]["step_cache_hit"] is False
    assert curve(slow.events) == curve(fresh.events)
    assert curve(slow.events) != curve(first.events)  # the other rate really applied


def test_batches_written_in_place_equal_the_preprocessed_images() -> None:
    from tinygrad import dtypes
    from trainer_tinygrad.models import preprocess
    from trainer_tinygrad.steps import Input

    images = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    x, y = Input((4, 1, 28, 28), dtypes.float32), Input((4,), dtypes.int32)
    x.write_images(images)
    y.write(np.array([1, 2, 3, 9], np.uint8))
    assert x.view is not None, "the CPU's buffers are host memory"
    expected = images.astype(np.float32) / 255.0
    assert np.array_equal(x.tensor.numpy().view(np.uint32), expected.view(np.uint32))
    assert np.array_equal(preprocess(images).view(np.uint32), expected.view(np.uint32))
    assert y.tensor.numpy().tolist() == [1, 2, 3, 9]


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_the_prepared_launch_list_computes_exactly_what_tinygrads_executor_does(model_name: str) -> None:
    from tinygrad import Tensor
    from trainer_tinygrad.warm import prepared

    # The default run's step, as a run gets it: from the step cache that `make setup` (and `make test`'s background
    # lane, before these tests) fills, or compiled here when that cache is cold.
    step, _ = prepared(model_name)
    batch = int(step.x.tensor.shape[0])
    rng = np.random.default_rng(1)
    batches = [(rng.integers(0, 256, (batch, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, batch)) for _ in range(3)]
    start = [t.numpy().copy() for t in step.state]

    def train(call: object) -> list[np.ndarray]:
        Tensor.realize(*(t.assign(Tensor(v, dtype=t.dtype)) for t, v in zip(step.state, start, strict=True)))
        for images, labels in batches:
            step.write(images, labels)
            call()  # type: ignore[operator]
        return [t.numpy().copy() for t in step.state]

    step.write(*batches[0])
    step()  # the first call checks the inputs and prepares the launch list
    assert step._launches is not None, "on the CPU every kernel is a prepared C call"
    listed, executed = train(step), train(step.via_tinygrad)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(listed, executed, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(listed, start, strict=True))  # it did train


def test_the_step_cache_keeps_the_most_recently_used_files(tmp_path: Path) -> None:
    import os

    from trainer_tinygrad import step_cache

    for age, name in enumerate(["e", "d", "c", "b", "a"]):
        (tmp_path / f"{name}.pkl").write_bytes(b"x")
        os.utime(tmp_path / f"{name}.pkl", (1000 - age, 1000 - age))
    (tmp_path / "notes.txt").write_text("not a step")
    step_cache.prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pkl", "d.pkl", "e.pkl", "notes.txt"]
