"""The reference server as a subprocess, for the conformance integration tests (imported by their conftest)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunningServer:
    """A reference server process and where it keeps its evidence."""

    url: str
    evidence_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
