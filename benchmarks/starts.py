"""How fast a run starts: spawn to steady training, for a model's first run (cold caches) and the runs after it.

Each run is the real training process with a metric after every step, so the first step is seen alone:
- spawn to started: the process up to its `started` line (imports, data, model, compiled or loaded steps);
- spawn to steady: the first metric's arrival less one steady step: when the run started training at full speed;
- cold: an empty tinygrad kernel cache (CACHEDB) and so an empty step cache beside it; warm: the runs after it.
The training function at `--before REV` runs beside this one when asked, and PyTorch on one thread for reference.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from benchmarks.machine import torch_available
from benchmarks.measurements import median
from benchmarks.results import Report
from benchmarks.training import BEFORE, TORCH_1, RunFigures, run_tinygrad, run_torch, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("model", "model"),
    ("side", "training function"),
    ("cache", "caches"),
    ("started_s", "spawn to started (s)"),
    ("steady_s", "spawn to steady (s)"),
    ("step_ms", "steady step (ms)"),
    ("runs", "runs"),
]


def _row(model: str, side: str, cache: str, figures: list[RunFigures]) -> dict[str, Any]:
    return {
        "model": model,
        "side": side,
        "cache": cache,
        "started_s": median([f.startup_s for f in figures if f.startup_s is not None]),
        "steady_s": median([f.warmup_s for f in figures if f.warmup_s is not None]),
        "step_ms": median([f.step_s * 1e3 for f in figures if f.step_s is not None]),
        "runs": len(figures),
    }


def benchmark(ws: Workspace) -> Report:
    """Cold then warm runs of each model, each side; returns the report."""
    report = Report("starts", "Spawn to steady training: first run and the runs after it", COLUMNS)
    warm_runs = 1 if ws.options.quick else max(2, ws.options.repeats)
    plan = {"mlp": 30} if ws.options.quick else {"mlp": 30, "convnet": 4}
    details: dict[str, Any] = {}
    everything: list[RunFigures] = []
    for model, steps in plan.items():
        config = spec_for(model, steps=steps, log_every=1, checkpoint_every=steps, eval_samples=100)
        sides = [("this checkout", False)] + ([(f"before ({ws.options.before})", True)] if ws.options.before else [])
        for side, before in sides:
            cache = str(ws.scratch(f"starts-{model}") / "cache.db")
            cold = [run_tinygrad(ws, config, 1.0, env={"CACHEDB": cache}, before=before)]
            warm = [run_tinygrad(ws, config, 1.0, env={"CACHEDB": cache}, before=before) for _ in range(warm_runs)]
            report.rows += [_row(model, side, "cold", cold), _row(model, side, "warm", warm)]
            everything += cold + warm
            details[f"{model} {side}"] = {"cold": [asdict(f) for f in cold], "warm": [asdict(f) for f in warm]}
        if torch_available():
            torch = [run_torch(ws, config, 1.0, threads=1) for _ in range(warm_runs)]
            report.rows.append(_row(model, TORCH_1, "-", torch))
            details[f"{model} torch"] = [asdict(f) for f in torch]
            everything += torch
    for f in everything:
        if f.error:
            report.status = "partial"
            report.notes.append(f"{f.framework} {f.model} failed: {f.error}")
    report.notes += [
        "Runs log every step (mlp 30 steps, convnet 4), evaluate 100 images at the end; cold = an empty kernel cache "
        "and step cache, warm = the runs after it on the same caches (a default run after `make setup` is warm). "
        f"'{BEFORE}' rows: the function at the --before revision, on caches of its own.",
        "spawn to steady: the first metric (step 1) less one steady step, measured from spawning the process.",
    ]
    report.details = details
    return report
