"""The reference server as a subprocess, for the conformance integration tests (imported by their conftest)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

#: What a short main run adds to its request where the test is about something else than the default run: its
#: checkpoints evaluated on the first 1,000 test images, not all 10,000 (~0.15 s less each on two slow cores; the
#: `conformance_broken` module 30-31 CPU-s instead of 36-37). The default run keeps the full evaluation.
QUICK_EVAL = {"eval_samples": 1000}


@dataclass
class RunningServer:
    """A reference server process and where it keeps its evidence."""

    url: str
    evidence_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
