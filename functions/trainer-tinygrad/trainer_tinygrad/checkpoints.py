"""Checkpoint files: safetensors with the model under `model.`, the optimizer under `optim.`, metadata in the header.

A checkpoint holds everything a resume needs to continue bit-for-bit (Adam's m, v and its b1^t, b2^t; SGD's
momentum), and opens with the plain `safetensors` library into numpy, so a verifier needs no tinygrad.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
from tinygrad import Tensor
from tinygrad.nn.optim import LAMB, LARS, Optimizer

from trainer_tinygrad import files
from trainer_tinygrad.clock import utc_now
from trainer_tinygrad.config import config_hash
from trainer_tinygrad.models import Model, state_tensors
from trainer_tinygrad.protocol import tinygrad_version

FORMAT = "trainer-tinygrad/1"


class CheckpointError(Exception):
    """A checkpoint that cannot be read, or does not fit the model and optimizer it is loaded into."""

    code = "invalid_checkpoint"


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint as written: where it is, and the hash and size of its bytes."""

    path: Path
    sha256: str
    bytes: int


def checkpoint_name(step: int) -> str:
    """`step-000300.safetensors`: sorts by step as text."""
    return f"step-{step:06d}.safetensors"


def named_state(model: Model, optimizer: Optimizer) -> dict[str, Tensor]:
    """Every tensor a checkpoint holds, by its name in the file."""
    model_state = state_tensors(model)
    names = {id(t): name for name, t in model_state.items()}
    state = {f"model.{name}": t for name, t in model_state.items()}
    params = [names[id(p)] for p in optimizer.params]
    if isinstance(optimizer, LAMB):
        state["optim.b1_t"], state["optim.b2_t"] = optimizer.b1_t, optimizer.b2_t
        for name, m, v in zip(params, optimizer.m, optimizer.v, strict=True):
            state[f"optim.m.{name}"], state[f"optim.v.{name}"] = m, v
    elif isinstance(optimizer, LARS):
        for name, b in zip(params, optimizer.b, strict=False):  # empty without momentum
            state[f"optim.momentum.{name}"] = b
    else:
        raise TypeError(f"no checkpoint layout for {type(optimizer).__name__}")
    return state


def metadata(
    *, step: int, config: Mapping[str, Any], run_id: str, dataset_sha256: Mapping[str, str], architecture: Any
) -> dict[str, str]:
    """The header metadata (all strings, as safetensors requires)."""
    return {
        "format": FORMAT,
        "step": str(step),
        "model": str(config["model"]),
        "dataset": str(config["dataset"]),
        "run_id": run_id,
        "config": json.dumps(dict(config), sort_keys=True),
        "config_hash": config_hash(config),
        "dataset_sha256": json.dumps(dict(dataset_sha256), sort_keys=True),
        "tinygrad_version": tinygrad_version(),
        "created_at": utc_now(),
        "architecture": json.dumps(architecture),
    }


def write(path: Path, tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> CheckpointFile:
    """Write a checkpoint atomically (a temp file in the same folder, fsync, rename, fsync the folder)."""
    arrays = {name: np.ascontiguousarray(t.numpy(), dtype=np.float32) for name, t in tensors.items()}
    data = safetensors.numpy.save(arrays, metadata=dict(meta))
    files.write_atomic(path, data)
    return CheckpointFile(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (numpy) and metadata of a checkpoint; refuses a file of another format."""
    try:
        arrays = safetensors.numpy.load_file(str(path))
        with safetensors.safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
    except (OSError, safetensors.SafetensorError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format {meta.get('format')!r})")
    return arrays, meta


def restore(model: Model, optimizer: Optimizer | None, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy a checkpoint's tensors into the model (and the optimizer, when given), in place.

    In place, so a TinyJit already captured over these buffers sees the restored values.
    """
    if optimizer is None:
        state = {f"model.{name}": t for name, t in state_tensors(model).items()}
        arrays = {k: v for k, v in arrays.items() if k.startswith("model.")}
    else:
        state = named_state(model, optimizer)
    if missing := sorted(set(state) - set(arrays)):
        raise CheckpointError(f"checkpoint lacks {', '.join(missing[:5])} (it is for another model or optimizer)")
    if extra := sorted(set(arrays) - set(state)):
        raise CheckpointError(f"checkpoint has {', '.join(extra[:5])}, which this model and optimizer do not")
    for name, t in state.items():
        if tuple(arrays[name].shape) != tuple(t.shape):
            raise CheckpointError(f"{name}: shape {arrays[name].shape} in the checkpoint, {t.shape} in the model")
    Tensor.realize(*[t.assign(Tensor(arrays[name].astype(np.float32), device=t.device)) for name, t in state.items()])
