"""`python -m benchmarks [NAME ...] [--quick]`: run the benchmarks (all by default), print tables, save results."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.results import RESULTS_DIR
from benchmarks.suite import BENCHMARKS, ORDER, run, select
from benchmarks.workspace import Options


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 when a benchmark failed outright, 2 for bad arguments)."""
    listing = "\n".join(f"  {b.name:13} {b.summary}" for b in BENCHMARKS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog=f"benchmarks:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"run only these ({', '.join(ORDER)})")
    parser.add_argument("--quick", action="store_true", help="a short smoke version of each (results not kept)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results; a temp one for --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side for medians (default 3)")
    parser.add_argument("--convnet-steps", type=int, default=40, help="steps of each convnet throughput run")
    parser.add_argument(
        "--convnet-budget", type=float, default=900, metavar="SECONDS",
        help="wall budget per framework for the convnet's time to 89%% (0 skips it; default 900)",
    )  # fmt: skip
    parser.add_argument(
        "--before", metavar="REV",
        help="also run the training function (training, growth, starts) or the server with its training function "
        "(fanout, api_latency, memory, conformance) as it was at this git revision, side by side",
    )  # fmt: skip
    parser.add_argument(
        "--levers", metavar="GROUP,...", default="",
        help="levers: run only these groups (kernel_opts, step_cache, llvm, hcq2, threads, host_syncs, jit, "
        "winograd, conv_kernels, batch_sizes); the others' rows are carried over from the saved results",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        selected = select(args.names)
    except ValueError as e:
        parser.error(str(e))
    options = Options(
        quick=args.quick,
        repeats=max(1, args.repeats),
        convnet_steps=args.convnet_steps,
        convnet_accuracy_budget_s=args.convnet_budget,
        before=args.before,
        levers=tuple(g for g in args.levers.split(",") if g),
    )
    out = args.out or (Path(tempfile.gettempdir()) / "trainer-tinygrad-bench-quick" if args.quick else RESULTS_DIR)
    return run(selected, options, out)


if __name__ == "__main__":
    sys.exit(main())
