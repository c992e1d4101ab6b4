"""The training function with tinygrad's CPU thread pieces run in parallel: a measurement of what threading could give.

    python -m benchmarks.threaded_trainer train --config - --out DIR ...   (the trainer's own arguments)

Why tinygrad 0.14's CPU kernels use one core: its heuristics (and BEAM) split a big kernel into `NUM_CPU_THREADS`
pieces, each taking a `core_id`, but `CPUProgram.__call__` (tinygrad/runtime/ops_cpu.py) then runs the pieces one
after another in the calling thread; the HCQ2 path queues them to a single worker. Setting `NUM_CPU_THREADS` only
changes how a kernel is cut, never how many cores run it. This harness replaces that loop with a thread pool (ctypes
releases the GIL during the call, and the pieces write disjoint outputs, so results are bit-identical), then runs
the unchanged trainer. A benchmark harness only: the function itself keeps tinygrad's runtime as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tinygrad.helpers import NUM_CPU_THREADS
from tinygrad.runtime import ops_cpu


def parallel_pieces(workers: int) -> None:
    """Make `CPUProgram` run a threaded kernel's pieces on `workers` threads at once."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tinygrad-cpu")
    serial = ops_cpu.CPUProgram.__call__

    def call(self: Any, *bufs: Any, global_size: Any = (1, 1, 1), local_size: Any = (1, 1, 1), vals: Any = (),
             wait: bool = False, timeout: Any = None) -> float | None:  # fmt: skip
        slot = self.runtimevars.get("core_id")
        if slot is None or global_size[0] == 1 or self.lvp:
            return serial(self, *bufs, global_size=global_size, local_size=local_size, vals=vals, wait=wait)
        args = [*[b.va_addr for b in bufs], *vals]

        def piece(core: int) -> None:
            mine = list(args)
            mine[slot] = core
            self.fxn(*[ctypes.c_uint64(x) for x in mine])

        began = time.perf_counter()
        list(pool.map(piece, range(global_size[0])))
        return time.perf_counter() - began if wait else None

    ops_cpu.CPUProgram.__call__ = call  # type: ignore[method-assign]


def main() -> int:
    """Patch, then hand over to the trainer's own entry point with the same arguments."""
    parallel_pieces(int(os.environ.get("THREADED_TRAINER_WORKERS", NUM_CPU_THREADS.value)))
    from trainer_tinygrad.__main__ import main as trainer_main

    return trainer_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
