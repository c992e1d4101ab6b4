"""The CPU device's own programs, kept in the step cache, so that opening the device compiles nothing.

tinygrad's CPU device (0.14, `tinygrad/runtime/ops_cpu.py`) renders and compiles four small programs of its own each
time a process opens it (its worker's signal, wait, timestamp and loop), through tinygrad's whole code generator:
~0.2 s of opening it here, the same bits every time. A start is ~0.1 s shorter with them cached (a trainer's 1.32
against 1.44 s, a `device` probe's 0.70 against 0.76 s): the rest moves to the first kernel, which compiles the
pattern matchers that these programs compiled first. `install` puts a cache
in front of the one function the device calls for them (`do_to_program`, as ops_cpu imported it): a program is
looked up in the step cache by its AST's hash, the renderer's target, tinygrad's version and the CPU (`step_cache.key`);
a miss compiles as before and saves the result. tinygrad has no cache of its own for this step: its kernel cache
(CACHEDB) keeps the compiler's output, but the code generation before it runs every time.

Nothing else goes through it: kernels of models and steps are compiled by tinygrad's scheduler, which calls its own
`do_to_program`, untouched.
"""

from __future__ import annotations

from typing import Any

from trainer_tinygrad import step_cache
from trainer_tinygrad.protocol import tinygrad_version


class _Program:
    """What the device uses of `do_to_program`'s result: its ELF."""

    def __init__(self, elf: Any) -> None:
        self._elf = elf

    def to_elf(self) -> Any:
        return self._elf


def install() -> bool:
    """Cache the CPU device's programs when the device asked for (DEV) is the CPU; True when installed. Call it before
    the device is opened: an open device has compiled them already."""
    from tinygrad.helpers import DEV

    if DEV.device != "CPU":  # another device, or tinygrad's own choice: nothing to import the CPU runtime for
        return False
    from tinygrad.device import TinyELF
    from tinygrad.runtime import ops_cpu

    compile_program = getattr(ops_cpu, "do_to_program", None)  # tinygrad is pinned; another one may not have it
    if compile_program is None or getattr(compile_program, "cached", False):
        return compile_program is not None

    def do_to_program(ast: Any, renderer: Any) -> Any:
        name = step_cache.key(kind="cpu-device", program=ast.key.hex(), target=repr(renderer.target),
                              tinygrad=tinygrad_version())  # fmt: skip
        elf = step_cache.load(name)
        if isinstance(elf, TinyELF):
            return _Program(elf)
        program = compile_program(ast, renderer)
        step_cache.save(name, program.to_elf())
        return program

    do_to_program.cached = True  # type: ignore[attr-defined]
    ops_cpu.do_to_program = do_to_program
    return True
