"""The job spec: a resolved config (see `config.resolve_config`), read and checked before any training starts.

The checks mirror schemas/training-config.schema.json, so the process refuses what the server would refuse, with a
message that names the field. No tinygrad here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from trainer_tinygrad.config import MODELS, OPTIMIZERS, TRAIN_SIZES

_POSITIVE_INTS = ("steps", "batch_size", "log_every", "checkpoint_every")


class SpecError(ValueError):
    """A spec that cannot be read or is not a valid resolved config."""

    code = "invalid_spec"


def read_spec(source: str) -> dict[str, Any]:
    """Read a spec from a file, or from stdin when `source` is `-`, and check it."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read the spec {source}: {e}") from e
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"the spec is not JSON: {e}") from e
    return check_spec(spec)


def check_spec(spec: Any) -> dict[str, Any]:
    """Return the spec when it is a valid resolved config; raise `SpecError` naming the first bad field otherwise."""
    if not isinstance(spec, dict):
        raise SpecError("the spec must be a JSON object (a resolved config)")
    if missing := [
        k for k in ("dataset", "model", "optimizer", "seed", "learning_rate", *_POSITIVE_INTS) if k not in spec
    ]:
        raise SpecError(f"the spec lacks {', '.join(missing)}: pass a config from resolve_config")
    _one_of(spec, "dataset", tuple(TRAIN_SIZES))
    _one_of(spec, "model", MODELS)
    _one_of(spec, "optimizer", OPTIMIZERS)
    for key in _POSITIVE_INTS:
        _integer(spec, key, minimum=1)
    _integer(spec, "seed", minimum=0)
    _number(spec, "learning_rate")
    if spec.get("eval_samples") is not None:
        _integer(spec, "eval_samples", minimum=1)
    if spec.get("momentum") is not None:
        _number(spec, "momentum")
    if spec.get("epochs") is not None:
        _number(spec, "epochs")
    return spec


def _one_of(spec: dict[str, Any], key: str, allowed: tuple[str, ...]) -> None:
    if spec[key] not in allowed:
        raise SpecError(f"{key} is {spec[key]!r}; it must be one of {', '.join(allowed)}")


def _integer(spec: dict[str, Any], key: str, minimum: int) -> None:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{key} is {value!r}; it must be an integer >= {minimum}")


def _number(spec: dict[str, Any], key: str) -> None:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SpecError(f"{key} is {value!r}; it must be a finite number >= 0")
