"""Run configuration: the one place where defaults live.

The server resolves a request with it (so a client sees the full config at once) and the training process
reads the resolved config back; both agree because neither has defaults of its own. No tinygrad here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

#: Preference order when a request names no dataset: the first one verified in the cache wins.
DATASET_PREFERENCE = ("mnist", "fashion-mnist", "cifar10")
#: Training-split sizes, for turning `epochs` into steps.
TRAIN_SIZES = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000}
MODELS = ("mlp", "convnet")
OPTIMIZERS = ("adam", "sgd")

DEFAULTS: dict[str, Any] = {
    "model": "mlp",
    # 1500 steps of 128 is 3.2 epochs: enough for the MLP to pass 85% on Fashion-MNIST, and ~10 s on 2 CPU cores.
    "steps": 1500,
    "batch_size": 128,
    "optimizer": "adam",
    "seed": 0,
    # Every 10 steps is >10 metric events a second at CPU speed: the SSE contract asks for 10 in 10 s.
    "log_every": 10,
    "eval_samples": None,
}
LEARNING_RATES = {"adam": 1e-3, "sgd": 1e-2}
SGD_MOMENTUM = 0.9
#: Checkpoints per run when `checkpoint_every` is not given (the contract asks for at least 3).
DEFAULT_CHECKPOINTS = 5

#: Request fields that are not part of the training configuration.
_NOT_CONFIG = frozenset({"idempotency_key"})


def resolve_config(request: Mapping[str, Any], default_dataset: str) -> dict[str, Any]:
    """Fill every default into a (schema-validated) run request and return the full configuration.

    `epochs` is turned into `steps` (rounded up) and kept for the record; `checkpoint_every` defaults to a fifth of
    the run, so a default run writes five checkpoints.
    """
    given = {k: v for k, v in request.items() if k not in _NOT_CONFIG}
    config: dict[str, Any] = {**DEFAULTS, "dataset": default_dataset, "epochs": None, **given}
    if given.get("epochs") is not None:
        config["steps"] = max(1, math.ceil(config["epochs"] * TRAIN_SIZES[config["dataset"]] / config["batch_size"]))
    config.setdefault("learning_rate", LEARNING_RATES[config["optimizer"]])
    if config["optimizer"] == "sgd":
        config.setdefault("momentum", SGD_MOMENTUM)
    else:
        config["momentum"] = None
    config.setdefault("checkpoint_every", max(1, config["steps"] // DEFAULT_CHECKPOINTS))
    return config


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved config: names a config in checkpoint metadata."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
