"""`--fuzz`: Schemathesis as a check family of the suite, against the real server and a proxy that breaks it.

Runs where Schemathesis is installed (the `py` tox environment, with the suite's fuzz extra). The suite's phases here
are bounded by examples (`fuzz_examples`), not time: one pass of a few examples per operation tests every operation, on
a fast machine and a loaded one alike (a 10-second budget tested 7 operations once while `make test` loaded the cores),
in about 3 seconds instead of 10. The time budget (`--fuzz-seconds`, Schemathesis' `--max-time`) has its own test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance_harness import QUICK_EVAL, RunningServer
from server_harness import CONTRACT
from tampering_proxy import Tamper, TamperingProxy
from trainer_conformance import Options, run_suite
from trainer_conformance.fuzzing import run_phase

pytest.importorskip("schemathesis")
pytestmark = pytest.mark.slow

EXAMPLES = 10
#: The fuzz phases need a run, not a long one.
MAIN = {"steps": 40, **QUICK_EVAL}
#: Every operation the served /openapi.json documents: the positive phase tests all of them but POST /api/training/runs.
OPERATIONS = sum(
    len(set(item) & {"get", "post", "put", "patch", "delete"}) for item in CONTRACT.openapi()["paths"].values()
)


class AcceptsInvalidRuns(Tamper):
    """A request to start a run that the server refused as invalid is answered 201 instead."""

    def status(self, method: str, path: str, status: int) -> int:
        invalid = method == "POST" and path == "/api/training/runs" and status in (400, 422)
        return 201 if invalid else status


@pytest.mark.xdist_group("fuzz-a")  # two groups: see tests/fuzz/test_schemathesis.py
def test_valid_requests_generated_from_the_served_openapi_are_served_as_documented(
    reference_server: RunningServer, tmp_path: Path
) -> None:
    options = Options(base_url=reference_server.url, main_request=MAIN, fuzz_examples=EXAMPLES)
    outcome = run_suite(options, out=tmp_path, patterns=["fuzz.positive"])
    assert outcome.report is not None and outcome.folder is not None, outcome.line
    check = outcome.report["checks"][0]
    assert check["status"] == "passed", check
    assert check["details"]["operations_tested"] == OPERATIONS - 1, check  # all but POST /api/training/runs
    assert check["details"]["stop_reason"] == "completed" and check["details"]["test_cases"] > 100, check
    assert (outcome.folder / "fuzz/positive/junit.xml").is_file()


@pytest.mark.xdist_group("fuzz-b")
def test_a_server_that_accepts_invalid_runs_fails_the_negative_phase(
    reference_server: RunningServer, tmp_path: Path
) -> None:
    with TamperingProxy(reference_server.url, AcceptsInvalidRuns()) as proxy:
        options = Options(base_url=proxy.url, main_request=MAIN, fuzz_examples=EXAMPLES)
        outcome = run_suite(options, out=tmp_path, patterns=["fuzz.negative"])
    assert outcome.report is not None and outcome.folder is not None, outcome.line
    check = outcome.report["checks"][0]
    assert check["status"] == "failed" and "POST /api/training/runs" in check["message"], check
    assert "fuzz/negative/junit.xml" in check["evidence"]


@pytest.mark.xdist_group("fuzz-b")
def test_a_time_budget_keeps_generating_until_it_is_spent(reference_server: RunningServer, tmp_path: Path) -> None:
    # --fuzz-seconds: Schemathesis' --max-time, which goes on past the examples' first pass until the budget ends.
    phase = run_phase(reference_server.url, "positive", tmp_path, run_id=None, seconds=2, examples=1,
                      exclude=("POST /api/training/runs",))  # fmt: skip
    assert phase.error is None and phase.returncode == 0 and not phase.failures, phase
    # How much a 2-s budget tests depends on the machine's load (under `make test`, once, nothing: loading the
    # specification took it all); that it stopped for the budget, and only for it, does not.
    assert phase.report["stop_reason"] == "max_time" and 2 <= phase.seconds < 60, phase.report
    assert "--max-time 2 " in phase.report["command"] and "--max-examples 1 " in phase.report["command"]
