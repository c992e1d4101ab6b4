"""Schemathesis against the target's own /openapi.json, one phase at a time, bounded in time or in examples (`--fuzz`).

Schemathesis is an optional extra (`pip install 'trainer-conformance[fuzz]'`); it runs as its own command, so its
dependencies never load into the suite. Each phase writes `fuzz/<mode>/`: the command's output, Schemathesis' JSON
run report and JUnit file (one testcase per operation, each failure with the request that reproduces it), and the
configuration it ran with. The configuration points `run_id` at the suite's main run, so the run endpoints reach
their real logic instead of 404s, and accepts the statuses the contract documents for state no schema can express
(a list cursor must come from an earlier page; a Last-Event-ID must not be past the run's last event).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Each phase's time budget (Schemathesis --max-time) unless --fuzz-seconds says otherwise.
DEFAULT_PHASE_SECONDS = 60.0
#: Examples per operation: enough for the coverage phase's boundary values and some random ones.
MAX_EXAMPLES = 50
#: Fixed, so a failure reproduces.
SEED = 20250101
#: Schemathesis overruns --max-time by the operation in flight; past this much more it is stopped.
OVERRUN_S = 120.0
#: A phase bounded by examples alone (--fuzz-examples without --fuzz-seconds) is stopped after this long.
PASS_LIMIT_S = 600.0
_CONFIG = """\
max-stream-events = 50

[parameters]
"path.run_id" = {run_id}
"query.run_id" = {run_id}

[[operations]]
include-path = "/api/training/runs"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

[[operations]]
include-path = "/api/events/training"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "503"]
"""


def schemathesis_config(run_id: str | None) -> str:
    """The Schemathesis configuration of a fuzz run (the suite's --fuzz and the project's own fuzz tests alike):
    run ids from one real run, and the statuses a schema-valid request may get that depend on state no schema can
    express (a list cursor must come from an earlier page; a Last-Event-ID must not be past the run's last event)."""
    return _CONFIG.format(run_id=json.dumps(run_id or "no-run-id"))


@dataclass
class FuzzPhase:
    """What one Schemathesis phase did and found."""

    mode: str
    returncode: int | None
    seconds: float
    files: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    #: Operation -> the failure texts Schemathesis wrote for it (each names the request that reproduces it).
    failures: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    @property
    def generated(self) -> int:
        """Test cases generated."""
        return int(self.report.get("test_cases", {}).get("generated", 0))

    @property
    def tested(self) -> int:
        """Operations tested."""
        return int(self.report.get("operations", {}).get("tested", 0))


def phase_seconds(seconds: float | None, examples: int | None) -> float | None:
    """A phase's time budget: `--fuzz-seconds` when given; none when `--fuzz-examples` alone bounds it; else
    DEFAULT_PHASE_SECONDS."""
    return seconds or (None if examples else DEFAULT_PHASE_SECONDS)


def fuzzing_available() -> str | None:
    """None when Schemathesis can run here, else why not (and how to get it)."""
    if importlib.util.find_spec("schemathesis") is None or _command() is None:
        return "--fuzz needs Schemathesis: pip install 'trainer-conformance[fuzz]'"
    return None


def _command() -> str | None:
    beside = Path(sys.executable).with_name("schemathesis")
    return str(beside) if beside.exists() else shutil.which("schemathesis")


def run_phase(
    base_url: str,
    mode: str,
    folder: Path,
    *,
    run_id: str | None,
    seconds: float | None,
    examples: int | None = None,
    token: str | None = None,
    exclude: tuple[str, ...] = (),
) -> FuzzPhase:
    """Run Schemathesis in `mode` (positive or negative) against `base_url`'s /openapi.json, writing into `folder`.

    With `seconds`, Schemathesis' `--max-time`: it generates `examples` (default MAX_EXAMPLES) per operation, then
    keeps generating more until the budget is spent. With `examples` alone, one pass of at most that many per
    operation, however long it takes (up to PASS_LIMIT_S): the same test cases on a fast machine and a loaded one.
    """
    command = _command()
    if command is None:
        return FuzzPhase(mode, None, 0.0, error=fuzzing_available())
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "schemathesis.toml"
    config.write_text(schemathesis_config(run_id))
    argv = [
        command, "--config-file", str(config), "run", f"{base_url.rstrip('/')}/openapi.json",
        "--mode", mode, "--phases", "examples,coverage,fuzzing", "--checks", "all",
        "--max-examples", str(examples or MAX_EXAMPLES), "--seed", str(SEED),
        "--generation-database", "none", "--workers", "1", "--request-timeout", "10", "--no-color",
        "--suppress-health-check", "filter_too_much",
        "--report", "junit,json", "--report-junit-path", str(folder / "junit.xml"),
        "--report-json-path", str(folder / "report.json"),
    ]  # fmt: skip
    if seconds is not None:
        argv += ["--max-time", str(max(1, round(seconds)))]
    for name in exclude:
        argv += ["--exclude-name", name]
    limit = PASS_LIMIT_S if seconds is None else seconds + OVERRUN_S
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, cwd=folder, check=False)
        returncode, output = done.returncode, done.stdout + done.stderr
        error = None
    except subprocess.TimeoutExpired as exc:
        budget = f"its limit of {limit:g} s" if seconds is None else f"its budget of {seconds:g} s + {OVERRUN_S:g} s"
        returncode, error = None, f"Schemathesis ran past {budget} and was stopped"
        output = _text(exc.stdout) + _text(exc.stderr)
    phase = FuzzPhase(mode, returncode, round(time.monotonic() - started, 3), error=error)
    # The token never reaches the evidence (Schemathesis sanitises its own output; the command line is ours).
    (folder / "output.txt").write_text(output.replace(token, "<redacted>") if token else output)
    phase.files = [p.name for p in sorted(folder.iterdir()) if p.is_file()]
    try:
        phase.report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        phase.report = {}
    phase.failures = _junit_failures(folder / "junit.xml")
    if returncode not in (0, 1) and phase.error is None:
        phase.error = f"Schemathesis exited {returncode}: {output.strip()[-500:]}"
    return phase


def _junit_failures(path: Path) -> dict[str, list[str]]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    found: dict[str, list[str]] = {}
    for case in root.iter("testcase"):
        texts = [(f.text or f.get("message") or "").strip() for f in [*case.iter("failure"), *case.iter("error")]]
        if texts:
            found[case.get("name", "?")] = texts
    return found


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode(errors="replace")
