"""Evaluation speed of the training function itself (its `Evaluator`), run as a child process:

    python -m benchmarks.tinygrad_eval --model mlp --images 10000 --repeats 5 [--data-dir DIR]

Prints one JSON line: the first call (compiles the kernels) and each later call, in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.datasets import DatasetCache, load_dataset
from trainer_tinygrad.steps import Evaluator
from trainer_tinygrad.train import initial_model


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tinygrad_eval", description=__doc__)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    data = load_dataset("fashion-mnist", DatasetCache(args.data_dir))
    config = resolve_config({"model": args.model}, "fashion-mnist")
    model = initial_model(config, tuple(int(d) for d in data.x_train.shape[1:]), data.num_classes)
    evaluate = Evaluator(model, data.x_test[: args.images], data.y_test[: args.images])
    t = time.perf_counter()
    evaluate()
    first = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        evaluate()
        times.append(time.perf_counter() - t)
    print(json.dumps({"event": "eval_timing", "first_s": first, "times_s": times, "images": args.images}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
