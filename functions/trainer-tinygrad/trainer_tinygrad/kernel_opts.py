"""Kernel optimizations found by BEAM search ahead of time and shipped with the function, so that no run searches.

tinygrad's BEAM search picks, per kernel, the loop transformations (upcasts, unrolls, thread splits) that run fastest
on this CPU. Searching costs minutes per model, so it is done once, by `python -m trainer_tinygrad.tune`, and the
options it chose live in `kernel_opts.json`, keyed by the device and each kernel's AST hash. While a step is
compiled, `applied()` makes tinygrad take a listed kernel's options from that table and its own heuristics for every
other kernel. The compiled step is then the same on every run (same seed, same bits), and a run never pays a search.

The hook: tinygrad asks `tinygrad.codegen.opt.search.beam_search` for a kernel's options whenever the BEAM level is
at least 1; `applied()` sets BEAM=1 and puts a table lookup in its place for the duration. tinygrad is pinned to one
version (pyproject), and `tests/trainer/test_kernel_opts.py` fails if the hook stops being called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
from tinygrad.helpers import NOOPT, Context
from tinygrad.uop.ops import KernelInfo, Ops

log = logging.getLogger(__name__)

TABLE = Path(__file__).with_name("kernel_opts.json")
#: Set to 0 to compile with tinygrad's heuristics only (the benchmarks' baseline).
ENV = "TRAINER_KERNEL_OPTS"


def enabled() -> bool:
    """Whether the shipped options are used (default yes; `TRAINER_KERNEL_OPTS=0` turns them off)."""
    return os.environ.get(ENV, "1") != "0"


@cache
def table() -> dict[str, Any]:
    """The shipped table: `{"kernels": {device: {ast key hex: {"opts": [[op, axis, arg], ...], ...}}}, ...}`."""
    if not TABLE.is_file():
        return {"kernels": {}}
    return dict(json.loads(TABLE.read_text(encoding="utf-8")))


def digest() -> str:
    """What the compiled steps depend on here: the table's bytes when it is used, else "off"."""
    if not enabled() or not TABLE.is_file():
        return "off"
    return hashlib.sha256(TABLE.read_bytes()).hexdigest()[:16]


def kernel_key(s: Any) -> str:
    """A kernel's table key: the hash of its AST with the BEAM level left out (tuning and runs use different ones)."""
    ast = s.ast
    if isinstance(ast.arg, KernelInfo) and ast.arg.beam:
        ast = ast.replace(arg=dataclasses.replace(ast.arg, beam=0))
    return str(ast.key.hex())


def encode(opts: Any) -> list[list[Any]]:
    """tinygrad `Opt`s as JSON lists `[op name, axis, arg]`."""
    return [[o.op.name, o.axis, list(o.arg) if isinstance(o.arg, tuple) else o.arg] for o in opts]


def decode(rows: list[list[Any]]) -> list[Opt]:
    """The inverse of `encode`."""
    return [Opt(OptOps[op], axis, tuple(arg) if isinstance(arg, list) else arg) for op, axis, arg in rows]


def heuristic(s: Any) -> Any:
    """What tinygrad does without BEAM (`codegen/opt/postrange.apply_opts`): its hand-coded optimizations."""
    from tinygrad.codegen.opt.heuristic import hand_coded_optimizations

    ast = s.ast
    if NOOPT or not (ast.arg is None or ast.arg.applied_opts == ()):
        return s
    if any(u.op is Ops.STAGE for u in ast.backward_slice):
        return s
    return hand_coded_optimizations(s)


def lookup(kernels: Mapping[str, Any]) -> Any:
    """A stand-in for `beam_search` that applies the table's options for a listed kernel and the heuristics else."""
    counts = {"tuned": 0, "heuristic": 0}

    def choose(s: Any, rawbufs: Any, var_vals: Any, amt: int, *args: Any, **kwargs: Any) -> Any:
        entry = kernels.get(kernel_key(s))
        if entry is not None:
            tuned = s.copy()
            try:
                for opt in decode(entry["opts"]):
                    tuned.apply_opt(opt)
            except KernelOptError as e:  # e.g. a thread split this machine's core count does not allow
                log.warning("kernel %s: shipped options do not apply (%s); using the heuristics", entry.get("name"), e)
            else:
                counts["tuned"] += 1
                return tuned
        counts["heuristic"] += 1
        return heuristic(s)

    choose.counts = counts  # type: ignore[attr-defined]
    return choose


@contextlib.contextmanager
def applied(device: str) -> Iterator[dict[str, int]]:
    """Within this block, kernels compile with the shipped options where the table has them (counts yielded)."""
    from tinygrad.codegen.opt import search

    kernels = table().get("kernels", {}).get(device.split(":", maxsplit=1)[0], {}) if enabled() else {}
    if not kernels:
        yield {"tuned": 0, "heuristic": 0}
        return
    original = search.beam_search
    choose = lookup(kernels)
    search.beam_search = choose
    try:
        with Context(BEAM=1):
            yield choose.counts
    finally:
        search.beam_search = original
