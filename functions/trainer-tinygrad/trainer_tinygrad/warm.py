"""`python -m trainer_tinygrad.warm`: compile the default runs' steps into the step cache (`make setup` runs it).

So that even the first run of each default model starts without compiling. Idempotent and quick: a step already in
the cache is loaded, not compiled (a few seconds in all); a cold cache takes ~5 s (mlp) and ~15 s (convnet) here.
Needs no dataset: only the input shape matters (28x28 grey: MNIST and Fashion-MNIST share their steps).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from trainer_tinygrad import collector, device_programs
from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.steps import EVAL_BATCH, Evaluator, TrainStep, prepare
from trainer_tinygrad.train import build_optimizer, initial_model

log = logging.getLogger("trainer_tinygrad.warm")

SHAPE, CLASSES = (1, 28, 28), 10


def prepared(model_name: str) -> tuple[TrainStep, dict[str, object]]:
    """The default config's training step for `model_name`, with its full-test-set evaluation loaded from the step
    cache or compiled into it; and what `prepare` did."""
    config = resolve_config({"model": model_name}, "fashion-mnist")
    model = initial_model(config, SHAPE, CLASSES)
    optimizer = build_optimizer(config, model)
    step = TrainStep(model, optimizer, int(config["batch_size"]), SHAPE)
    evaluator = Evaluator(model, np.zeros((EVAL_BATCH, *SHAPE), np.uint8), np.zeros(EVAL_BATCH, np.uint8))
    return step, prepare(step, evaluator, config, CLASSES)


def warm(model_name: str) -> dict[str, object]:
    """Load or compile the default config's training step and full-test-set evaluation for `model_name`."""
    return prepared(model_name)[1]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m trainer_tinygrad.warm", description=__doc__)
    parser.add_argument("--model", action="append", choices=["mlp", "convnet"], help="default: both")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s: %(message)s")
    collector.set_young_threshold()  # compiling builds tinygrad graphs by the hundred thousand objects
    device_programs.install()
    for name in args.model or ["mlp", "convnet"]:
        began = time.perf_counter()
        result = warm(name)
        state = "already cached" if result["hit"] else "compiled and cached"
        log.info("%s: %s in %.1f s (%s)", name, state, time.perf_counter() - began, result["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
