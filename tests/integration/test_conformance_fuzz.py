"""`--fuzz`: Schemathesis as a check family of the suite, against the real server and a proxy that breaks it.

Runs where Schemathesis is installed (the `fuzz` tox environment); each phase is bounded to a few seconds here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance_harness import RunningServer
from tampering_proxy import Tamper, TamperingProxy
from trainer_conformance import Options, run_suite

pytest.importorskip("schemathesis")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("conformance-fuzz")]

BUDGET_S = 10.0


class AcceptsInvalidRuns(Tamper):
    """A request to start a run that the server refused as invalid is answered 201 instead."""

    def status(self, method: str, path: str, status: int) -> int:
        invalid = method == "POST" and path == "/api/training/runs" and status in (400, 422)
        return 201 if invalid else status


def test_valid_requests_generated_from_the_served_openapi_are_served_as_documented(
    reference_server: RunningServer, tmp_path: Path
) -> None:
    options = Options(base_url=reference_server.url, main_request={"steps": 40}, fuzz_seconds=BUDGET_S)
    outcome = run_suite(options, out=tmp_path, patterns=["fuzz.positive"])
    assert outcome.report is not None and outcome.folder is not None, outcome.line
    check = outcome.report["checks"][0]
    assert check["status"] == "passed", check
    assert check["details"]["operations_tested"] >= 15 and check["details"]["test_cases"] > 100
    assert (outcome.folder / "fuzz/positive/junit.xml").is_file()


def test_a_server_that_accepts_invalid_runs_fails_the_negative_phase(
    reference_server: RunningServer, tmp_path: Path
) -> None:
    with TamperingProxy(reference_server.url, AcceptsInvalidRuns()) as proxy:
        options = Options(base_url=proxy.url, main_request={"steps": 40}, fuzz_seconds=BUDGET_S)
        outcome = run_suite(options, out=tmp_path, patterns=["fuzz.negative"])
    assert outcome.report is not None and outcome.folder is not None, outcome.line
    check = outcome.report["checks"][0]
    assert check["status"] == "failed" and "POST /api/training/runs" in check["message"], check
    assert "fuzz/negative/junit.xml" in check["evidence"]
