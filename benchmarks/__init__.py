"""Benchmarks for trainer-tinygrad: `python -m benchmarks` (`make bench`); results in BENCHMARKS.md.

The public surface is the command line (`python -m benchmarks --help`); `benchmarks.suite` lists the benchmarks.
Nothing is imported here, so the child processes (`-m benchmarks.torch_reference`, `-m benchmarks.tinygrad_eval`)
start without loading the rest of the suite. PyTorch is a benchmark-only dependency (benchmarks/requirements.txt),
used only in those child processes.
"""

__all__: list[str] = []
