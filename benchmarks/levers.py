"""The speed push: each of tinygrad's levers measured on the training function, one against its baseline.

Every lever is a child-process run of `python -m trainer_tinygrad train` with one thing changed (the config or
the environment), interleaved with its baseline and repeated; the table gives medians and the ratio to the baseline:
- kernel options: the BEAM-found options shipped in `kernel_opts.json` against tinygrad's heuristics only
  (`TRAINER_KERNEL_OPTS=0`), mlp and convnet;
- step cache: a second run loading its compiled steps against one that compiles (`TRAINER_STEP_CACHE=off`);
- LLVM: tinygrad's LLVM backend (`DEV=CPU:LLVM`, given a libLLVM >= 17) against clang;
- HCQ2: tinygrad's queue-based CPU runtime (`HCQ2=1`, kernels queued to a worker thread);
- threads: `NUM_CPU_THREADS=1` against the core count, and tinygrad's thread pieces really run in parallel
  (`benchmarks.threaded_trainer`), with PyTorch on 1 and 2 threads beside them;
- host syncs: `log_every` 1 / 10 / 100 (the function reads the loss back only at log steps);
- JIT: `JIT=0` against TinyJit;
- batch size: samples/s and time to 85% for 64..512 (4 epochs, lr unchanged), with PyTorch alongside;
- Winograd convolutions (`WINO=1`) on the convnet;
- the convolutions' hand-written C kernels (`trainer_tinygrad/convolution_kernels.py`) against tinygrad's own
  (`TRAINER_CONV_KERNELS=0`), convnet, with PyTorch on one thread beside them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.machine import torch_available
from benchmarks.measurements import median, ratio
from benchmarks.results import RESULTS_DIR, Report
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
    ("cpu_per_wall", "CPU s / wall s"),
    ("runs", "runs"),
]

#: Where Debian keeps its LLVM libraries; tinygrad 0.14's IR needs LLVM >= 17 (opaque pointers).
LLVM_CANDIDATES = [f"/usr/lib/x86_64-linux-gnu/libLLVM.so.{v}.1" for v in (21, 20, 19, 18, 17)] + [
    f"/usr/lib/llvm-{v}/lib/libLLVM.so" for v in (21, 20, 19, 18, 17)
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
        "cpu_per_wall": median([f.cpu_s / f.wall_s for f in figures if f.wall_s]),
        "runs": len(figures),
    }


Variant = tuple[dict[str, Any], dict[str, str]]  # (config overrides, environment)


def _variants(
    ws: Workspace,
    lever: str,
    config: dict[str, Any],
    variants: dict[str, Variant],
    *,
    repeats: int,
    baseline: str,
    cache: str,
    module: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[RunFigures]]]:
    """Interleave the variants `repeats` times; rows with ratios to the `baseline` variant.

    Every variant shares one warmed kernel cache (and step cache) unless its environment names its own, so warm-up
    is the warm figure and throughput is not disturbed by compilation. `module`: variant -> another entry point."""
    runs: dict[str, list[RunFigures]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (overrides, env) in variants.items():
            changed = {**config, **overrides}
            entry = (module or {}).get(name, "trainer_tinygrad")
            runs[name].append(run_tinygrad(ws, changed, 0.85, env={"CACHEDB": cache, **env}, module=entry))
    base = median([f.samples_per_s for f in runs[baseline] if f.samples_per_s])
    return [_row(lever, name, figures, base) for name, figures in runs.items()], runs


#: Lever groups (`--levers` picks some) and the `lever` column of their rows.
GROUPS = {
    "kernel_opts": ("kernel options",), "step_cache": ("step cache",), "llvm": ("backend",), "hcq2": ("runtime",),
    "threads": ("threads",), "host_syncs": ("host syncs",), "jit": ("JIT",), "winograd": ("Winograd conv",),
    "conv_kernels": ("conv kernels",), "batch_sizes": ("batch size (tinygrad)", "batch size (torch, 1 thread)"),
}  # fmt: skip


def benchmark(ws: Workspace) -> Report:
    """Run the lever measurements (all groups, or those `--levers` names); returns the report.

    With `--levers`, the other groups' rows are carried over from the saved `levers.json`, marked in the notes."""
    opts = ws.options
    wanted = set(opts.levers) or set(GROUPS)
    if unknown := wanted - set(GROUPS):
        raise ValueError(f"unknown lever groups {sorted(unknown)}; choose from {sorted(GROUPS)}")
    report = Report("levers", "The speed push: tinygrad's levers on the training function", COLUMNS)
    cache = str(ws.scratch("lever-cache") / "cache.db")
    repeats = 1 if opts.quick else opts.repeats
    steps = 60 if opts.quick else 600
    mlp = spec_for("mlp", steps=steps, checkpoint_every=steps, eval_samples=1000)
    conv_steps = max(6, opts.convnet_steps // 4)
    conv = spec_for("convnet", steps=conv_steps, checkpoint_every=conv_steps, eval_samples=100, log_every=2)
    run_tinygrad(ws, mlp, 0.85, env={"CACHEDB": cache})  # fill the caches: every variant below starts warm
    if not opts.quick:
        run_tinygrad(ws, conv, 0.85, env={"CACHEDB": cache})
    details: dict[str, Any] = {}

    def lever(key: str, name: str, config: dict[str, Any], variants: dict[str, Variant], **kw: Any) -> None:
        if not any(key == g or key.startswith(f"{g}_") for g in wanted):
            return
        rows, runs = _variants(ws, name, config, variants, cache=cache, baseline=next(iter(variants)), **kw)
        report.rows.extend(rows)
        details[key] = _dump(runs)

    models = [("mlp", mlp, repeats)] + ([] if opts.quick else [("convnet", conv, max(1, repeats - 1))])
    for label, config, n in models:
        lever(f"kernel_opts_{label}", "kernel options", config,
              {"shipped BEAM options (default)": ({}, {}), "heuristics only": ({}, {"TRAINER_KERNEL_OPTS": "0"})},
              repeats=n)  # fmt: skip
        lever(f"step_cache_{label}", "step cache", config,
              {"cached steps (default)": ({}, {}), "compiled every run": ({}, {"TRAINER_STEP_CACHE": "off"})},
              repeats=n)  # fmt: skip
    if opts.quick:
        report.notes.append("quick: kernel options and step cache on the mlp only")
        return _finish(report, details, steps, repeats)

    if (llvm := next((p for p in LLVM_CANDIDATES if Path(p).is_file()), None)) is not None:
        for label, config, n in models:
            llvm_env = {"DEV": "CPU:LLVM", "LLVM_PATH": llvm}
            lever(f"llvm_{label}", "backend", config, {"clang (default)": ({}, {}), "LLVM": ({}, llvm_env)}, repeats=n)
    else:
        report.notes.append("backend: no libLLVM >= 17 here (tinygrad 0.14's IR does not parse with LLVM 14/15)")
    lever("hcq2", "runtime", mlp, {"default": ({}, {}), "HCQ2=1": ({}, {"HCQ2": "1"})}, repeats=repeats)
    for label, config, n in models:
        lever(f"threads_{label}", "threads", config,
              {"default (one core)": ({}, {}), "NUM_CPU_THREADS=1": ({}, {"NUM_CPU_THREADS": "1"}),
               "pieces in parallel (2 threads)": ({}, {})},
              repeats=n, module={"pieces in parallel (2 threads)": "benchmarks.threaded_trainer"})  # fmt: skip
        if torch_available() and "threads" in wanted:
            torch_runs = {t: [run_torch(ws, config, 0.85, threads=t) for _ in range(n)] for t in (1, 2)}
            base = next(r for r in report.rows if r["lever"] == "threads" and r["model"] == label)["samples_per_s"]
            report.rows += [
                _row("threads", f"torch, {t} thread{'s' * (t > 1)}", f, base) for t, f in torch_runs.items()
            ]
            details[f"threads_{label}_torch"] = _dump(torch_runs)
    lever("host_syncs", "host syncs", mlp,
          {"log_every 10 (default)": ({}, {}), "log_every 1": ({"log_every": 1}, {}),
           "log_every 100": ({"log_every": min(100, steps // 3)}, {})}, repeats=repeats)  # fmt: skip
    lever("jit", "JIT", mlp, {"TinyJit (default)": ({}, {}), "JIT=0": ({}, {"JIT": "0"})}, repeats=min(2, repeats))
    lever("winograd", "Winograd conv", conv, {"off (default)": ({}, {}), "WINO=1": ({}, {"WINO": "1"})}, repeats=1)
    conv_repeats = max(1, repeats - 1)
    lever("conv_kernels", "conv kernels", conv,
          {"hand-written C (default)": ({}, {}), "tinygrad's": ({}, {"TRAINER_CONV_KERNELS": "0"})},
          repeats=conv_repeats)  # fmt: skip
    if torch_available() and "conv_kernels" in wanted:
        runs = [run_torch(ws, conv, 0.85, threads=1) for _ in range(conv_repeats)]
        base = next(r for r in report.rows if r["lever"] == "conv kernels")["samples_per_s"]
        report.rows.append(_row("conv kernels", "torch, 1 thread", runs, base))
        details["conv_kernels_torch"] = _dump({1: runs})
    if "batch_sizes" in wanted:
        report.rows += _batch_sizes(ws, cache, repeats, details)
    if wanted != set(GROUPS):
        _carry_over(report, details, set(GROUPS) - wanted)
    return _finish(report, details, steps, repeats)


def _carry_over(report: Report, details: dict[str, Any], groups: set[str]) -> None:
    """The rows (and details) of `groups` from the last saved full or partial run, so the table stays whole."""
    saved = RESULTS_DIR / "levers.json"
    if not saved.is_file():
        return
    previous = json.loads(saved.read_text(encoding="utf-8"))
    names = {name for g in groups for name in GROUPS[g]}
    carried = [row for row in previous["rows"] if row["lever"] in names]
    report.rows += carried
    details.update({k: v for k, v in previous.get("details", {}).items() if k.split("_torch")[0] not in details})
    if carried:
        levers = ", ".join(sorted({row["lever"] for row in carried}))
        report.notes.append(f"carried over from the run of {previous['finished_at']}: {levers}")


def _finish(report: Report, details: dict[str, Any], steps: int, repeats: int) -> Report:
    report.notes += [
        f"mlp runs: {steps} steps of 128 unless the row says otherwise, evaluation on 1,000 test images at the end; "
        f"medians of {repeats} interleaved runs per setting; 'vs baseline' is the ratio of the medians. Convnet runs: "
        "a few steps of 128 (a metric every 2), one run fewer per setting.",
        "Every run is the real training process (`python -m trainer_tinygrad train`) with only the named setting "
        "changed; all settings share one kernel cache (and step cache) warmed before the first timed run.",
        "CPU s / wall s: the child's CPU time over its wall time; above 1 means it used more than one core.",
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
                torch[batch].append(run_torch(ws, configs[batch], 0.85, threads=1))
    base = median([f.samples_per_s for f in tiny[128] if f.samples_per_s])
    rows += [_row("batch size (tinygrad)", f"{batch}", tiny[batch], base) for batch in sizes]
    if torch_available():
        tbase = median([f.samples_per_s for f in torch[128] if f.samples_per_s])
        rows += [_row("batch size (torch, 1 thread)", f"{batch}", torch[batch], tbase) for batch in sizes]
    details["batch_sizes"] = {"configs": configs, "tinygrad": _dump(tiny), "torch": _dump(torch)}
    return rows


def _dump(runs: dict[Any, list[RunFigures]]) -> dict[str, list[dict[str, Any]]]:
    return {str(k): [asdict(f) for f in figures] for k, figures in runs.items()}
