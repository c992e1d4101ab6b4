"""How training throughput grows with the batch: steady samples/s against batch size, tinygrad beside PyTorch.

Each point is a short real run of each side (the training function; PyTorch on one thread, the fair baseline for
tinygrad's one-core CPU kernels; and the function at `--before REV` when asked), interleaved, same model, data,
batches and optimizer; the figure is the steady samples/s between metric lines (warm-up excluded). The BEAM-found
kernel options ship for some batch sizes only (`trainer_tinygrad/kernel_opts.json`); elsewhere tinygrad's heuristics
compile the step, and the `tuned` column says which.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from trainer_tinygrad import kernel_opts

from benchmarks.machine import torch_available
from benchmarks.measurements import median, ratio
from benchmarks.results import Report
from benchmarks.training import BEFORE, TORCH_1, RunFigures, run_tinygrad, run_torch, spec_for
from benchmarks.workspace import Workspace

COLUMNS = [
    ("model", "model"),
    ("batch", "batch"),
    ("tuned", "tuned kernels"),
    ("tinygrad", "tinygrad samples/s"),
    ("before", "before samples/s"),
    ("torch", "torch 1 thread samples/s"),
    ("ratio", "tinygrad / torch"),
    ("ratio_before", "before / torch"),
    ("per_sample_us", "tinygrad us per sample"),
]

PLAN = {"mlp": ((32, 64, 128, 256, 512), 300, 30), "convnet": ((32, 64, 128, 256), 8, 2)}
QUICK = {"mlp": ((64, 128), 40, 10)}


def benchmark(ws: Workspace) -> Report:
    """Run every (model, batch) point; returns the report."""
    report = Report("growth", "Training throughput against batch size, tinygrad vs PyTorch (1 thread)", COLUMNS)
    details: dict[str, Any] = {}
    tuned = set(kernel_opts.table().get("configs", []))
    for model, (batches, steps, log_every) in (QUICK if ws.options.quick else PLAN).items():
        cache = str(ws.scratch(f"growth-{model}") / "cache.db")
        before_cache = str(ws.scratch(f"growth-{model}-before") / "cache.db")
        for batch in batches:
            config = spec_for(
                model, batch_size=batch, steps=steps, log_every=log_every, checkpoint_every=steps, eval_samples=100
            )
            runs: dict[str, list[RunFigures]] = {"tinygrad": [], TORCH_1: [], BEFORE: []}
            for _ in range(1 if ws.options.quick else 2):
                runs["tinygrad"].append(run_tinygrad(ws, config, 1.0, env={"CACHEDB": cache}))
                if ws.options.before:
                    runs[BEFORE].append(run_tinygrad(ws, config, 1.0, env={"CACHEDB": before_cache}, before=True))
                if torch_available():
                    runs[TORCH_1].append(run_torch(ws, config, 1.0, threads=1))
            sps = {k: median([f.samples_per_s for f in v if f.samples_per_s]) for k, v in runs.items()}
            report.rows.append(
                {
                    "model": model,
                    "batch": batch,
                    "tuned": f"{model}/{batch}" in tuned,
                    "tinygrad": sps["tinygrad"],
                    "before": sps[BEFORE],
                    "torch": sps[TORCH_1],
                    "ratio": ratio(sps["tinygrad"], sps[TORCH_1]),
                    "ratio_before": ratio(sps[BEFORE], sps[TORCH_1]),
                    "per_sample_us": None if not sps["tinygrad"] else 1e6 / sps["tinygrad"],
                }
            )
            details[f"{model}-{batch}"] = {k: [asdict(f) for f in v] for k, v in runs.items()}
            for f in (f for v in runs.values() for f in v if f.error):
                report.status = "partial"
                report.notes.append(f"{f.framework} {model} batch {batch} failed: {f.error}")
    report.notes += [
        "mlp: 300 steps a run, convnet 8; medians of 2 interleaved runs per side. Steady "
        "samples/s between metric lines; Fashion-MNIST, Adam 1e-3, the same seeded batches on both sides.",
        "tuned kernels: whether the step's big kernels have BEAM-found options shipped for that model and batch size "
        "(the `configs` of trainer_tinygrad/kernel_opts.json); elsewhere tinygrad's heuristics.",
    ]
    report.details = details
    return report
