"""`python -m trainer_tinygrad.tune`: BEAM-search the big kernels of the default steps and write `kernel_opts.json`.

A developer's tool, run once per tinygrad version or CPU family, and once per image shape (`--dataset cifar10`;
minutes: the convnet's largest kernels take one to three minutes each on one core). For every model and batch size
asked for, it builds the real training step and evaluation (`steps`), and compiles them with BEAM on: kernels whose
iteration space is at least `--min-size` points are searched, the result is timed at full size against tinygrad's own
heuristics, and the faster options are kept; smaller kernels keep the heuristics (searching them gains microseconds
and costs minutes). Runs read the table through `kernel_opts.applied()` and never search. Uses tinygrad's search
internals: pinned tinygrad only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from typing import Any

import numpy as np
from tinygrad import Device
from tinygrad.helpers import Context

from trainer_tinygrad import kernel_opts, step_cache
from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.datasets.manifest import Manifest
from trainer_tinygrad.protocol import tinygrad_version, utc_now
from trainer_tinygrad.steps import Evaluator, TrainStep
from trainer_tinygrad.train import build_optimizer, initial_model

log = logging.getLogger("trainer_tinygrad.tune")


def searcher(min_size: int, found: dict[str, Any]) -> Any:
    """A `beam_search` that searches big kernels only, keeps the faster of BEAM and the heuristics, records both."""
    from tinygrad.codegen.opt import search

    original = search.beam_search

    def choose(s: Any, rawbufs: Any, var_vals: Any, amt: int, *args: Any, **kwargs: Any) -> Any:
        size = math.prod(int(d) for d in s.full_shape)
        if size < min_size:
            return kernel_opts.heuristic(s)
        began = time.perf_counter()
        beamed = original(s, rawbufs, var_vals, amt, *args, **kwargs)
        plain = kernel_opts.heuristic(s.copy())
        timings = {name: _time(k, rawbufs, var_vals) for name, k in (("beam", beamed), ("heuristic", plain))}
        best = beamed if timings["beam"] < timings["heuristic"] else plain
        found[kernel_opts.kernel_key(s)] = {
            "name": _shape(s),
            "size": size,
            "opts": kernel_opts.encode(best.applied_opts),
            "chosen": "beam" if best is beamed else "heuristic",
            "beam_s": timings["beam"],
            "heuristic_s": timings["heuristic"],
            "search_s": round(time.perf_counter() - began, 1),
        }
        log.info("%s: %s", _shape(s), found[kernel_opts.kernel_key(s)])
        return best

    return choose


def _time(s: Any, rawbufs: Any, var_vals: Any) -> float:
    """Median seconds of 5 runs of the kernel at full size."""
    from tinygrad.codegen.opt import search

    _, compiled = search._try_compile((0, s))
    if compiled is None:
        return math.inf
    times = sorted(search._time_program(compiled[0], var_vals, search._ensure_buffer_alloc(rawbufs), cnt=5,
                                        allow_test_size=False))  # fmt: skip
    return times[len(times) // 2]


def _config_prefix(dataset: str) -> str:
    """How `configs` names a tuned step: `model/batch` for 28x28 grey images (MNIST and Fashion-MNIST share their
    kernels; the name from before other shapes were tuned), else `dataset/model/batch`."""
    return "" if tuple(Manifest.load().dataset(dataset).image_shape) == (1, 28, 28) else f"{dataset}/"


def _shape(s: Any) -> str:
    return "x".join(str(d) for d in s.full_shape)


def tune(
    models: list[str], batches: list[int], beam: int, min_size: int, *, dataset: str = "fashion-mnist"
) -> dict[str, Any]:
    """Compile each (model, batch) step and the evaluation with the searcher in place; the kernels found.

    Only the dataset's image shape and class count matter (the manifest's): MNIST and Fashion-MNIST share their kernels.
    """
    from tinygrad.codegen.opt import search

    found: dict[str, Any] = {}
    entry = Manifest.load().dataset(dataset)
    shape, classes = tuple(entry.image_shape), entry.num_classes
    original = search.beam_search
    search.beam_search = searcher(min_size, found)
    try:
        for model_name in models:
            for batch in batches:
                config = resolve_config({"model": model_name, "batch_size": batch}, dataset)
                model = initial_model(config, shape, classes)
                optimizer = build_optimizer(config, model)
                began = time.perf_counter()
                with Context(BEAM=beam):
                    TrainStep(model, optimizer, batch, shape).capture()
                log.info("%s batch %d: training step tuned in %.0f s", model_name, batch, time.perf_counter() - began)
            with Context(BEAM=beam):
                images = np.zeros((1000, *shape), np.uint8)
                Evaluator(model, images, np.zeros(1000, np.uint8)).capture()
    finally:
        search.beam_search = original
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point: tune, then merge into (or replace) `kernel_opts.json`."""
    parser = argparse.ArgumentParser(prog="python -m trainer_tinygrad.tune", description=__doc__)
    parser.add_argument("--model", action="append", choices=["mlp", "convnet"], help="default: both")
    parser.add_argument("--batch", action="append", type=int, help="training batch sizes (default: 128)")
    parser.add_argument("--dataset", default="fashion-mnist", help="whose image shape (default fashion-mnist)")
    parser.add_argument("--beam", type=int, default=2, help="BEAM width (default 2)")
    parser.add_argument("--min-size", type=int, default=1 << 22, help="smallest iteration space searched")
    parser.add_argument("--replace", action="store_true", help="start a new table instead of merging")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models, batches = args.model or ["mlp", "convnet"], args.batch or [128]
    found = tune(models, batches, args.beam, args.min_size, dataset=args.dataset)
    device = Device.DEFAULT.split(":", maxsplit=1)[0]
    current = {} if args.replace else kernel_opts.table()
    prefix = _config_prefix(args.dataset)
    kernels = {**current.get("kernels", {}).get(device, {}), **found}
    document = {
        "about": "kernel options chosen by `python -m trainer_tinygrad.tune`; read by trainer_tinygrad.kernel_opts",
        "tinygrad": tinygrad_version(),
        "tuned_on": f"{platform.machine()}, {step_cache.cpu_model()}",
        "tuned_at": utc_now(),
        "beam": args.beam,
        "min_size": args.min_size,
        "configs": sorted({*current.get("configs", []), *(f"{prefix}{m}/{b}" for m in models for b in batches)}),
        "kernels": {**current.get("kernels", {}), device: dict(sorted(kernels.items()))},
    }
    kernel_opts.TABLE.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    log.info("%d kernels in %s (%d found now)", len(kernels), kernel_opts.TABLE, len(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
