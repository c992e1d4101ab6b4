"""A scripted trainer: a test double that speaks the training function's protocol, for tests whose subject is the
server (its API, streams, evidence, recovery, limits, pages), not training.

    python tests/scripted_trainer.py train --config FILE|- --out DIR [--data-dir DIR] [--resume CKPT] [--run-id ID]
    python tests/scripted_trainer.py device

It is what `python -m trainer_tinygrad` is on the wire (see functions/trainer-tinygrad/README.md): `started` with the
real provenance record of the dataset bytes in the cache (read through trainer_tinygrad.datasets), then `metric`
lines at multiples of `log_every`, real safetensors checkpoints (small model-shaped arrays, the same metadata keys)
at multiples of `checkpoint_every`, and `finished`; SIGTERM stops it after the current step (`cancelled`, exit 3);
`--resume` continues after the checkpoint's step. What it does not do is learn: its losses are a falling curve drawn
from the config's seed, so no test that uses it may claim anything about training. It imports no tinygrad, so it
starts in a fraction of a second instead of seconds.

Environment: SCRIPTED_STEPS_PER_S (default 400) paces the steps; SCRIPTED_LOAD_S (default 0.3) is the time before
`started` (a real trainer loads data and compiles for a few seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from trainer_tinygrad import collector
from trainer_tinygrad.protocol import EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, EXIT_INVALID_CONFIG, StopRequest

if TYPE_CHECKING:
    import numpy as np


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def emit(out: TextIO, event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, **fields, "time": now()}) + "\n")
    out.flush()


#: The mlp's tensors (784-128-10): checkpoints the size of a real one, with Adam's m and v beside the weights.
SHAPES = {"l1.weight": (128, 784), "l1.bias": (128,), "l2.weight": (10, 128), "l2.bias": (10,)}


def write_checkpoint(path: Path, step: int, config: dict[str, Any], run_id: str, rng: np.random.Generator) -> str:
    """A safetensors checkpoint in the real layout (model., optim.m., optim.v.; about 1.2 MB); its sha256."""
    import numpy as np
    import safetensors.numpy

    arrays = {}
    for name, shape in SHAPES.items():
        for prefix in ("model.", "optim.m.", "optim.v."):
            arrays[prefix + name] = rng.standard_normal(shape).astype(np.float32)
    meta = {"format": "trainer-tinygrad/1", "step": str(step), "model": str(config["model"]),
            "dataset": str(config["dataset"]), "run_id": run_id, "scripted": "true"}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    safetensors.numpy.save_file(arrays, str(tmp), metadata=meta)
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(args: argparse.Namespace, out: TextIO, stop: StopRequest) -> int:
    # Imported here, not at the top: every server a test starts asks this program `device` once, and that answer
    # needs none of them (0.25 s of imports a probe, ~35 probes a `make test`).
    import numpy as np
    import safetensors
    from trainer_tinygrad.config import ConfigError, read_config
    from trainer_tinygrad.datasets import DatasetCache
    from trainer_tinygrad.datasets.dataset import build_provenance

    try:
        config = read_config(args.config)
    except ConfigError as e:
        emit(out, "failed", code=e.code, reason=str(e))
        return EXIT_INVALID_CONFIG
    cache = DatasetCache(args.data_dir)
    status = cache.status(config["dataset"])
    if not status.verified:
        emit(out, "failed", code="dataset_not_available", reason=f"{config['dataset']} is not verified in the cache")
        return EXIT_FAILED
    provenance = build_provenance(cache.manifest.dataset(config["dataset"]), cache.manifest, status.files)
    time.sleep(float(os.environ.get("SCRIPTED_LOAD_S", "0.3")))
    start = 0
    if args.resume is not None:
        meta = safetensors.safe_open(str(args.resume), "numpy").metadata()
        if meta.get("model") != config["model"] or meta.get("dataset") != config["dataset"]:
            emit(out, "failed", code="invalid_checkpoint", reason=f"{args.resume.name} is not this run's checkpoint")
            return EXIT_FAILED
        start = int(meta["step"])
    total, seed = int(config["steps"]), int(config["seed"])
    emit(out, "started", device="SCRIPTED", tinygrad_version="scripted", model=config["model"],
         dataset=config["dataset"], total_steps=total, start_step=start, parameters=6370, provenance=provenance,
         run_id=args.run_id, batch_size=config["batch_size"], eval_samples=config.get("eval_samples") or 10000,
         kernel_cache="none", convolution_kernels=None if config["model"] == "mlp" else "scripted")  # fmt: skip
    pace = 1.0 / float(os.environ.get("SCRIPTED_STEPS_PER_S", "400"))
    step, window, began = start, start, time.perf_counter()
    while step < total and not stop.is_set():
        time.sleep(pace)
        step += 1
        rng = np.random.default_rng((seed, step))
        loss = 2.3 * math.exp(-3.0 * step / total) + 0.05 + 0.02 * float(rng.random())
        if step % int(config["log_every"]) == 0 or step == total:
            elapsed = max(time.perf_counter() - began, 1e-9)
            emit(out, "metric", step=step, epoch=step * config["batch_size"] / 60000, loss=loss,
                 accuracy=min(1.0, 0.1 + 0.8 * (1 - math.exp(-3.0 * step / total))),
                 learning_rate=float(config["learning_rate"]),
                 samples_per_second=(step - window) * config["batch_size"] / elapsed)  # fmt: skip
            window, began = step, time.perf_counter()
        if step % int(config["checkpoint_every"]) == 0 or step == total:
            name = f"step-{step:06d}.safetensors"
            path = args.out / name
            sha = write_checkpoint(path, step, config, args.run_id, rng)
            emit(out, "checkpoint", step=step, eval_loss=loss * 1.1, eval_accuracy=min(1.0, 0.85 * step / total),
                 eval_samples=config.get("eval_samples") or 10000, name=name, path=str(path.resolve()), sha256=sha,
                 bytes=path.stat().st_size)  # fmt: skip
    if step < total:
        emit(out, "cancelled", step=step)
        return EXIT_CANCELLED
    emit(out, "finished", step=step)
    return EXIT_FINISHED


def main() -> int:
    stop = StopRequest()  # a flag, not a threading.Event: see StopRequest
    signal.signal(signal.SIGTERM, lambda *_: stop.request())
    signal.signal(signal.SIGINT, lambda *_: stop.request())
    collector.set_young_threshold()  # as the real trainer does
    parser = argparse.ArgumentParser(prog="scripted_trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train")
    run.add_argument("--config", required=True)
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--data-dir", type=Path)
    run.add_argument("--resume", type=Path)
    run.add_argument("--run-id", default="scripted-run")
    commands.add_parser("device")
    args = parser.parse_args()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    if args.command == "device":
        emit(out, "device", ok=True, device="SCRIPTED", tinygrad_version="scripted")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    return train(args, out, stop)


if __name__ == "__main__":
    sys.exit(main())
