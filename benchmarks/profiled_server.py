"""`python -m benchmarks.profiled_server ARGS...`: the reference server under cProfile, for finding its hot spots.

Takes exactly `python -m reference_server`'s arguments and runs its `main` in this process with cProfile on; at exit
(SIGTERM ends the server normally) the stats go to the file named by SERVER_PROFILE, and every garbage collection's
pause (generation, milliseconds, objects collected) to SERVER_PROFILE + ".gc.json". cProfile sees the event loop's
thread only: the worker threads the server uses for file reads are not in it. Its per-call overhead inflates the
cost of small functions, so the profile says where time goes, not how long a request takes.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from reference_server.__main__ import main


def profiled(argv: list[str], out: str) -> int:
    """Run the server with `argv` under cProfile; stats written to `out` however it ends."""
    pauses: list[dict[str, Any]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - started[0]) * 1000
            pauses.append({"generation": info["generation"], "ms": ms, "collected": info["collected"]})

    gc.callbacks.append(on_gc)
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main(argv)
    finally:
        profile.disable()
        profile.dump_stats(out)
        gc.callbacks.remove(on_gc)
        Path(out + ".gc.json").write_text(json.dumps(pauses), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(profiled(sys.argv[1:], os.environ["SERVER_PROFILE"]))
