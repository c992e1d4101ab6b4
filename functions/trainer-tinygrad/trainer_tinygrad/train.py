"""The training loop: a compiled step over host-sampled batches, evaluation and checkpoints at fixed steps.

Batches are drawn on the host with a numpy Generator seeded by (seed, step) and written into the step's fixed input
buffers: faster here than gathering on the device, and a resumed run draws exactly the batches the uninterrupted run
would have drawn. Values are read back to the host only at log and checkpoint steps. The compiled steps themselves
(`steps`) come from the step cache when an earlier run of the same shapes left them there.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tinygrad import Device, Tensor, dtypes, nn
from tinygrad.helpers import CACHEDB
from tinygrad.nn.optim import Optimizer
from tinygrad.nn.state import get_state_dict

from trainer_tinygrad import checkpoints
from trainer_tinygrad.models import Model, architecture, build_model, convolution_kernels_of, initial_state
from trainer_tinygrad.protocol import EventWriter, tinygrad_version
from trainer_tinygrad.steps import Evaluator, TrainStep, prepare

log = logging.getLogger(__name__)


class TrainingDiverged(Exception):
    """The loss stopped being a finite number: nothing after it would mean anything."""

    code = "diverged"


class Data(Protocol):
    """What a run trains and evaluates on (uint8 NCHW images, uint8 labels): `datasets.Dataset` fits it."""

    @property
    def x_train(self) -> np.ndarray: ...
    @property
    def y_train(self) -> np.ndarray: ...
    @property
    def x_test(self) -> np.ndarray: ...
    @property
    def y_test(self) -> np.ndarray: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def provenance(self) -> Mapping[str, Any]: ...


def initial_model(config: Mapping[str, Any], shape: tuple[int, ...], classes: int) -> Model:
    """The model a run starts from: the layers built, their weights set from `initial_state` (the run's seed).

    Realized here, on its own, so "the initial weights" are one set of bits before any training kernel runs.
    """
    model = build_model(config["model"], shape, classes)
    state = get_state_dict(model)
    for name, value in initial_state(model, int(config["seed"])).items():
        state[name].replace(Tensor(value, device=state[name].device).contiguous())
    Tensor.realize(*state.values())
    return model


def build_optimizer(config: Mapping[str, Any], model: Model) -> Optimizer:
    """Adam or SGD with momentum over the model's state; BatchNorm statistics ride along as buffers to realize.

    Its fresh state is realized here, from host arrays of the values tinygrad gives it (moments 0, Adam's running
    powers of b1 and b2 1, the learning rate as float32): tinygrad's own lazy Tensor.zeros/ones would schedule a fill
    kernel per shape, ~170 ms of every run's start here against ~17 ms for copying the same bits in.
    """
    tensors = list(get_state_dict(model).values())
    optimizer: Optimizer
    if config["optimizer"] == "adam":
        optimizer = nn.optim.Adam(tensors, lr=config["learning_rate"], fused=False)
    else:
        momentum = config.get("momentum") or 0.0
        optimizer = nn.optim.SGD(tensors, lr=config["learning_rate"], momentum=momentum, fused=False)
    state = checkpoints.named_state(model, optimizer)
    # float32 only (tinygrad's default; OPTIM_DTYPE can change it): anything else is left for tinygrad to fill.
    fresh = {n: t for n, t in state.items() if n.startswith("optim.") and t.dtype == dtypes.float32}
    for name, tensor in fresh.items():
        value = np.ones if name in ("optim.b1_t", "optim.b2_t") else np.zeros
        tensor.replace(Tensor(value(tensor.shape, np.float32), device=tensor.device))
    if optimizer.lr.dtype == dtypes.float32:
        optimizer.lr.replace(Tensor(np.array([config["learning_rate"]], np.float32), device=optimizer.lr.device))
    Tensor.realize(*fresh.values(), optimizer.lr)
    return optimizer


def train(
    config: Mapping[str, Any],
    data: Data,
    out_dir: Path,
    events: EventWriter,
    should_stop: Callable[[], bool],
    *,
    run_id: str,
    resume: Path | None = None,
) -> str:
    """Run (or continue) the training `config` describes; returns the terminal event emitted.

    Emits `started`, `metric` and `checkpoint` events, then `finished`, or `cancelled` when `should_stop()` turns true
    (checked after each whole step, so no step or checkpoint is left half-done). Errors propagate to the caller.
    """
    total_steps, batch_size, seed = int(config["steps"]), int(config["batch_size"]), int(config["seed"])
    log_every, checkpoint_every = int(config["log_every"]), int(config["checkpoint_every"])
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    model = initial_model(config, shape, data.num_classes)
    optimizer = build_optimizer(config, model)
    start_step = 0
    if resume is not None:
        start_step = _restore(config, model, optimizer, resume)
    eval_samples = len(data.x_test) if config.get("eval_samples") is None else int(config["eval_samples"])
    evaluator = Evaluator(model, data.x_test[:eval_samples], data.y_test[:eval_samples])
    step = TrainStep(model, optimizer, batch_size, shape)
    arch = architecture(model, config["model"], shape, data.num_classes)
    dataset_sha256 = {f["name"]: f.get("payload_sha256") or f["sha256"] for f in data.provenance["files"]}
    compiled = prepare(step, evaluator, config, data.num_classes)
    events.emit(
        "started",
        device=Device.DEFAULT,
        tinygrad_version=tinygrad_version(),
        model=config["model"],
        dataset=config["dataset"],
        total_steps=total_steps,
        start_step=start_step,
        parameters=sum(math.prod(int(d) for d in p.shape) for p in optimizer.params),
        provenance=dict(data.provenance),
        run_id=run_id,
        batch_size=batch_size,
        eval_samples=eval_samples,
        kernel_cache=CACHEDB,
        step_cache=compiled["path"],
        step_cache_hit=compiled["hit"],
        convolution_kernels=convolution_kernels_of(model, Device.DEFAULT),
    )
    done = start_step
    window_start, window_step = time.perf_counter(), done
    while done < total_steps and not should_stop():
        n = done + 1
        index = np.random.default_rng((seed, n)).integers(0, len(data.x_train), batch_size)
        step.write(data.x_train[index], data.y_train[index])
        loss, accuracy = step()
        done = n
        if n % log_every == 0 or n == total_steps:
            loss_value, now = loss.item(), time.perf_counter()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"the training loss is {loss_value} at step {n}; try a lower learning_rate")
            events.emit(
                "metric",
                step=n,
                epoch=n * batch_size / len(data.x_train),
                loss=loss_value,
                accuracy=accuracy.item(),
                learning_rate=float(config["learning_rate"]),
                samples_per_second=(n - window_step) * batch_size / max(now - window_start, 1e-9),
            )
            window_start, window_step = now, n
        if n % checkpoint_every == 0 or n == total_steps:
            result = evaluator()
            if not math.isfinite(result.loss):
                raise TrainingDiverged(f"the evaluation loss is {result.loss} at step {n}; try a lower learning_rate")
            meta = checkpoints.metadata(
                step=n, config=config, run_id=run_id, dataset_sha256=dataset_sha256, architecture=arch
            )
            name = checkpoints.checkpoint_name(n)
            written = checkpoints.write(out_dir / name, checkpoints.named_state(model, optimizer), meta)
            events.emit(
                "checkpoint",
                step=n,
                eval_loss=result.loss,
                eval_accuracy=result.accuracy,
                eval_samples=result.samples,
                name=name,
                path=str(written.path),
                sha256=written.sha256,
                bytes=written.bytes,
            )
            window_start, window_step = time.perf_counter(), n  # evaluation time is not training throughput
    if done < total_steps:
        events.emit("cancelled", step=done)
        return "cancelled"
    events.emit("finished", step=done)
    return "finished"


def _restore(config: Mapping[str, Any], model: Model, optimizer: Optimizer, path: Path) -> int:
    arrays, meta = checkpoints.read(path)
    for key in ("model", "dataset"):
        if meta.get(key) != config[key]:
            raise checkpoints.CheckpointError(
                f"{path.name} is a {key} {meta.get(key)!r} checkpoint; the spec asks for {config[key]!r}"
            )
    checkpoints.restore(model, optimizer, arrays)
    log.info("resumed from %s at step %s", path, meta["step"])
    return int(meta["step"])
