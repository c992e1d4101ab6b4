"""Where one training step's time goes: kernels, kernel launches, host work; measured in a child process per model.

    python -m benchmarks.step_profile --model mlp [--batch 128] [--steps 200] [--variants] [--data-dir DIR]
                                      [--dataset cifar10]

Prints one JSON line. What it measures, on the training function's own compiled step (`trainer_tinygrad.steps`):
- step: the step called as the trainer calls it and synchronized, median over `--steps` calls;
- kernels: steps under tinygrad's `DEBUG=2`, which runs and times each kernel on its own: how many, the sum of
  their median times, the biggest ones (name, time, GFLOPS as tinygrad counts them; the hand-written convolution
  kernels' from their shapes);
- dispatch: step less kernel time: the Python that launches each kernel (the function's prepared launch list;
  tinygrad's own executor in the variants);
- host: drawing a batch (seeded generator, gather) and writing it into the input buffers, per step;
- `--dataset`: whose images (default Fashion-MNIST). A dataset absent from the cache (CIFAR-10 cannot be
  downloaded here) is stood in for by seeded random images of its shape, and the result says so (`data`): a step's
  kernels and their times do not depend on the pixels;
- vector width: the fused multiply-adds in each big kernel's machine code, counted by width in float lanes
  (`vector_width`), and the share of kernel time spent in kernels by their widest FMA;
- `--variants` (cheap for the mlp only): the same step through TinyJit's own call path (it re-checks every input)
  and through tinygrad's executor,
  the batch copied in the way the function did before (a tinygrad copy per buffer), several optimizer steps per JIT
  call, and tinygrad's fused optimizer (one update kernel over all weights), each timed in this same process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes, nn
from tinygrad.device import Buffer
from tinygrad.helpers import Context
from tinygrad.nn.state import get_state_dict
from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.convolution_kernels import kernel_flops
from trainer_tinygrad.datasets import DatasetCache, load_dataset
from trainer_tinygrad.datasets.dataset import Dataset
from trainer_tinygrad.datasets.manifest import Manifest
from trainer_tinygrad.models import preprocess
from trainer_tinygrad.steps import Evaluator, Input, TrainStep, prepare
from trainer_tinygrad.train import build_optimizer, initial_model

from benchmarks.measurements import run_child
from benchmarks.results import Report
from benchmarks.vector_width import fma_peak, step_lanes
from benchmarks.workspace import Workspace

KERNEL_LINE = re.compile(r"\*\*\* \S+\s+\d+\s+(\S+)\s+arg\s+\d+.*?tm\s+([\d.]+)(us|ms|s)/.*?\(\s*(\d+) GFLOPS")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _gflops(name: str, seconds: float, counted: int) -> int:
    """tinygrad's count, or for the hand-written convolution kernels (which it cannot count) their own."""
    flops = kernel_flops(name)
    return counted if flops is None else round(flops / seconds / 1e9)


def timed(fn: Callable[[], Any], calls: int) -> float:
    """Median seconds of `calls` synchronized calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        fn()
        Device[Device.DEFAULT].synchronize()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def kernel_times(fn: Callable[[], Any], calls: int) -> list[tuple[str, float, int]]:
    """(name, seconds, GFLOPS) of every kernel a call of `fn` runs, from tinygrad's DEBUG=2 lines: each kernel's
    median over `calls` calls (one call alone is at the mercy of a shared machine)."""
    runs = []
    for _ in range(calls):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), Context(DEBUG=2):
            fn()
        rows = []
        for line in out.getvalue().splitlines():
            if match := KERNEL_LINE.search(ANSI.sub("", line)):
                rows.append((match[1], float(match[2]) * UNIT[match[3]], int(match[4])))
        runs.append(rows)
    return [
        (kernel[0][0], float(np.median([k[1] for k in kernel])), int(np.median([k[2] for k in kernel])))
        for kernel in zip(*runs, strict=True)
    ]


def random_images(dataset: str) -> Dataset:
    """Seeded random uint8 images and labels of `dataset`'s shape (from the manifest): 2,048 to train, 1,000 to test."""
    entry = Manifest.load().dataset(dataset)
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 256, (n, *entry.image_shape), dtype=np.uint8)
        return images, rng.integers(0, entry.num_classes, n).astype(np.uint8)

    (x_train, y_train), (x_test, y_test) = split(2048), split(1000)
    return Dataset(dataset, x_train, y_train, x_test, y_test, entry.num_classes, entry.classes, {"random": True})


def profile(
    model_name: str, batch: int, steps: int, variants: bool, data_dir: Path | None, *, dataset: str = "fashion-mnist"
) -> dict[str, Any]:
    """Everything above for one model; a JSON-able dict."""
    cache = DatasetCache(data_dir)
    data = load_dataset(dataset, cache) if cache.status(dataset, rehash=False).present else random_images(dataset)
    config = resolve_config({"model": model_name, "batch_size": batch}, dataset)
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    model = initial_model(config, shape, data.num_classes)
    optimizer = build_optimizer(config, model)
    step = TrainStep(model, optimizer, batch, shape)
    evaluator = Evaluator(model, data.x_test[:1000], data.y_test[:1000])
    compiled = prepare(step, evaluator, config, data.num_classes)
    rng = np.random.default_rng(0)

    def host() -> None:
        index = np.random.default_rng((0, int(rng.integers(1 << 30)))).integers(0, len(data.x_train), batch)
        step.write(data.x_train[index], data.y_train[index])

    host()
    step_s = timed(step, steps)
    kernels = kernel_times(step.via_tinygrad, max(5, min(20, steps // 10)))
    kernel_s = sum(t for _, t, _ in kernels)
    lanes = step_lanes(step.jit.captured)
    result: dict[str, Any] = {
        "event": "step_profile",
        "model": model_name,
        "dataset": dataset,
        "data": "random images of its shape" if data.provenance.get("random") else "the dataset",
        "batch": batch,
        "step_cache_hit": compiled["hit"],
        "step_s": step_s,
        "kernels": len(kernels),
        "kernel_s": kernel_s,
        "dispatch_s": step_s - kernel_s,
        "host_s": timed(host, steps),
        "top": [
            {"name": n, "s": t, "share": t / kernel_s, "gflops": _gflops(n, t, g), "fma_lanes": _json_keys(lanes, n)}
            for n, t, g in sorted(kernels, key=lambda k: -k[1])[:8]
        ],
    }
    if lanes is not None:
        by_width: dict[int, float] = {}
        for n, t, _ in kernels:
            widest = max(lanes.get(n, {}), default=0)
            by_width[widest] = by_width.get(widest, 0.0) + t / kernel_s
        result["kernel_time_by_widest_fma"] = {str(k): v for k, v in sorted(by_width.items())}
    if variants:
        result["variants"] = _variants(step, model_name, shape, steps, data)
    return result


def _json_keys(lanes: dict[str, dict[int, int]] | None, name: str) -> dict[str, int] | None:
    """A kernel's FMA counts with the widths as JSON object keys; None when unknown."""
    return None if lanes is None else {str(k): v for k, v in lanes.get(name, {}).items()}


def _variants(step: TrainStep, model_name: str, shape: tuple[int, ...], steps: int, data: Any) -> dict[str, float]:
    batch = int(step.x.tensor.shape[0])
    images, labels = data.x_train[:batch], data.y_train[:batch]

    def copied() -> None:  # how the function fed a batch before: one tinygrad copy per input buffer
        for inp, array in ((step.x, preprocess(images)), (step.y, labels.astype(np.int32))):
            host = np.ascontiguousarray(array)
            inp.buffer.copy_from(Buffer("PYTHON", inp.buffer.size, inp.buffer.dtype, opaque=host.data.cast("B")))

    out = {
        "step_launch_list_s": timed(step, steps),
        "step_tinygrad_executor_s": timed(step.via_tinygrad, steps),
        "step_tinyjit_path_s": timed(lambda: step.jit(*step.batch, step.state), steps),
        "write_in_place_s": timed(lambda: step.write(images, labels), steps),
        "write_copied_s": timed(copied, steps),
    }
    for k in (1, 4):
        out[f"steps_per_call_{k}_s"] = _per_call(model_name, batch, shape, k, steps)
    out["fused_optimizer_s"] = _fused(model_name, batch, shape, steps)
    out["unfused_optimizer_s"] = out["steps_per_call_1_s"]
    return out


def _fresh(model_name: str, batch: int, shape: tuple[int, ...], fused: bool = False) -> tuple[Any, Any]:
    config = resolve_config({"model": model_name, "batch_size": batch}, "fashion-mnist")
    model = initial_model(config, shape, 10)
    opt = nn.optim.Adam(list(get_state_dict(model).values()), lr=1e-3, fused=fused)
    return model, opt


def _per_call(model_name: str, batch: int, shape: tuple[int, ...], k: int, steps: int) -> float:
    """Seconds per optimizer step when one JIT call runs `k` of them (on `k` input batches)."""
    model, opt = _fresh(model_name, batch, shape)
    inputs = [(Input((batch, *shape), dtypes.float32).tensor, Input((batch,), dtypes.int32).tensor) for _ in range(k)]

    @TinyJit
    def run() -> list[Tensor]:
        with Context(TRAINING=1):
            losses = []
            for x, y in inputs:
                opt.zero_grad()
                losses.append(model(x).sparse_categorical_crossentropy(y).backward().realize(*opt.schedule_step()))
            return losses

    run()
    run()
    return timed(run, max(1, steps // k)) / k


def _fused(model_name: str, batch: int, shape: tuple[int, ...], steps: int) -> float:
    model, opt = _fresh(model_name, batch, shape, fused=True)
    x, y = Input((batch, *shape), dtypes.float32).tensor, Input((batch,), dtypes.int32).tensor

    @TinyJit
    def run() -> Tensor:
        with Context(TRAINING=1):
            opt.zero_grad()
            return model(x).sparse_categorical_crossentropy(y).backward().realize(*opt.schedule_step())

    run()
    run()
    return timed(run, steps)


COLUMNS = [
    ("model", "model"),
    ("kernel_opts", "kernel options"),
    ("conv_kernels", "conv kernels"),
    ("step_ms", "step (ms)"),
    ("kernels", "kernels"),
    ("kernel_ms", "kernel time (ms)"),
    ("dispatch_ms", "launch + Python (ms)"),
    ("host_ms", "batch on host (ms)"),
    ("samples_per_s", "samples/s (step + batch)"),
    ("top", "biggest kernel: ms, share, GFLOPS, FMA widths"),
]


def lanes_text(counts: dict[str, int] | None) -> str:
    """A kernel's FMA instructions by width, widest first: "16-lane x8, 8-lane x5"; "no FMA"; "" when unknown."""
    if counts is None:
        return ""
    if not counts:
        return "no FMA"
    widths = sorted(((int(k), n) for k, n in counts.items()), reverse=True)
    return ", ".join(f"{lanes}-lane x{n}" for lanes, n in widths)


def benchmark(ws: Workspace) -> Report:
    """The profile of one mlp step and one convnet step (and, unless --quick, the CIFAR-10 convnet's), with the shipped
    kernel options and without, and the convnets also with tinygrad's own convolution kernels."""
    report = Report("profile", "Where a training step's time goes (tinygrad DEBUG=2 and timers)", COLUMNS)
    cache = ws.kernel_cache("profile-cache")
    plan = [("mlp", "fashion-mnist", 30 if ws.options.quick else 300)]
    if not ws.options.quick:
        plan += [("convnet", "fashion-mnist", 8), ("convnet", "cifar10", 5)]
    details: dict[str, Any] = {}
    for model, dataset, steps in plan:
        # (kernel options, convolution kernels): the convnets also once with tinygrad's own convolution kernels
        settings = [("on", "C"), ("off", "C")] + ([("on", "tinygrad")] if model == "convnet" else [])
        for opts, conv in settings:
            argv = [ws.python, "-m", "benchmarks.step_profile", "--model", model, "--steps", str(steps)]
            argv += ["--data-dir", str(ws.data_dir), "--dataset", dataset]
            if model == "mlp" and opts == "on" and not ws.options.quick:
                argv.append("--variants")
            env = ws.env(CACHEDB=cache, TRAINER_KERNEL_OPTS="1" if opts == "on" else "0",
                         TRAINER_CONV_KERNELS="1" if conv == "C" else "0")  # fmt: skip
            run = run_child(argv, env=env)
            found = next((e for _, e in run.lines if e.get("event") == "step_profile"), None)
            if found is None:
                report.status = "partial"
                report.notes.append(
                    f"{model}, kernel options {opts}, {conv} convolutions: exit {run.returncode}: "
                    f"{run.stderr_tail[-300:]}"
                )
                continue
            default = dataset == "fashion-mnist"  # the rows and keys from before other datasets were profiled
            name = model if default else f"{model} ({dataset}, {found['data']})"
            key = f"{model}_{opts}" if default else f"{model}_{dataset}_{opts}"
            details[key + ("_tinygrad_conv" if conv == "tinygrad" else "")] = found
            top = found["top"][0]
            report.rows.append({
                "model": name, "kernel_opts": opts, "conv_kernels": conv if model == "convnet" else "-",
                "step_ms": found["step_s"] * 1e3, "kernels": found["kernels"],
                "kernel_ms": found["kernel_s"] * 1e3, "dispatch_ms": found["dispatch_s"] * 1e3,
                "host_ms": found["host_s"] * 1e3, "samples_per_s": found["batch"] / (found["step_s"] + found["host_s"]),
                "top": f"{top['name']}: {top['s'] * 1e3:.3g}, {top['share']:.0%}, {top['gflops']}"
                + (f", {lanes}" if (lanes := lanes_text(top.get("fma_lanes"))) else ""),
            })  # fmt: skip
    if (variants := details.get("mlp_on", {}).get("variants")) is not None:
        ms = {k: v * 1e3 for k, v in variants.items()}
        report.notes.append(
            "mlp variants, same process (ms a step): through TinyJit's call path {step_tinyjit_path_s:.3f}; "
            "tinygrad's executor with the inputs resolved once {step_tinygrad_executor_s:.3f}; the function's "
            "prepared launch list {step_launch_list_s:.3f}. Batch copied in by tinygrad {write_copied_s:.3f} vs "
            "written in place {write_in_place_s:.3f}. 4 optimizer steps per JIT call {steps_per_call_4_s:.3f} vs 1 "
            "{steps_per_call_1_s:.3f}; fused optimizer {fused_optimizer_s:.3f} vs unfused {unfused_optimizer_s:.3f} "
            "(these two with tinygrad's executor and heuristics)".format(**ms)
        )
    peak = fma_peak(2_000_000 if ws.options.quick else 20_000_000)
    details["fma_peak_gflops"] = peak
    if peak:
        report.notes.append(
            "one core's fused multiply-add ceiling here (`python -m benchmarks.vector_width`: independent FMAs "
            "compiled by the clang tinygrad uses, -O2 -march=native): "
            + ", ".join(f"{lanes} lanes {gflops:.0f} GFLOPS" for lanes, gflops in sorted(peak.items()))
        )
    for key, found in details.items():
        if shares := found.get("kernel_time_by_widest_fma"):
            report.notes.append(
                f"{key}: kernel time by the widest FMA a kernel uses: "
                + ", ".join(
                    f"{f'{lanes}-lane' if lanes != '0' else 'no FMA'} {share:.0%}" for lanes, share in shares.items()
                )
            )
    report.notes += [
        "kernel time: each kernel's median over several steps under DEBUG=2 (run and timed on its own), summed; "
        "'launch + Python' is the step's wall time less that sum; 'batch on host' draws the seeded indices, gathers "
        "and writes the batch.",
        "kernel options on: the BEAM-found options shipped in trainer_tinygrad/kernel_opts.json; off: tinygrad's "
        "heuristics only (TRAINER_KERNEL_OPTS=0).",
        "conv kernels C: the hand-written C kernels of trainer_tinygrad/convolution_kernels.py (the default); "
        "tinygrad: tinygrad's own (TRAINER_CONV_KERNELS=0).",
    ]
    report.details = details
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_profile", description=__doc__)
    parser.add_argument("--model", default="mlp", choices=["mlp", "convnet"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--data-dir", type=Path, help="dataset cache (default: the trainer's default)")
    parser.add_argument("--dataset", default="fashion-mnist", help="whose images (default fashion-mnist)")
    args = parser.parse_args(argv)
    found = profile(args.model, args.batch, args.steps, args.variants, args.data_dir, dataset=args.dataset)
    print(json.dumps(found), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
