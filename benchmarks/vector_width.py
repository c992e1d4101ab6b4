"""How wide the CPU's vector arithmetic is in the compiled training step, against how wide this CPU can go.

    python -m benchmarks.vector_width

The convnet's big kernels stopped getting faster at ~50-60 GFLOPS whatever their formulation (levers table). This
module says why with two measurements, so that the claim can be re-checked on another machine or tinygrad:

- `fma_peak`: GFLOPS of a loop of independent fused multiply-adds, 4, 8 and 16 float lanes wide, compiled by the
  same clang (`$CC`, default `clang`) with the same `-O2 -march=native` tinygrad uses (and `-ffp-contract=fast`, so
  that every multiply-add is one instruction): the ceiling of each width on one core.
- `fma_lanes`: the FMA instructions in a compiled kernel's machine code, counted by width (`objdump -d`): 1 lane
  (`ss`), 4 (`xmm`), 8 (`ymm`), 16 (`zmm`). x86-64 only: on other CPUs no instruction matches and the counts are
  empty.

Written here rather than taken from a library: no Python package reports a compiled object's vector widths or a
C loop's FMA throughput; `objdump` (binutils, which Debian's clang depends on) does the disassembly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

#: One loop of 12 independent accumulators per width (enough to hide the FMA latency), the multiplier kept opaque to
#: the optimizer so that the loop is not folded: in a vector register where the CPU has one that wide, else in memory
#: (a width wider than the registers, 16 lanes without AVX-512, or any width off x86-64, where "+v" means nothing and
#: clang rejects it); the store and load that costs sit beside the accumulators' chains, not on them.
PEAK_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef float v4 __attribute__((ext_vector_type(4)));
typedef float v8 __attribute__((ext_vector_type(8)));
typedef float v16 __attribute__((ext_vector_type(16)));
#if defined(__x86_64__)
#define KEEP4 "+v"
#else
#define KEEP4 "+m"
#endif
#if defined(__x86_64__) && defined(__AVX__)
#define KEEP8 "+v"
#else
#define KEEP8 "+m"
#endif
#if defined(__x86_64__) && defined(__AVX512F__)
#define KEEP16 "+v"
#else
#define KEEP16 "+m"
#endif
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define PEAK(T, W, KEEP) { T a[12]; T m = (T)1.0000001f, c = (T)1e-7f; \
  for (int i = 0; i < 12; i++) a[i] = (T)(float)i; \
  double t = now(); for (long k = 0; k < n; k++) { for (int i = 0; i < 12; i++) a[i] = a[i] * m + c; \
  __asm__ volatile("" : KEEP(m)); } t = now() - t; float s = 0; for (int i = 0; i < 12; i++) s += a[i][0]; \
  printf("%d %.3f %g\n", W, 2.0 * W * 12 * n / t / 1e9, s); }
int main(int argc, char **argv) {
  long n = atol(argv[1]); PEAK(v4, 4, KEEP4) PEAK(v8, 8, KEEP8) PEAK(v16, 16, KEEP16) return 0; }
"""

FMA = re.compile(r"\bvfn?m(?:add|sub)(?:132|213|231)(ps|ss)\b[^\n]*?%([xyz])mm")
LANES = {"x": 4, "y": 8, "z": 16}


def compiler() -> str:
    """The C compiler tinygrad's CPU backend runs (`$CC`, else clang)."""
    return os.environ.get("CC", "clang")


def fma_peak(iterations: int = 20_000_000) -> dict[int, float]:
    """{lanes: GFLOPS} of independent FMAs on one core, 4, 8 and 16 lanes wide; {} without a compiler."""
    if shutil.which(compiler()) is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "peak"
        subprocess.run(
            [compiler(), "-O2", "-march=native", "-ffp-contract=fast", "-x", "c", "-", "-o", str(binary)],
            input=PEAK_SOURCE.encode(), check=True, capture_output=True,
        )  # fmt: skip
        out = subprocess.run([str(binary), str(iterations)], check=True, capture_output=True, text=True).stdout
    return {int(lanes): float(gflops) for lanes, gflops, _ in (line.split() for line in out.splitlines())}


def fma_lanes(elf: bytes) -> dict[int, int] | None:
    """{lanes: FMA instructions} in a compiled object (1 for scalar); None where `objdump` is missing."""
    if shutil.which("objdump") is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".o") as obj:
        obj.write(elf)
        obj.flush()
        listing = subprocess.run(["objdump", "-d", obj.name], check=True, capture_output=True, text=True).stdout
    counts: Counter[int] = Counter()
    for match in FMA.finditer(listing):
        counts[1 if match[1] == "ss" else LANES[match[2]]] += 1
    return dict(counts)


def step_lanes(captured: Any) -> dict[str, dict[int, int]] | None:
    """{kernel name: {lanes: FMA instructions}} for a captured TinyJit on the CPU; None without `objdump` or for
    kernels that are not clang objects."""
    from tinygrad.uop.ops import Ops

    found: dict[str, dict[int, int]] = {}
    for call in captured.linear.src:
        ast = call.src[0]
        if ast.op is not Ops.PROGRAM:
            continue
        lib = ast.src[3].arg
        if not isinstance(lib, bytes) or not lib.startswith(b"\x7fELF"):
            return None
        counts = fma_lanes(lib)
        if counts is None:
            return None
        found[ast.arg.function_name] = counts
    return found


def main() -> int:
    """Print this machine's FMA ceilings per width as one JSON line."""
    print(json.dumps({"event": "fma_peak", "compiler": compiler(), "gflops": fma_peak()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
