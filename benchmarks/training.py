"""Benchmark 1: the training function vs PyTorch on the same model, data, batches and optimizer.

Both sides run as child processes printing the same protocol lines; the parent timestamps each line as it arrives,
so both are measured with one clock and one parser:
- steady-state samples/s: median over the intervals between consecutive `metric` lines with no evaluation inside
  and not the first one (which holds the compilation);
- warm-up: spawn to the first `metric`, less what that many steady steps take: imports, data loading and
  compilation, wherever the process does them (the trainer compiles before `started` since commit ea9061a); a
  cold run uses a fresh, empty kernel cache, the warm ones reuse it;
- time to accuracy: spawn to the first evaluation at or above the target (everything a user waits for: imports,
  data loading, compilation, training and the evaluations on the way), and its steady training part (steps to
  the target times the steady step time);
- peak memory and CPU time: the kernel's rusage of the child (`os.wait4`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from trainer_tinygrad.config import resolve_config

from benchmarks.machine import torch_available
from benchmarks.measurements import ChildRun, median, ratio, run_child
from benchmarks.results import Report
from benchmarks.workspace import Workspace

TARGETS = {"mlp": 0.85, "convnet": 0.89}
TORCH_1 = "torch, 1 thread"
BEFORE = "tinygrad (before)"
COLUMNS = [
    ("model", "model"),
    ("framework", "framework"),
    ("batch", "batch"),
    ("samples_per_s", "train samples/s"),
    ("warmup_cold_s", "spawn to steady, cold (s)"),
    ("warmup_warm_s", "spawn to steady, warm (s)"),
    ("time_to_target_s", "time to target (s)"),
    ("train_time_to_target_s", "of which steady training (s)"),
    ("steps_to_target", "steps to target"),
    ("final_accuracy", "final test acc"),
    ("eval_samples_per_s", "eval samples/s"),
    ("peak_rss_mib", "peak RSS (MiB)"),
    ("cpu_per_wall", "CPU s / wall s"),
]


@dataclass
class RunFigures:
    """What one training run measured (None where the run did not get that far)."""

    framework: str
    model: str
    batch_size: int
    steps_done: int
    returncode: int
    stopped_early: bool
    startup_s: float | None
    warmup_s: float | None
    step_s: float | None
    samples_per_s: float | None
    target: float
    time_to_target_s: float | None
    train_time_to_target_s: float | None
    steps_to_target: int | None
    final_accuracy: float | None
    best_accuracy: float | None
    peak_rss_mib: float
    cpu_s: float
    wall_s: float
    windows: int
    reported_samples_per_s: float | None = None  # the process's own figure: median of its metric lines, first left out
    error: str | None = None


def analyse(run: ChildRun, framework: str, config: dict[str, Any], target: float) -> RunFigures:
    """Turn a run's timestamped lines into figures (see the module docstring for the definitions)."""
    batch = int(config["batch_size"])
    started = run.events("started")
    metrics = [(t, int(e["step"])) for t, e in run.events("metric")]
    evals = [(t, int(e["step"]), float(e["eval_accuracy"])) for t, e in run.events("checkpoint")]
    failed = run.events("failed")
    error = failed[0][1].get("reason") if failed else None
    if error is None and run.returncode not in (0, 3):
        error = f"exit {run.returncode}: {run.stderr_tail[-500:]}"
    eval_times = [t for t, _, _ in evals]
    durations = []
    for (t0, s0), (t1, s1) in itertools.pairwise(metrics):
        if not any(t0 < te < t1 for te in eval_times):
            durations.append((t1 - t0) / (s1 - s0))
    step_s = median(durations)
    t_started = started[0][0] if started else None
    warmup = None
    if metrics and step_s is not None:
        warmup = max(0.0, (metrics[0][0] - run.start) - metrics[0][1] * step_s)
    hit = next(((t, s) for t, s, acc in evals if acc >= target), None)
    time_to, train_to = None, None
    if hit is not None:
        time_to = hit[0] - run.start
        train_to = None if step_s is None else hit[1] * step_s
    accuracies = [acc for _, _, acc in evals]
    steps_done = max([s for _, s in metrics] + [s for _, s, _ in evals] + [0])
    return RunFigures(
        framework=framework,
        model=str(config["model"]),
        batch_size=batch,
        steps_done=steps_done,
        returncode=run.returncode,
        stopped_early=run.stopped_early,
        startup_s=None if t_started is None else t_started - run.start,
        warmup_s=warmup,
        step_s=step_s,
        samples_per_s=None if step_s is None else batch / step_s,
        target=target,
        time_to_target_s=time_to,
        train_time_to_target_s=train_to,
        steps_to_target=None if hit is None else hit[1],
        final_accuracy=accuracies[-1] if accuracies else None,
        best_accuracy=max(accuracies) if accuracies else None,
        peak_rss_mib=run.max_rss_mib,
        cpu_s=run.cpu_s,
        wall_s=run.wall_s,
        windows=len(durations),
        reported_samples_per_s=median([float(e["samples_per_second"]) for _, e in run.events("metric")][1:]),
        error=error,
    )


def spec_for(model: str, **overrides: Any) -> dict[str, Any]:
    """A resolved config for Fashion-MNIST, through the service's own resolver."""
    return resolve_config({"model": model, "dataset": "fashion-mnist", **overrides}, "fashion-mnist")


def run_tinygrad(
    ws: Workspace,
    config: dict[str, Any],
    target: float,
    *,
    env: dict[str, str] | None = None,
    budget_s: float | None = None,
    stop_at_target: bool = False,
    before: bool = False,
    module: str = "trainer_tinygrad",
) -> RunFigures:
    """One run of the training function as the server starts it: `python -m trainer_tinygrad train`.

    `before`: the function as it was at `--before REV` (first on PYTHONPATH), instead of this checkout's; `module`:
    another entry point taking the trainer's arguments (`benchmarks.threaded_trainer`)."""
    out = ws.scratch("tinygrad-run")
    flag, extra = "--config", dict(env or {})
    if before:
        code = ws.before_path()
        assert code is not None, "before=True needs --before REV"
        extra["PYTHONPATH"] = os.pathsep.join([str(code), ws.env()["PYTHONPATH"]])
        if '"--config"' not in (code / "trainer_tinygrad" / "__main__.py").read_text(encoding="utf-8"):
            flag = "--spec"  # the name before the config was called config at the process boundary
    argv = [ws.python, "-m", module, "train", flag, "-", "--out", str(out), "--data-dir", str(ws.data_dir)]
    run = run_child(
        argv, env=ws.env(**extra), stdin_text=json.dumps(config), budget_s=budget_s,
        stop_when=_reached(target) if stop_at_target else None,
    )  # fmt: skip
    return analyse(run, BEFORE if before else "tinygrad", config, target)


def run_torch(
    ws: Workspace,
    config: dict[str, Any],
    target: float,
    *,
    threads: int | None = None,
    budget_s: float | None = None,
    stop_at_target: bool = False,
) -> RunFigures:
    """One run of the PyTorch reference (`benchmarks.torch_reference`)."""
    argv = [ws.python, "-m", "benchmarks.torch_reference", "train", "--config", "-", "--data-dir", str(ws.data_dir)]
    if threads:
        argv += ["--threads", str(threads)]
    run = run_child(
        argv, env=ws.env(), stdin_text=json.dumps(config), budget_s=budget_s,
        stop_when=_reached(target) if stop_at_target else None,
    )  # fmt: skip
    return analyse(run, "torch", config, target)


def _reached(target: float) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == "checkpoint" and float(line.get("eval_accuracy", 0)) >= target


def eval_speed(ws: Workspace, framework: str, model: str, images: int, repeats: int) -> dict[str, Any]:
    """Evaluation samples/s of one framework: a child times its evaluator on the first `images` test images."""
    if framework == "tinygrad":
        argv = [ws.python, "-m", "benchmarks.tinygrad_eval"]
    else:
        argv = [ws.python, "-m", "benchmarks.torch_reference", "eval"]
    argv += ["--model", model, "--images", str(images), "--repeats", str(repeats), "--data-dir", str(ws.data_dir)]
    run = run_child(argv, env=ws.env())
    timing = next((e for _, e in run.lines if e.get("event") == "eval_timing"), None)
    if timing is None:
        return {"error": f"exit {run.returncode}: {run.stderr_tail[-500:]}"}
    per_call = median(timing["times_s"])
    return {**timing, "samples_per_s": images / per_call if per_call else None, "peak_rss_mib": run.max_rss_mib}


def compare(
    ws: Workspace,
    model: str,
    config: dict[str, Any],
    repeats: int,
    *,
    budget_s: float | None = None,
    stop_at_target: bool = False,
    torch_1_thread: bool = False,
) -> dict[str, list[RunFigures]]:
    """`repeats` interleaved runs per framework (tinygrad, torch, tinygrad, ...): the first tinygrad run starts
    from an empty kernel cache, the later ones reuse it. `torch_1_thread` adds PyTorch on one thread: on a shared
    2-core machine its default two threads can wait on each other (tinygrad's CPU kernels run on one core)."""
    target = TARGETS[model]
    kernel_cache = ws.scratch("kernel-cache") / "cache.db"  # the step cache lives beside it: cold, then warm
    before_cache = ws.scratch("kernel-cache-before") / "cache.db"
    runs: dict[str, list[RunFigures]] = {"tinygrad": [], "torch": []}
    if torch_1_thread:
        runs[TORCH_1] = []
    if ws.options.before:
        runs[BEFORE] = []
    for _ in range(repeats):
        runs["tinygrad"].append(
            run_tinygrad(
                ws, config, target, env={"CACHEDB": str(kernel_cache)}, budget_s=budget_s, stop_at_target=stop_at_target
            )
        )
        if ws.options.before:
            runs[BEFORE].append(
                run_tinygrad(
                    ws, config, target, env={"CACHEDB": str(before_cache)}, budget_s=budget_s,
                    stop_at_target=stop_at_target, before=True,
                )
            )  # fmt: skip
        if torch_available():
            runs["torch"].append(run_torch(ws, config, target, budget_s=budget_s, stop_at_target=stop_at_target))
            if torch_1_thread:
                runs[TORCH_1].append(run_torch(ws, config, target, threads=1, budget_s=budget_s))
    return runs


def summarise(model: str, runs: dict[str, list[RunFigures]], evals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows: one per framework (medians over repeats), then tinygrad / torch as ratios."""
    rows: list[dict[str, Any]] = []
    for framework, figures in runs.items():
        if not figures:
            continue
        warm = [f.warmup_s for f in figures[1:] if f.warmup_s is not None]
        reached = [f.time_to_target_s for f in figures if f.time_to_target_s is not None]
        rows.append(
            {
                "model": model,
                "framework": framework,
                "batch": figures[0].batch_size,
                "samples_per_s": median([f.samples_per_s for f in figures if f.samples_per_s]),
                "warmup_cold_s": figures[0].warmup_s
                if framework.startswith("tinygrad")
                else median([f.warmup_s for f in figures if f.warmup_s is not None]),
                "warmup_warm_s": median(warm) if framework.startswith("tinygrad") else None,
                "time_to_target_s": median(reached) if len(reached) == len(figures) else None,
                "train_time_to_target_s": median(
                    [f.train_time_to_target_s for f in figures if f.train_time_to_target_s is not None]
                )
                or None,
                "steps_to_target": figures[0].steps_to_target,
                "final_accuracy": median([f.final_accuracy for f in figures if f.final_accuracy is not None]),
                "eval_samples_per_s": evals.get(framework, {}).get("samples_per_s"),
                "peak_rss_mib": median([f.peak_rss_mib for f in figures]),
                "cpu_per_wall": median([f.cpu_s / f.wall_s for f in figures if f.wall_s]),
            }
        )
    by_name = {row["framework"]: row for row in rows}
    pairs_wanted = [("tinygrad", other) for other in by_name if other != "tinygrad"]
    pairs_wanted += [(BEFORE, other) for other in by_name if BEFORE in by_name and other.startswith("torch")]
    for mine, other in pairs_wanted:
        tiny, torch = by_name[mine], by_name[other]
        pairs = list(zip(runs[mine], runs[other], strict=False))
        rows.append(
            {
                "model": model,
                "framework": f"ratio {mine}/{other}",
                "samples_per_s": median([r for a, b in pairs if (r := ratio(a.samples_per_s, b.samples_per_s))]),
                "time_to_target_s": ratio(tiny["time_to_target_s"], torch["time_to_target_s"]),
                "train_time_to_target_s": ratio(tiny["train_time_to_target_s"], torch["train_time_to_target_s"]),
                "eval_samples_per_s": ratio(tiny["eval_samples_per_s"], torch["eval_samples_per_s"]),
                "peak_rss_mib": ratio(tiny["peak_rss_mib"], torch["peak_rss_mib"]),
            }
        )
    return rows


def benchmark(ws: Workspace) -> Report:
    """Run benchmark 1 as the options ask; returns its report."""
    opts = ws.options
    report = Report("training", "Training throughput and time to accuracy: training function vs PyTorch", COLUMNS)
    if not torch_available():
        report.status = "partial"
        report.notes.append("PyTorch is not installed (pip install -r benchmarks/requirements.txt): tinygrad only")
    details: dict[str, Any] = {}
    # mlp: to 85% within ~4 epochs, an evaluation on the whole test set every 100 steps.
    if opts.quick:
        mlp = spec_for("mlp", steps=30, checkpoint_every=30, eval_samples=1000)
        mlp_repeats, eval_images, eval_repeats = 1, 1000, 2
    else:
        mlp = spec_for("mlp", steps=2000, checkpoint_every=100)
        mlp_repeats, eval_images, eval_repeats = opts.repeats, 10_000, 5
    runs = compare(ws, "mlp", mlp, mlp_repeats, torch_1_thread=not opts.quick)
    evals = {fw: eval_speed(ws, fw, "mlp", eval_images, eval_repeats) for fw in _frameworks()}
    report.rows += summarise("mlp", runs, evals)
    details["mlp"] = {"config": mlp, "runs": _dump(runs), "eval": evals}
    if not opts.quick and opts.convnet_steps > 0:
        # convnet throughput: short runs, evaluation only at the end on 1000 images.
        conv = spec_for("convnet", steps=opts.convnet_steps, checkpoint_every=opts.convnet_steps, eval_samples=1000)
        conv_runs = compare(ws, "convnet", conv, 2, torch_1_thread=True)
        conv_evals = {fw: eval_speed(ws, fw, "convnet", 2000, 3) for fw in _frameworks()}
        report.rows += summarise("convnet", conv_runs, conv_evals)
        details["convnet"] = {"config": conv, "runs": _dump(conv_runs), "eval": conv_evals, "raw": conv_runs}
        report.notes.append(
            f"convnet throughput rows: {opts.convnet_steps}-step runs (cold, then warm kernel cache), evaluation "
            "speed on 2,000 test images; time to 89% is in the next rows when a budget was given."
        )
    if not opts.quick and opts.convnet_accuracy_budget_s > 0:
        acc = spec_for("convnet", steps=4000, checkpoint_every=250)
        acc_runs = compare(ws, "convnet", acc, 1, budget_s=opts.convnet_accuracy_budget_s, stop_at_target=True)
        rows = summarise("convnet (to 89%)", acc_runs, {})
        report.rows += rows
        details["convnet_accuracy"] = {"config": acc, "runs": _dump(acc_runs), "raw": acc_runs}
        for fw, figures in acc_runs.items():
            for f in figures:
                if f.time_to_target_s is None:
                    report.notes.append(
                        f"convnet {fw}: 89% not reached within the {opts.convnet_accuracy_budget_s:.0f} s budget "
                        f"({f.steps_done} steps, best test accuracy {f.best_accuracy})"
                    )
    report.notes += [
        "mlp: Fashion-MNIST, batch 128, Adam 1e-3, 2,000 steps, evaluation on all 10,000 test images every 100 steps; "
        f"medians of {mlp_repeats} interleaved runs per framework; ratios are medians of the per-pair ratios.",
        "time to target: from spawning the process to the first evaluation at or above 85% (mlp) / 89% (convnet), "
        "including imports, data loading, compilation and the evaluations on the way; 'of which steady training' is "
        "the steps to the target times the steady step time.",
        "spawn to steady: from spawning the process to its first metric line, less that many steady steps (imports, "
        "data loading, compilation); cold = an empty tinygrad kernel cache (CACHEDB), warm = the same cache again.",
        "peak RSS and CPU/wall from the kernel's rusage of each child process; torch uses its default thread count.",
    ]
    groups = [runs, *(g for key in ("convnet", "convnet_accuracy") if key in details for g in [details[key]["raw"]])]
    for group in groups:
        for f in (f for figures in group.values() for f in figures):
            if f.error:
                report.status = "partial"
                report.notes.append(f"{f.framework} {f.model} run failed: {f.error}")
    for key in ("convnet", "convnet_accuracy"):
        details.get(key, {}).pop("raw", None)
    report.details = details
    return report


def _frameworks() -> list[str]:
    return ["tinygrad", "torch"] if torch_available() else ["tinygrad"]


def _dump(runs: dict[str, list[RunFigures]]) -> dict[str, list[dict[str, Any]]]:
    return {fw: [asdict(f) for f in figures] for fw, figures in runs.items()}
