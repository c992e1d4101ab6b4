"""`python -m benchmarks.profiled_server ARGS...`: the reference server under cProfile, for finding its hot spots.

Takes exactly `python -m reference_server`'s arguments and runs its `main` in this process with cProfile on; at exit
(SIGTERM ends the server normally) the stats go to the file named by SERVER_PROFILE. cProfile sees the event loop's
thread only: the worker threads the server uses for file reads are not in it. Its per-call overhead inflates the
cost of small functions, so the profile says where time goes, not how long a request takes.
"""

from __future__ import annotations

import cProfile
import os
import sys

from reference_server.__main__ import main


def profiled(argv: list[str], out: str) -> int:
    """Run the server with `argv` under cProfile; stats written to `out` however it ends."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main(argv)
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    sys.exit(profiled(sys.argv[1:], os.environ["SERVER_PROFILE"]))
