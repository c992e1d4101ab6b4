"""`benchmarks.vector_width` against machine code whose vector width is known: a clang-compiled function of 8-lane
fused multiply-adds and one of scalar ones."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmarks.vector_width import fma_lanes, fma_peak

needs_tools = pytest.mark.skipif(
    shutil.which("clang") is None or shutil.which("objdump") is None, reason="clang and objdump (binutils) needed"
)

SOURCE = """
typedef float v8 __attribute__((ext_vector_type(8)));
v8 wide(v8 a, v8 b, v8 c) { return a * b + c; }
float narrow(float a, float b, float c) { return a * b + c; }
"""


def compiled(flags: list[str]) -> bytes:
    argv = ["clang", "-c", "-x", "c", "-O2", "-ffp-contract=fast", *flags, "-", "-o", "-"]
    return subprocess.run(argv, input=SOURCE.encode(), capture_output=True, check=True).stdout


@needs_tools
def test_fma_lanes_counts_each_width_once() -> None:
    assert fma_lanes(compiled(["-mavx2", "-mfma"])) == {8: 1, 1: 1}


@needs_tools
def test_code_without_fma_counts_nothing() -> None:
    assert fma_lanes(compiled(["-mno-fma"])) == {}


@needs_tools
def test_fma_peak_measures_three_widths() -> None:
    peak = fma_peak(200_000)
    assert set(peak) == {4, 8, 16} and all(g > 0 for g in peak.values())
