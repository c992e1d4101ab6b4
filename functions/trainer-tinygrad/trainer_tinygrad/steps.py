"""The compiled training step and evaluation: TinyJit over fixed input buffers, reused across runs.

Everything a step reads or writes besides its batch (weights, BatchNorm statistics, the optimizer's state and
learning rate) is passed to the JIT as an input, so a captured step holds no value of its own: it pickles, and a later
run of the same shapes loads it from the step cache instead of scheduling and compiling again (`step_cache`). After
its first call a step skips TinyJit's per-call check of its inputs (~35 us per input) and, on the CPU, tinygrad's
executor too (~15 us per kernel): the captured kernels are called as a prepared list of C calls (`launches`),
0.8 ms for an mlp step that took 1.8 ms through TinyJit (BENCHMARKS.md, Profile).

Batches are written straight into the input buffers' memory where the device shares it with the host (the CPU);
elsewhere they are copied in.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes
from tinygrad.device import Buffer
from tinygrad.helpers import JIT, Context
from tinygrad.nn.optim import Optimizer
from tinygrad.nn.state import get_state_dict

from trainer_tinygrad import checkpoints, convolution_kernels, kernel_opts, step_cache
from trainer_tinygrad.models import Model, preprocess
from trainer_tinygrad.protocol import tinygrad_version

log = logging.getLogger(__name__)

#: Images per evaluation batch: one compiled shape for every checkpoint; the last batch is padded and masked.
EVAL_BATCH = 1000


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy and accuracy over the first `samples` test images."""

    loss: float
    accuracy: float
    samples: int


class Input:
    """A realized input tensor and the fastest way to put host data into it."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.np_dtype = np.float32 if dtype == dtypes.float32 else np.int32
        # Copied in from the host: Tensor.zeros would schedule and lower a fill kernel (~30 ms for a batch).
        self.tensor = Tensor(np.zeros(shape, self.np_dtype), device=Device.DEFAULT).realize()
        buf = self.tensor.uop.base.buffer
        assert isinstance(buf, Buffer), "input buffers live on one device"
        self.buffer = buf.ensure_allocated()
        self.view: np.ndarray | None = None
        if self.buffer.device.split(":", maxsplit=1)[0] == "CPU":  # host memory: write in place, no copy
            memory = self.buffer.as_memoryview(force_zero_copy=True)
            self.view = np.frombuffer(memory, dtype=self.np_dtype).reshape(shape)

    def write(self, array: np.ndarray) -> None:
        """Overwrite the buffer's contents (no new tensor, so a captured TinyJit keeps reading this buffer)."""
        if self.view is not None:
            Device[self.buffer.device].synchronize()  # nothing may still read the previous batch
            self.view[...] = array
            return
        host = np.ascontiguousarray(array, dtype=self.np_dtype)
        self.buffer.copy_from(Buffer("PYTHON", self.buffer.size, self.buffer.dtype, opaque=host.data.cast("B")))

    def write_images(self, images: np.ndarray) -> None:
        """Preprocess uint8 images into the buffer (in place where it is host memory)."""
        if self.view is None:
            self.write(preprocess(images))
            return
        Device[self.buffer.device].synchronize()
        preprocess(images, out=self.view)


def state_inputs(model: Model, optimizer: Optimizer | None) -> list[Tensor]:
    """Every tensor a step reads besides its batch, each once: model state, optimizer state, learning rate."""
    tensors = list(get_state_dict(model).values())
    if optimizer is not None:
        tensors += [*checkpoints.named_state(model, optimizer).values(), optimizer.lr]
    unique = {id(t): t for t in tensors}
    if lazy := [t for t in unique.values() if not t.uop.is_realized]:
        Tensor.realize(*lazy)
    return list(unique.values())


#: One kernel on the CPU: its C function and the argument tuples to call it with (one per thread piece).
Launch = tuple[Any, list[tuple[ctypes.c_uint64, ...]]]


class Compiled:
    """A TinyJit over fixed inputs: captured in this process (two calls) or loaded from the step cache."""

    def __init__(self, fn: Callable[[], Any], batch: list[Tensor], state: list[Tensor]) -> None:
        self.batch, self.state = batch, state
        self.jit: Any = TinyJit(lambda *inputs: fn())
        self._buffers: list[Any] | None = None
        self._launches: list[Launch] | None = None

    def capture(self) -> None:
        """Run twice: TinyJit runs the first call as is and captures the second (both really execute)."""
        for _ in range(2):
            self.jit(*self.batch, self.state)

    def load(self, jit: Any) -> None:
        """Use a captured TinyJit from the step cache; its first call checks it fits these inputs."""
        self.jit, self._buffers, self._launches = jit, None, None

    def __call__(self) -> Any:
        if self._launches is not None:
            for function, calls in self._launches:
                for args in calls:
                    function(*args)
            return self.jit.captured.ret
        if self._buffers is None:
            if not JIT:  # tinygrad's JIT turned off (JIT=0, for debugging): the function runs op by op every time
                return self.jit(*self.batch, self.state)
            if self.jit.captured is None:
                raise RuntimeError("a step runs only once captured or loaded")
            result = self.jit(*self.batch, self.state)  # TinyJit's own path: checks shapes, dtypes and devices
            self._buffers = [t.uop.base for t in (*self.batch, *self.state)]
            self._launches = launches(self.jit.captured, self._buffers)
            return result
        return self.via_tinygrad()

    def via_tinygrad(self) -> Any:
        """One call through tinygrad's own executor (what DEBUG=2 and the profiler see)."""
        return self.jit.captured(self._buffers, {})


def launches(captured: Any, inputs: list[Any]) -> list[Launch] | None:
    """The captured kernels as (C function, argument tuples) for the CPU, or None where that does not apply.

    tinygrad's executor spends ~13 us of Python per kernel launch (resolving buffers, launch sizes, ctypes
    arguments): a third of an mlp step. On the CPU, where a kernel is a C function called synchronously on buffers
    that never move once allocated, the same calls can be prepared once; a kernel split into thread pieces is
    called once per piece, in order, as tinygrad does. Anything else (other devices, symbolic sizes, copies) keeps
    tinygrad's executor.
    """
    from tinygrad.engine.realize import get_runtime, resolve_params, unwrap_multi
    from tinygrad.runtime.ops_cpu import CPUProgram
    from tinygrad.uop.ops import Ops

    plan: list[Launch] = []
    for call in captured.linear.src:
        ast = call.src[0]
        if ast.op is not Ops.PROGRAM or (ast.arg.vars and any(v.expr not in ast.arg.runtimevars for v in ast.arg.vars)):
            return None
        resolved = resolve_params(call, tuple(inputs))
        per_device = list(unwrap_multi(call, [resolved[i] for i in ast.arg.globals]))
        if len(per_device) != 1:
            return None
        bufs = [b.ensure_allocated() for b in per_device[0][0]]
        device = bufs[0].device
        program = get_runtime(device, ast)
        if not isinstance(program, CPUProgram) or program.lvp:
            return None
        global_size, _ = ast.arg.launch_dims({})
        args = [int(b.get_buf(device).va_addr) for b in bufs] + [0 if v is None else int(v) for v in ast.arg.vals({})]
        core = program.runtimevars.get("core_id")
        calls = []
        for piece in range(int(global_size[0]) if core is not None else 1):
            if core is not None:
                args[core] = piece
            calls.append(tuple(ctypes.c_uint64(a) for a in args))
        plan.append((program.fxn, calls))
    return plan


class TrainStep(Compiled):
    """One optimizer step on the batch in `x`, `y`; returns the batch's loss and accuracy (lazy tensors)."""

    def __init__(self, model: Model, optimizer: Optimizer, batch_size: int, shape: tuple[int, ...]) -> None:
        self.x, self.y = Input((batch_size, *shape), dtypes.float32), Input((batch_size,), dtypes.int32)
        x, y = self.x.tensor, self.y.tensor

        def step() -> tuple[Tensor, Tensor]:
            with Context(TRAINING=1):  # around the forward too, or BatchNorm would use its running statistics
                optimizer.zero_grad()
                logits = model(x)
                loss = logits.sparse_categorical_crossentropy(y).backward()
                accuracy = (logits.argmax(-1) == y).float().mean()
                return loss.realize(accuracy, *optimizer.schedule_step()), accuracy

        super().__init__(step, [x, y], state_inputs(model, optimizer))

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Put a batch of uint8 images and their labels into the step's input buffers."""
        self.x.write_images(images)
        self.y.write(labels)


class Evaluator(Compiled):
    """Batched, JIT-compiled evaluation in inference mode (BatchNorm uses its running statistics)."""

    def __init__(self, model: Model, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels.astype(np.int32)
        self.batch_size = min(EVAL_BATCH, len(images))
        self.x = Input((self.batch_size, *images.shape[1:]), dtypes.float32)
        self.y = Input((self.batch_size,), dtypes.int32)
        x, y = self.x.tensor, self.y.tensor

        def forward() -> tuple[Tensor, Tensor]:
            logits = model(x)
            losses = logits.sparse_categorical_crossentropy(y, reduction="none")
            return losses.realize(), logits.argmax(-1).realize()

        super().__init__(forward, [x, y], state_inputs(model, None))

    def __call__(self) -> Evaluation:
        """Evaluate the model as it is now (capturing the kernels first if nothing did)."""
        if self.jit.captured is None and JIT:
            self.capture()
        total, correct, n = 0.0, 0, len(self.images)
        for start in range(0, n, self.batch_size):
            images, labels = self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            k = len(images)
            if k < self.batch_size:  # pad to the compiled shape; the padding is cut off below
                images = np.concatenate([images, np.zeros((self.batch_size - k, *images.shape[1:]), images.dtype)])
                labels = np.concatenate([labels, np.zeros(self.batch_size - k, labels.dtype)])
            self.x.write_images(images)
            self.y.write(labels)
            losses, predicted = super().__call__()
            total += float(losses.numpy()[:k].astype(np.float64).sum())
            correct += int((predicted.numpy()[:k] == labels[:k]).sum())
        return Evaluation(loss=total / n, accuracy=correct / n, samples=n)


def prepare(step: TrainStep, evaluator: Evaluator, config: Mapping[str, Any], classes: int) -> dict[str, Any]:
    """Load both compiled steps from the step cache, or capture (and save) the ones it lacks; returns what happened.

    A captured training step really trained twice: every weight, BatchNorm statistic and optimizer buffer is then put
    back bit for bit, so the run starts from exactly the state it was given.
    """
    began = time.perf_counter()
    device = Device.DEFAULT
    common = {
        "tinygrad": tinygrad_version(),
        "device": device,
        "model": config["model"],
        "input": list(step.x.tensor.shape[1:]),
        "classes": classes,
        "kernel_opts": kernel_opts.digest(),
        "conv_kernels": convolution_kernels.enabled(),
        "code": _code_digest(),
    }
    names = {
        "train": step_cache.key(
            kind="train",
            batch=int(step.x.tensor.shape[0]),
            optimizer=config["optimizer"],
            momentum=config.get("momentum"),
            **common,
        ),
        "eval": step_cache.key(kind="eval", batch=evaluator.batch_size, **common),
    }
    hits = {}
    for kind, compiled in (("train", step), ("eval", evaluator)):
        jit = step_cache.load(names[kind]) if JIT else None  # JIT=0: nothing is captured, nothing cached
        hits[kind] = jit is not None
        if jit is not None:
            compiled.load(jit)
    counts: dict[str, int] = {}
    if not all(hits.values()):
        saved = [(t, t.numpy().copy()) for t in step.state] if not hits["train"] else []
        with kernel_opts.applied(device) as counts:
            for kind, compiled in (("train", step), ("eval", evaluator)):
                if not hits[kind]:
                    compiled.capture()
        if saved:
            Tensor.realize(*(t.assign(Tensor(value, device=t.device, dtype=t.dtype)) for t, value in saved))
        for kind, compiled in (("train", step), ("eval", evaluator)):
            if not hits[kind] and compiled.jit.captured is not None:
                compiled.jit.captured.free_intermediates()  # pickle the kernels, not the activations
                step_cache.save(names[kind], compiled.jit)
    seconds = time.perf_counter() - began
    log.info("steps %s in %.1f s (kernels: %s)", "loaded" if all(hits.values()) else "compiled", seconds, counts)
    folder = step_cache.folder()
    return {"path": None if folder is None else str(folder), "hit": all(hits.values()), "seconds": seconds}


def _code_digest() -> str:
    """The source of what a step computes: a change to a model or a step invalidates every cached step."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("models.py", "convolution.py", "convolution_kernels.py", "steps.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]
