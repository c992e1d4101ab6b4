"""The speed push: each of tinygrad's levers measured on the training function, one against its baseline.

Every lever is a child-process run of `python -m trainer_tinygrad train` with one thing changed (the spec or the
environment), interleaved with its baseline and repeated; the table gives medians and the ratio to the baseline:
- host syncs: the function reads the loss back only at `log_every` steps; 1, 10 (the default) and 100 show the
  cost of a sync;
- JIT: `JIT=0` against TinyJit (the default);
- threads: `NUM_CPU_THREADS=1` against tinygrad's default (the core count);
- batch size: samples/s and time to 85% for 64..512 (4 epochs, lr unchanged), with PyTorch alongside;
- BEAM kernel search: `BEAM=2` with its results kept in the kernel cache (CACHEDB): the cold search once, then
  warm runs against the baseline;
- Winograd convolutions (`WINO=1`) on the convnet.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from benchmarks.machine import torch_available
from benchmarks.measurements import median, ratio
from benchmarks.results import Report
from benchmarks.training import RunFigures, run_tinygrad, run_torch, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("lever", "lever"),
    ("setting", "setting"),
    ("model", "model"),
    ("samples_per_s", "train samples/s"),
    ("vs_baseline", "vs baseline"),
    ("warmup_s", "spawn to steady (s)"),
    ("time_to_target_s", "time to 85% (s)"),
    ("final_accuracy", "final test acc"),
    ("runs", "runs"),
]


def _row(lever: str, setting: str, figures: list[RunFigures], baseline: float | None = None) -> dict[str, Any]:
    sps = median([f.samples_per_s for f in figures if f.samples_per_s])
    reached = [f.time_to_target_s for f in figures if f.time_to_target_s is not None]
    return {
        "lever": lever,
        "setting": setting,
        "model": figures[0].model if figures else None,
        "samples_per_s": sps,
        "vs_baseline": ratio(sps, baseline),
        "warmup_s": median([f.warmup_s for f in figures if f.warmup_s is not None]),
        "time_to_target_s": median(reached) if reached and len(reached) == len(figures) else None,
        "final_accuracy": median([f.final_accuracy for f in figures if f.final_accuracy is not None]),
        "runs": len(figures),
    }


def _variants(
    ws: Workspace,
    lever: str,
    config: dict[str, Any],
    variants: dict[str, tuple[dict[str, Any], dict[str, str]]],
    *,
    repeats: int,
    baseline: str,
    cache: str,
) -> tuple[list[dict[str, Any]], dict[str, list[RunFigures]]]:
    """Interleave the variants (spec overrides, env) `repeats` times; rows with ratios to the `baseline` variant.

    Every variant shares one warmed kernel cache, so warm-up is the warm figure and throughput is not disturbed by
    compilation."""
    runs: dict[str, list[RunFigures]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (overrides, env) in variants.items():
            spec = {**config, **overrides}
            runs[name].append(run_tinygrad(ws, spec, 0.85, env={"CACHEDB": cache, **env}))
    base = median([f.samples_per_s for f in runs[baseline] if f.samples_per_s])
    return [_row(lever, name, figures, base) for name, figures in runs.items()], runs


def benchmark(ws: Workspace) -> Report:
    """Run the lever measurements; returns the report."""
    opts = ws.options
    report = Report("levers", "The speed push: tinygrad's levers on the training function", COLUMNS)
    cache = str(ws.scratch("lever-cache") / "cache.db")
    repeats = 1 if opts.quick else opts.repeats
    steps = 60 if opts.quick else 600
    base = spec_for("mlp", steps=steps, checkpoint_every=steps, eval_samples=1000)
    run_tinygrad(ws, base, 0.85, env={"CACHEDB": cache})  # fill the kernel cache: every variant below starts warm
    details: dict[str, Any] = {}

    rows, runs = _variants(
        ws, "host syncs", base,
        {"log_every 10 (default)": ({}, {}), "log_every 1": ({"log_every": 1}, {}),
         "log_every 100": ({"log_every": min(100, steps // 3)}, {})},
        repeats=repeats, baseline="log_every 10 (default)", cache=cache,
    )  # fmt: skip
    report.rows += rows
    details["host_syncs"] = _dump(runs)

    rows, runs = _variants(
        ws, "JIT", base, {"TinyJit (default)": ({}, {}), "JIT=0": ({}, {"JIT": "0"})}, repeats=repeats,
        baseline="TinyJit (default)", cache=cache,
    )  # fmt: skip
    report.rows += rows
    details["jit"] = _dump(runs)

    rows, runs = _variants(
        ws, "threads", base, {"default (core count)": ({}, {}), "NUM_CPU_THREADS=1": ({}, {"NUM_CPU_THREADS": "1"})},
        repeats=repeats, baseline="default (core count)", cache=cache,
    )  # fmt: skip
    report.rows += rows
    details["threads"] = _dump(runs)

    if not opts.quick:
        report.rows += _batch_sizes(ws, cache, repeats, details)
        if opts.beam:
            report.rows += _beam(ws, base, repeats, details)
        report.rows += _winograd(ws, max(10, opts.convnet_steps // 2), details)

    report.notes += [
        f"mlp runs: {steps} steps of 128 unless the row says otherwise, evaluation on 1,000 test images at the end; "
        f"medians of {repeats} interleaved runs per setting; 'vs baseline' is the ratio of the medians.",
        "Every run is the real training process (`python -m trainer_tinygrad train`) with only the named setting "
        "changed; all settings share one kernel cache warmed before the first timed run.",
    ]
    report.details = details
    return report


def _batch_sizes(ws: Workspace, cache: str, repeats: int, details: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sizes = (64, 128, 256, 512)
    tiny: dict[int, list[RunFigures]] = {b: [] for b in sizes}
    torch: dict[int, list[RunFigures]] = {b: [] for b in sizes}
    configs = {}
    for batch in sizes:
        steps = math.ceil(4 * 60_000 / batch)
        configs[batch] = spec_for("mlp", batch_size=batch, steps=steps, checkpoint_every=max(1, steps // 16))
    for _ in range(max(1, repeats - 1)):
        for batch in sizes:
            tiny[batch].append(run_tinygrad(ws, configs[batch], 0.85, env={"CACHEDB": cache}))
            if torch_available():
                torch[batch].append(run_torch(ws, configs[batch], 0.85))
    base = median([f.samples_per_s for f in tiny[128] if f.samples_per_s])
    for batch in sizes:
        row = _row("batch size (tinygrad)", f"{batch}", tiny[batch], base)
        rows.append(row)
    if torch_available():
        tbase = median([f.samples_per_s for f in torch[128] if f.samples_per_s])
        rows += [_row("batch size (torch)", f"{batch}", torch[batch], tbase) for batch in sizes]
    details["batch_sizes"] = {"configs": configs, "tinygrad": _dump(tiny), "torch": _dump(torch)}
    return rows


def _beam(ws: Workspace, base: dict[str, Any], repeats: int, details: dict[str, Any]) -> list[dict[str, Any]]:
    """BEAM=2 in its own kernel cache: the first run searches (cold), later runs reuse the results (warm)."""
    beam_cache = str(ws.scratch("beam-cache") / "cache.db")
    plain_cache = str(ws.scratch("plain-cache") / "cache.db")
    cold = run_tinygrad(ws, base, 0.85, env={"CACHEDB": beam_cache, "BEAM": "2"})
    run_tinygrad(ws, base, 0.85, env={"CACHEDB": plain_cache})
    warm: list[RunFigures] = []
    plain: list[RunFigures] = []
    for _ in range(repeats):
        plain.append(run_tinygrad(ws, base, 0.85, env={"CACHEDB": plain_cache}))
        warm.append(run_tinygrad(ws, base, 0.85, env={"CACHEDB": beam_cache, "BEAM": "2"}))
    baseline = median([f.samples_per_s for f in plain if f.samples_per_s])
    details["beam"] = {"cold": _dump({"beam": [cold]}), "warm": _dump({"beam": warm}), "plain": _dump({"p": plain})}
    return [
        _row("BEAM", "off (default)", plain, baseline),
        _row("BEAM", "BEAM=2, cold search", [cold], baseline),
        _row("BEAM", "BEAM=2, cached", warm, baseline),
    ]


def _winograd(ws: Workspace, steps: int, details: dict[str, Any]) -> list[dict[str, Any]]:
    conv = spec_for("convnet", steps=steps, checkpoint_every=steps, eval_samples=1000, log_every=5)
    cache = str(ws.scratch("wino-cache") / "cache.db")
    plain = [run_tinygrad(ws, conv, 0.85, env={"CACHEDB": cache})]
    wino = [run_tinygrad(ws, conv, 0.85, env={"CACHEDB": cache, "WINO": "1"})]
    baseline = median([f.samples_per_s for f in plain if f.samples_per_s])
    details["winograd"] = {"config": conv, "plain": _dump({"p": plain}), "wino": _dump({"w": wino})}
    return [_row("Winograd conv", "off (default)", plain, baseline), _row("Winograd conv", "WINO=1", wino, baseline)]


def _dump(runs: dict[Any, list[RunFigures]]) -> dict[str, list[dict[str, Any]]]:
    return {str(k): [asdict(f) for f in figures] for k, figures in runs.items()}
