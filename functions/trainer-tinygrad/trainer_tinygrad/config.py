"""Run configuration: the one place where defaults live, and the one check of a resolved config.

The server resolves a request with it (so a client sees the full config at once) and the training process reads
the resolved config back and checks it against the contract's schema (schemas/training-config.schema.json); both
agree because neither has defaults of its own. No tinygrad here.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer_tinygrad.schema import validator

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

#: Request fields that are not part of the training configuration (they are the server's run policy).
_NOT_CONFIG = frozenset({"idempotency_key", "auto_resume"})


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


class ConfigError(ValueError):
    """A config that cannot be read or is not a valid resolved config; the message names the field."""

    code = "invalid_config"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_config(source: str) -> dict[str, Any]:
    """Read a resolved config from a file, or from stdin when `source` is `-`, and check it."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the config {source}: {e}") from e
    try:
        config = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise ConfigError(f"the config is not JSON: {e}") from e
    return check_config(config)


def check_config(config: Any) -> dict[str, Any]:
    """Return `config` when schemas/training-config.schema.json accepts it; ConfigError naming the first field it
    refuses otherwise."""
    if not isinstance(config, dict):
        raise ConfigError("the config must be a JSON object (a resolved config)")
    errors = sorted(validator("training-config.schema.json").iter_errors(config), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.absolute_path)
        if first.validator == "required":
            raise ConfigError(f"the config lacks a field: {first.message}; pass a config from resolve_config")
        raise ConfigError(f"{field or 'the config'}: {first.message}")
    return config
